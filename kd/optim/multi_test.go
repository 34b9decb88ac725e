package optim_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kdnative/kdnative/kd/optim"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
	"github.com/kdnative/kdnative/runtime/half"
)

func tensorOf(t *testing.T, be kdrt.Backend, name string, dt kdrt.DType, vals []float32, shape ...int) *kdrt.Tensor {
	t.Helper()
	x, err := be.Alloc(name, dt, shape...)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Upload(x, vals); err != nil {
		t.Fatal(err)
	}
	return x
}

func download(t *testing.T, be kdrt.Backend, x *kdrt.Tensor) []float32 {
	t.Helper()
	v := make([]float32, x.Numel())
	if err := be.Download(x, v); err != nil {
		t.Fatal(err)
	}
	return v
}

func randVals(r *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * scale)
	}
	return v
}

// TestStepMatchesPerTensor: the multi-tensor step (norm, clip factor and
// update on the device) gives bit for bit what the per-tensor path gives:
// the norm summed on the host, the gradients scaled as
// torch.nn.utils.clip_grad_norm_ scales them, then runtime's AdamW op per
// parameter (which TestAdamWMatchesPyTorch ties to torch.optim.AdamW) — with
// clipping active, decay on some slots only, over several steps.
func TestStepMatchesPerTensor(t *testing.T) {
	be := cpu.New()
	r := rand.New(rand.NewPCG(1, 2))
	shapes := [][]int{{7, 5}, {13}, {2, 3, 4}, {1}}
	cfg := optim.AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, MaxGradNorm: 0.5}
	var slots []optim.Slot
	var refW, refG, refM, refV []*kdrt.Tensor
	for i, sh := range shapes {
		n := kdrt.Numel(sh)
		w := randVals(r, n, 1)
		slots = append(slots, optim.Slot{Name: fmt.Sprint(i), W: tensorOf(t, be, "w", kdrt.F32, w, sh...),
			G: tensorOf(t, be, "g", kdrt.F32, make([]float32, n), sh...), Decay: i%2 == 0})
		refW = append(refW, tensorOf(t, be, "rw", kdrt.F32, w, sh...))
		refG = append(refG, tensorOf(t, be, "rg", kdrt.F32, make([]float32, n), sh...))
		refM = append(refM, tensorOf(t, be, "rm", kdrt.F32, make([]float32, n), sh...))
		refV = append(refV, tensorOf(t, be, "rv", kdrt.F32, make([]float32, n), sh...))
	}
	opt, err := optim.NewAdamW(be, slots, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for step := 1; step <= 4; step++ {
		for i, s := range slots {
			g := randVals(r, s.G.Numel(), 0.3)
			be.Upload(s.G, g)
			be.Upload(refG[i], g)
		}
		lr := 1e-2 / float64(step)
		norm, err := opt.Step(lr)
		if err != nil {
			t.Fatal(err)
		}
		ss, _ := be.SumSquares(refG...)
		want := math.Sqrt(ss)
		if float32(norm) != float32(want) {
			t.Fatalf("step %d: norm %v, host %v", step, norm, want)
		}
		if c := cfg.MaxGradNorm / (want + 1e-6); c < 1 {
			for _, g := range refG {
				be.Scale(g, float32(c))
			}
		} else {
			t.Fatalf("step %d: norm %g does not clip; the test wants clipping", step, want)
		}
		for i, s := range slots {
			wd := 0.0
			if s.Decay {
				wd = cfg.WeightDecay
			}
			be.AdamW(refW[i], refG[i], refM[i], refV[i], kdrt.AdamWParams{LR: float32(lr), Beta1: 0.9, Beta2: 0.95,
				Eps: 1e-8, WeightDecay: float32(wd), Step: step})
		}
	}
	m, v := opt.Moments()
	for i, s := range slots {
		for _, c := range []struct {
			what      string
			got, want *kdrt.Tensor
		}{{"param", s.W, refW[i]}, {"m", m[i], refM[i]}, {"v", v[i], refV[i]}} {
			got, want := download(t, be, c.got), download(t, be, c.want)
			for j := range want {
				if got[j] != want[j] {
					t.Fatalf("slot %d %s[%d]: multi-tensor %v, per-tensor %v", i, c.what, j, got[j], want[j])
				}
			}
		}
	}
}

