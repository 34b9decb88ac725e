package loss_test

import (
	"math"
	"testing"

	"github.com/kdnative/kdnative/kd/loss"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/backendtest"
	"github.com/kdnative/kdnative/runtime/cpu"
	"github.com/kdnative/kdnative/runtime/half"
)

// bf16Problem is a problem whose inputs are bf16 values, so that F32 and
// BF16 tensors hold exactly the same numbers.
func bf16Problem(seed uint64, N, C, V int) *problem {
	p := newProblem(seed, N, C, V, C, V)
	for _, x := range [][]float64{p.h, p.w, p.th, p.tw} {
		for i, v := range x {
			x[i] = float64(half.BF16ToF32(half.F32ToBF16(float32(v))))
		}
	}
	return p
}

func tensorDT(t *testing.T, be *cpu.Backend, name string, dt kdrt.DType, x []float64, shape ...int) *kdrt.Tensor {
	t.Helper()
	v := make([]float32, len(x))
	for i := range x {
		v[i] = float32(x[i])
	}
	tt, err := be.Alloc(name, dt, shape...)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Upload(tt, v); err != nil {
		t.Fatal(err)
	}
	return tt
}

func values(t *testing.T, be *cpu.Backend, x *kdrt.Tensor) []float64 {
	v := make([]float32, x.Numel())
	if err := be.Download(x, v); err != nil {
		t.Fatal(err)
	}
	return to64(v)
}

// TestFusedLossesBF16: every fused loss on BF16 hidden states and heads
// against the same loss on F32 tensors holding the same values. The loss
// must agree to float32 rounding — the logits are F32 straight from the
// product's accumulator, never rounded to bf16 (Liger-Kernel#1432 rounded
// them and lost 4–23% of the gradient) — and the gradients within what
// rounding the logits' gradient (into the bf16 product) and the stored
// dHidden costs: backendtest.Tol(2) for dHidden, Tol(1) for the F32 head
// gradient.
func TestFusedLossesBF16(t *testing.T) {
	const N, C, V = 9, 16, 37
	p := bf16Problem(7, N, C, V)
	targets := make([]int32, N)
	for i := range targets {
		targets[i] = int32((i * 5) % V)
	}
	targets[2] = kdrt.IgnoreIndex
	type result struct {
		loss   float64
		dh, dw []float64
	}
	losses := map[string]func(be *cpu.Backend, h *kdrt.Tensor, head loss.Head, dh, th, tw *kdrt.Tensor) (float64, error){
		"cross-entropy": func(be *cpu.Backend, h *kdrt.Tensor, head loss.Head, dh, _, _ *kdrt.Tensor) (float64, error) {
			l, _, err := loss.CrossEntropy(be, h, head, dh, targets, 0.5, loss.Options{ChunkRows: 4})
			return l, err
		},
		"forward KL": func(be *cpu.Backend, h *kdrt.Tensor, head loss.Head, dh, th, tw *kdrt.Tensor) (float64, error) {
			r, err := loss.KD(be, h, head, dh, loss.TeacherHidden{Hidden: th, Head: tw}, p.mask,
				loss.KDConfig{Divergence: kdrt.ForwardKL, Temperature: 2}, 1, loss.Options{ChunkRows: 4})
			return r.Loss, err
		},
		"JSD": func(be *cpu.Backend, h *kdrt.Tensor, head loss.Head, dh, th, tw *kdrt.Tensor) (float64, error) {
			r, err := loss.KD(be, h, head, dh, loss.TeacherHidden{Hidden: th, Head: tw}, p.mask,
				loss.KDConfig{Divergence: kdrt.JSD, Beta: 0.5, Temperature: 1}, 1, loss.Options{ChunkRows: 4})
			return r.Loss, err
		},
		"token log-probs backward": func(be *cpu.Backend, h *kdrt.Tensor, head loss.Head, dh, _, _ *kdrt.Tensor) (float64, error) {
			lp, err := loss.TokenLogProbs(be, h, head, targets, loss.Options{ChunkRows: 4})
			if err != nil {
				return 0, err
			}
			coef := make([]float64, N)
			var s float64
			for i := range coef {
				coef[i] = float64(i%3) - 1
				s += coef[i] * lp[i]
			}
			return s, loss.TokenLogProbsBackward(be, h, head, dh, targets, coef, loss.Options{ChunkRows: 4})
		},
	}
	for name, f := range losses {
		t.Run(name, func(t *testing.T) {
			run := func(dt kdrt.DType) result {
				be := cpu.New()
				h := tensorDT(t, be, "h", dt, p.h, N, C)
				head := loss.Head{W: tensorDT(t, be, "w", dt, p.w, V, C), G: zeros(t, be, "gw", V, C)}
				dh := tensorDT(t, be, "dh", dt, make([]float64, N*C), N, C)
				l, err := f(be, h, head, dh, tensorDT(t, be, "th", dt, p.th, N, C), tensorDT(t, be, "tw", dt, p.tw, V, C))
				if err != nil {
					t.Fatal(err)
				}
				return result{loss: l, dh: values(t, be, dh), dw: values(t, be, head.G)}
			}
			r32, r16 := run(kdrt.F32), run(kdrt.BF16)
			le := math.Abs(r16.loss-r32.loss) / math.Abs(r32.loss)
			he, we := relErr64(r16.dh, r32.dh), relErr64(r16.dw, r32.dw)
			t.Logf("loss %.2e, d hidden %.2e, d lm_head %.2e relative to F32", le, he, we)
			if le > 1e-6 {
				t.Errorf("BF16 loss %.9g, F32 loss %.9g: the logits were not computed in F32", r16.loss, r32.loss)
			}
			if he > backendtest.Tol(2) {
				t.Errorf("d hidden relative error %.3g above Tol(2) = %.3g", he, backendtest.Tol(2))
			}
			if we > backendtest.Tol(1) {
				t.Errorf("d lm_head relative error %.3g above Tol(1) = %.3g", we, backendtest.Tol(1))
			}
		})
	}
}

