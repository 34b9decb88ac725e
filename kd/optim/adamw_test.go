package optim_test

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/optim"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/safetensors"
	"github.com/kdnative/kdnative/runtime/cpu"
)

func relErr(got, want []float32) float64 {
	var d, w float64
	for i := range want {
		e := float64(got[i]) - float64(want[i])
		d += e * e
		w += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(d) / math.Max(math.Sqrt(w), 1e-30)
}

// adamwFixture is one fixture case's AdamW record: three steps of
// torch.optim.AdamW with clip_grad_norm_ on the fixture batch.
type adamwFixture struct {
	fx    *safetensors.File
	dir   string
	batch model.Batch
	cfg   optim.AdamWConfig
}

func openAdamWFixture(t *testing.T, name string) *adamwFixture {
	t.Helper()
	dir := filepath.Join("..", "..", "model", "testdata", "fixtures", name)
	fx, err := safetensors.Open(filepath.Join(dir, "fixture.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fx.Close() })
	a := &adamwFixture{fx: fx, dir: dir}
	ids, _ := fx.Int32("input_ids")
	targets, _ := fx.Int32("targets")
	info, _ := fx.Info("input_ids")
	a.batch = model.Batch{B: info.Shape[0], T: info.Shape[1], IDs: ids, Targets: targets}
	a.cfg = optim.AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, MaxGradNorm: float64(a.get(t, "adamw.max_norm")[0])}
	return a
}

func (a *adamwFixture) get(t *testing.T, name string) []float32 {
	t.Helper()
	v, err := a.fx.Float32(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// tensors returns the fixture's tensors whose names start with prefix, keyed
// by the rest of the name.
func (a *adamwFixture) tensors(t *testing.T, prefix string) map[string][]float32 {
	out := map[string][]float32{}
	for _, n := range a.fx.Names() {
		if strings.HasPrefix(n, prefix) {
			out[strings.TrimPrefix(n, prefix)] = a.get(t, n)
		}
	}
	return out
}

func (a *adamwFixture) setup(t *testing.T) (*model.Model, *optim.AdamW) {
	t.Helper()
	be := cpu.New()
	m, err := model.LoadDir(a.dir, be)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.ZeroGrad(); err != nil {
		t.Fatal(err)
	}
	var slots []optim.Slot
	for _, p := range m.Params() {
		// The fixture passes model.parameters() to AdamW: every parameter
		// decays, norms and biases included.
		slots = append(slots, optim.Slot{Name: p.Name, W: p.W, G: p.G, Decay: true})
	}
	opt, err := optim.NewAdamW(be, slots, a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m, opt
}

var adamwCases = []string{"llama_gqa", "llama_tied", "qwen2_bias", "mistral_window", "gpt2"}

// TestAdamWMatchesPyTorch drives the optimizer with exactly PyTorch's
// gradients of each step and compares the clipping norm and every parameter
// after three steps with torch.optim.AdamW's: the optimizer alone, to fp32
// tolerance.
func TestAdamWMatchesPyTorch(t *testing.T) {
	for _, name := range adamwCases {
		t.Run(name, func(t *testing.T) {
			a := openAdamWFixture(t, name)
			m, opt := a.setup(t)
			wantNorm := a.get(t, "adamw.grad_norm")
			for step := range 3 {
				prefix := "grad."
				if step > 0 {
					prefix = fmt.Sprintf("adamw.grad%d.", step)
				}
				if err := m.SetGrads(a.tensors(t, prefix)); err != nil {
					t.Fatal(err)
				}
				norm, err := opt.Step(1e-2)
				if err != nil {
					t.Fatal(err)
				}
				if e := math.Abs(norm-float64(wantNorm[step])) / float64(wantNorm[step]); e > 1e-6 {
					t.Errorf("step %d: gradient norm %.8f, PyTorch %.8f", step+1, norm, wantNorm[step])
				}
			}
			after, _, err := m.ExportTensors(false)
			if err != nil {
				t.Fatal(err)
			}
			want := a.tensors(t, "after.")
			if len(want) != len(after) {
				t.Fatalf("fixture has %d parameters after the steps, model %d", len(want), len(after))
			}
			for n, w := range want {
				if e := relErr(after[n], w); e > 1e-6 {
					t.Errorf("%s after 3 AdamW steps: relative error %.2g", n, e)
				}
			}
		})
	}
}

// TestTrainingStepsMatchPyTorch runs the whole loop — forward, backward,
// clipping, AdamW — three times from the fixture's weights and compares the
// losses and gradient norms with PyTorch's. The parameters themselves are
// compared loosely: Adam divides each gradient element by its own magnitude,
// so an element whose gradient is at the fp32 noise floor (the key bias, whose
// exact gradient is zero since a softmax ignores a constant shift, and a few
// others) moves by up to lr on noise alone, in both implementations.
func TestTrainingStepsMatchPyTorch(t *testing.T) {
	for _, name := range adamwCases {
		t.Run(name, func(t *testing.T) {
			a := openAdamWFixture(t, name)
			m, opt := a.setup(t)
			wantLoss, wantNorm := a.get(t, "adamw.loss"), a.get(t, "adamw.grad_norm")
			for step := range 3 {
				if err := m.ZeroGrad(); err != nil {
					t.Fatal(err)
				}
				loss, err := m.Forward(a.batch)
				if err != nil {
					t.Fatal(err)
				}
				if err := m.Backward(); err != nil {
					t.Fatal(err)
				}
				norm, err := opt.Step(1e-2)
				if err != nil {
					t.Fatal(err)
				}
				if e := math.Abs(loss-float64(wantLoss[step])) / float64(wantLoss[step]); e > 1e-5 {
					t.Errorf("step %d: loss %.7f, PyTorch %.7f", step+1, loss, wantLoss[step])
				}
				if e := math.Abs(norm-float64(wantNorm[step])) / float64(wantNorm[step]); e > 1e-4 {
					t.Errorf("step %d: gradient norm %.7f, PyTorch %.7f", step+1, norm, wantNorm[step])
				}
			}
			after, _, err := m.ExportTensors(false)
			if err != nil {
				t.Fatal(err)
			}
			var all, ref []float32
			for n, w := range a.tensors(t, "after.") {
				all, ref = append(all, after[n]...), append(ref, w...)
			}
			if e := relErr(all, ref); e > 1e-3 {
				t.Errorf("all parameters after 3 steps: relative error %.2g", e)
			}
		})
	}
}

func TestAdamWRejectsBadConfig(t *testing.T) {
	for _, c := range []optim.AdamWConfig{
		{Beta1: 1, Beta2: 0.9, Eps: 1e-8},
		{Beta1: 0.9, Beta2: -0.1, Eps: 1e-8},
		{Beta1: 0.9, Beta2: 0.9, Eps: 0},
		{Beta1: 0.9, Beta2: 0.9, Eps: 1e-8, WeightDecay: math.NaN()},
		{Beta1: 0.9, Beta2: 0.9, Eps: 1e-8, MaxGradNorm: -1},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