// TestMasterWeights: with BF16 weights and an F32 master, an update far
// below a bf16 ulp moves the master and leaves the BF16 copy where it was
// (which equals the master rounded); enough such steps move the copy too,
// as the master's accumulated change crosses half an ulp. Without the
// master the bf16 weights could never move.
func TestMasterWeights(t *testing.T) {
	be := cpu.New()
	const n = 64
	init := make([]float32, n)
	for i := range init {
		init[i] = 1 + float32(i)/n // in [1, 2): a bf16 ulp is 2⁻⁷
	}
	master := tensorOf(t, be, "master", kdrt.F32, init, n)
	w := tensorOf(t, be, "w", kdrt.BF16, init, n)
	grad := make([]float32, n)
	for i := range grad {
		grad[i] = 1 // Adam's first step moves every element by lr
	}
	g := tensorOf(t, be, "g", kdrt.F32, grad, n)
	opt, err := optim.NewAdamW(be, []optim.Slot{{Name: "w", W: w, G: g, Master: master}},
		optim.AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8})
	if err != nil {
		t.Fatal(err)
	}
	const lr = 1e-4 // 1/78 of an ulp at 1
	wBefore := download(t, be, w)
	if _, err := opt.Step(lr); err != nil {
		t.Fatal(err)
	}
	mv, wv := download(t, be, master), download(t, be, w)
	for i := range init {
		if !(mv[i] < init[i]) || math.Abs(float64(init[i]-mv[i])-lr) > 1e-6 {
			t.Fatalf("master[%d] went from %v to %v; want a step of lr = %g down", i, init[i], mv[i], lr)
		}
		if wv[i] != wBefore[i] {
			t.Fatalf("bf16 weight %d moved from %v to %v on a step of 1/78 ulp", i, wBefore[i], wv[i])
		}
		if wv[i] != half.BF16ToF32(half.F32ToBF16(mv[i])) {
			t.Fatalf("bf16 weight %d is %v, not the master %v rounded", i, wv[i], mv[i])
		}
	}
	for range 99 { // 100 steps of lr: 1.3 ulp, past half an ulp
		if _, err := opt.Step(lr); err != nil {
			t.Fatal(err)
		}
	}
	moved := 0
	for i, v := range download(t, be, w) {
		if v != wBefore[i] {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("after 100 steps of 1/78 ulp no bf16 weight moved: the master's updates are lost")
	}
}

// TestNonFiniteGradient: a NaN in a gradient stops the step with
// ErrNonFinite before anything changes (weights, masters, moments, the
// step count).
func TestNonFiniteGradient(t *testing.T) {
	be := cpu.New()
	w := tensorOf(t, be, "w", kdrt.F32, []float32{1, 2, 3}, 3)
	g := tensorOf(t, be, "g", kdrt.F32, []float32{0.1, float32(math.NaN()), 0.3}, 3)
	opt, err := optim.NewAdamW(be, []optim.Slot{{Name: "w", W: w, G: g, Decay: true}}, optim.DefaultAdamW)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := opt.Step(1e-2); !errors.Is(err, optim.ErrNonFinite) {
		t.Fatalf("Step with a NaN gradient: %v, want ErrNonFinite", err)
	}
	if got := download(t, be, w); got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Errorf("weights changed: %v", got)
	}
	m, _ := opt.Moments()
	if got := download(t, be, m[0]); got[0] != 0 {
		t.Errorf("moments changed: %v", got)
	}
	if opt.StepCount() != 0 {
		t.Errorf("step count %d after a refused step", opt.StepCount())
	}
}

// TestBF16NeedsMaster: a BF16 weight without a master copy is refused.
func TestBF16NeedsMaster(t *testing.T) {
	be := cpu.New()
	w := tensorOf(t, be, "w", kdrt.BF16, []float32{1}, 1)
	g := tensorOf(t, be, "g", kdrt.F32, []float32{1}, 1)
	if _, err := optim.NewAdamW(be, []optim.Slot{{Name: "layer.w", W: w, G: g}}, optim.DefaultAdamW); err == nil {
		t.Fatal("a BF16 weight without a master was accepted")
	}
}