// TestRoundedLogitsWouldShow: the check above can fail. The forward KL of
// the same problem with the logits rounded to bf16 before the softmax (what
// Liger's fused JSD did) differs from the F32-logit loss by far more than
// the 1e-6 TestFusedLossesBF16 allows.
func TestRoundedLogitsWouldShow(t *testing.T) {
	const N, C, V = 9, 16, 37
	p := bf16Problem(7, N, C, V)
	s, te := logits64(p.h, p.w, N, C, V), logits64(p.th, p.tw, N, C, V)
	kl := func(round bool) float64 {
		var sum float64
		for n := range N {
			row := append([]float64(nil), s[n*V:(n+1)*V]...)
			if round {
				for i, v := range row {
					row[i] = float64(half.BF16ToF32(half.F32ToBF16(float32(v))))
				}
			}
			sum += div64(kdrt.ForwardKL, softmax64(te[n*V:(n+1)*V], 2), softmax64(row, 2), 0, 0)
		}
		return sum
	}
	exact, rounded := kl(false), kl(true)
	if d := math.Abs(rounded-exact) / exact; d < 1e-4 {
		t.Fatalf("rounding the logits to bf16 moved the loss only %.2g: the BF16 test could not see it", d)
	} else {
		t.Logf("rounding the logits to bf16 moves the loss by %.2g (the test allows 1e-6)", d)
	}
}

// TestFeatureLossBF16: feature and relation losses on BF16 hidden states
// compute in F32 (the hidden states widened exactly): the loss equals the
// F32 one, and the gradient added into a BF16 dStudent is the F32 one
// rounded once.
func TestFeatureLossBF16(t *testing.T) {
	const B, T, C = 2, 5, 8
	N := B * T
	p := bf16Problem(3, N, C, 3)
	mask := make([]float32, N)
	for i := range mask {
		mask[i] = float32(i % 2)
	}
	for _, kind := range []string{loss.FeatureMSE, loss.FeatureCosine, "relation"} {
		t.Run(kind, func(t *testing.T) {
			run := func(dt kdrt.DType) (float64, []float64) {
				be := cpu.New()
				s, te := tensorDT(t, be, "s", dt, p.h, N, C), tensorDT(t, be, "t", dt, p.th, N, C)
				ds := tensorDT(t, be, "ds", dt, make([]float64, N*C), N, C)
				var res loss.FeatureResult
				var err error
				if kind == "relation" {
					res, err = loss.RelationLoss(be, s, ds, te, B, T, mask, 1)
				} else {
					res, err = loss.FeatureLoss(be, s, ds, te, nil, mask, loss.FeatureConfig{Loss: kind}, 1)
				}
				if err != nil {
					t.Fatal(err)
				}
				return res.Loss, values(t, be, ds)
			}
			l32, g32 := run(kdrt.F32)
			l16, g16 := run(kdrt.BF16)
			if math.Abs(l16-l32) > 1e-6*math.Abs(l32) {
				t.Errorf("loss %.9g on BF16, %.9g on F32", l16, l32)
			}
			if e := relErr64(g16, g32); e > backendtest.Tol(1) {
				t.Errorf("gradient relative error %.3g above Tol(1)", e)
			}
		})
	}
}

func relErr64(got, want []float64) float64 {
	var d, w float64
	for i := range want {
		d += (got[i] - want[i]) * (got[i] - want[i])
		w += want[i] * want[i]
	}
	if w == 0 {
		return math.Sqrt(d)
	}
	return math.Sqrt(d / w)
}
