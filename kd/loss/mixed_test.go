package loss_test

import (
	"math"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/loss"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestSFTKDMixes checks α·CE + (1−α)·KD against the float64 references of
// both terms, for the loss and (by finite differences) the gradient.
func TestSFTKDMixes(t *testing.T) {
	const N, C, V = 6, 4, 9
	p := newProblem(11, N, C, V, C, V)
	targets := []int32{2, kdrt.IgnoreIndex, 8, 0, 4, kdrt.IgnoreIndex}
	for i, tg := range targets {
		p.mask[i] = 0
		if tg != kdrt.IgnoreIndex {
			p.mask[i] = 1
		}
	}
	cfg := loss.KDConfig{Divergence: kdrt.ReverseKL, Temperature: 2}
	ce := func() float64 {
		s := logits64(p.h, p.w, N, C, V)
		var sum float64
		for n, tg := range targets {
			if tg != kdrt.IgnoreIndex {
				sum -= math.Log(softmax64(s[n*V:(n+1)*V], 1)[tg])
			}
		}
		return sum / 4
	}
	for _, alpha := range []float64{0, 0.25, 1} {
		ref := func() float64 { return alpha*ce() + (1-alpha)*p.refKD(cfg) }
		be := cpu.New()
		head := loss.Head{W: tensor(t, be, "w", p.w, V, C), G: zeros(t, be, "gw", V, C)}
		dh := zeros(t, be, "dh", N, C)
		teacher := loss.TeacherHidden{Hidden: tensor(t, be, "th", p.th, N, C), Head: tensor(t, be, "tw", p.tw, V, C)}
		res, err := loss.SFTKD(be, tensor(t, be, "h", p.h, N, C), head, dh, targets, teacher, cfg, alpha, loss.Options{ChunkRows: 4})
		if err != nil {
			t.Fatal(err)
		}
		if want := ref(); math.Abs(res.Loss-want) > 1e-5*want {
			t.Fatalf("alpha %g: loss %g, reference %g", alpha, res.Loss, want)
		}
		if e := rel(cpu.Float32s(dh), fd(p.h, ref)); e > 1e-4 {
			t.Fatalf("alpha %g: d hidden relative error %.2g", alpha, e)
		}
		if e := rel(cpu.Float32s(head.G), fd(p.w, ref)); e > 1e-4 {
			t.Fatalf("alpha %g: d lm_head relative error %.2g", alpha, e)
		}
	}
	be := cpu.New()
	_, err := loss.SFTKD(be, tensor(t, be, "h", p.h, N, C), loss.Head{W: tensor(t, be, "w", p.w, V, C)}, nil, targets, nil, cfg, 1.5, loss.Options{})
	if err == nil || !strings.Contains(err.Error(), "alpha 1.5 must be in [0, 1]") {
		t.Fatalf("alpha 1.5: %v", err)
	}
}

// TestMemoryBudgetChoosesChunks: a budget too small for two rows gives
// one-row chunks with the same result as the plain computation.
func TestMemoryBudgetChoosesChunks(t *testing.T) {
	const N, C, V = 5, 3, 7
	p := newProblem(12, N, C, V, C, V)
	run := func(opt loss.Options) float64 {
		be := cpu.New()
		res, err := loss.KD(be, tensor(t, be, "h", p.h, N, C), loss.Head{W: tensor(t, be, "w", p.w, V, C)}, nil,
			loss.TeacherHidden{Hidden: tensor(t, be, "th", p.th, N, C), Head: tensor(t, be, "tw", p.tw, V, C)}, p.mask,
			loss.KDConfig{Divergence: kdrt.TVD, Temperature: 1}, 1, opt)
		if err != nil {
			t.Fatal(err)
		}
		return res.Loss
	}
	a, b := run(loss.Options{MemoryBudget: 1}), run(loss.Options{ChunkRows: N})
	if math.Abs(a-b) > 1e-6*b {
		t.Fatalf("one-row chunks %g, plain %g", a, b)
	}
}
