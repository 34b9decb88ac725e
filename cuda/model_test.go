package cuda

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/kdnative/kdnative/kd/optim"
	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// The model-level tolerances are looser than one op's 1e-5: cuBLAS and the
// CPU GEMM sum in different orders, and two layers of forward and backward
// compound those float32 roundings.
const (
	modelFwdTol  = 2e-5
	modelGradTol = 1e-4
)

func fixtureDir(name string) string {
	return filepath.Join("..", "model", "testdata", "fixtures", name)
}

// randomBatch is B rows of T random tokens with next-token targets, the
// first target of each row ignored.
func randomBatch(r *rand.Rand, B, T, vocab int) model.Batch {
	b := model.Batch{B: B, T: T, IDs: make([]int32, B*T), Targets: make([]int32, B*T)}
	for i := range b.IDs {
		b.IDs[i] = int32(r.IntN(vocab))
		b.Targets[i] = int32(r.IntN(vocab))
	}
	for row := range B {
		b.Targets[row*T] = kdrt.IgnoreIndex
	}
	return b
}

// TestModelMatchesCPU loads each architecture's fixture (Llama with GQA,
// tied Llama, Qwen2 with q/k/v biases, Mistral with a sliding window, GPT-2
// with LayerNorm and GELU) on both backends and compares the loss, the
// logits and every parameter's gradient after one forward and backward.
func TestModelMatchesCPU(t *testing.T) {
	g := gpuOrSkip(t)
	for _, name := range []string{"llama_gqa", "llama_tied", "qwen2_bias", "mistral_window", "gpt2"} {
		t.Run(name, func(t *testing.T) {
			mc, err := model.LoadDir(fixtureDir(name), cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			mg, err := model.LoadDir(fixtureDir(name), g)
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(uint64(len(name)), 7))
			batch := randomBatch(r, 2, 13, mc.Config.Vocab)
			lc, err := mc.Forward(batch)
			if err != nil {
				t.Fatal(err)
			}
			lg, err := mg.Forward(batch)
			if err != nil {
				t.Fatal(err)
			}
			if e := math.Abs(lg-lc) / math.Abs(lc); e > modelFwdTol {
				t.Errorf("loss: GPU %.8f, CPU %.8f (relative error %.2g)", lg, lc, e)
			}
			compare(t, "logits", mc.Backend(), mc.Logits(), g, mg.Logits(), modelFwdTol)
			for _, m := range []*model.Model{mc, mg} {
				if err := m.ZeroGrad(); err != nil {
					t.Fatal(err)
				}
				if err := m.Backward(); err != nil {
					t.Fatal(err)
				}
			}
			pc, pg := mc.Params(), mg.Params()
			for i := range pc {
				compare(t, "grad of "+pc[i].Name, mc.Backend(), pc[i].G, g, pg[i].G, modelGradTol)
			}
		})
	}
}

// compare checks a GPU tensor against a CPU one by relative L2 error.
func compare(t *testing.T, what string, cb kdrt.Backend, c *kdrt.Tensor, g *Backend, x *kdrt.Tensor, tol float64) {
	t.Helper()
	if err := g.Sync(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	want, got := values(t, cb, c), values(t, g, x)
	if e, i := relErr(got, want); e > tol || math.IsNaN(e) {
		t.Errorf("%s: relative error %.3g > %.0e; worst element %d: GPU %v, CPU %v", what, e, tol, i, got[i], want[i])
	}
}

// TestTrainingLossFalls trains the built-in tiny Llama on one fixed batch for
// 40 AdamW steps on the GPU and on the CPU from the same initial weights: the
// GPU's loss must fall by more than half, and follow the CPU's.
func TestTrainingLossFalls(t *testing.T) {
	g := gpuOrSkip(t)
	r := rand.New(rand.NewPCG(3, 4))
	cfg := model.BuiltinTiny()
	batch := randomBatch(r, 4, 32, cfg.Vocab)
	run := func(be kdrt.Backend) []float64 {
		m, err := model.New(cfg, be)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.InitRandom(11); err != nil {
			t.Fatal(err)
		}
		if err := m.ZeroGrad(); err != nil {
			t.Fatal(err)
		}
		var slots []optim.Slot
		for _, p := range m.Params() {
			slots = append(slots, optim.Slot{Name: p.Name, W: p.W, G: p.G, Decay: !p.NoDecay})
		}
		opt, err := optim.NewAdamW(be, slots, optim.DefaultAdamW)
		if err != nil {
			t.Fatal(err)
		}
		var losses []float64
		for range 40 {
			if err := m.ZeroGrad(); err != nil {
				t.Fatal(err)
			}
			l, err := m.Forward(batch)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Backward(); err != nil {
				t.Fatal(err)
			}
			if _, err := opt.Step(3e-3); err != nil {
				t.Fatal(err)
			}
			losses = append(losses, l)
		}
		return losses
	}
	lg, lc := run(g), run(cpu.New())
	first, last := lg[0], lg[len(lg)-1]
	t.Logf("GPU loss %.4f → %.4f; CPU %.4f → %.4f", first, last, lc[0], lc[len(lc)-1])
	if !(last < first/2) {
		t.Errorf("GPU training loss went from %.4f to %.4f: it did not fall by half", first, last)
	}
	for i := range lg {
		if e := math.Abs(lg[i]-lc[i]) / lc[i]; e > 1e-3 {
			t.Errorf("step %d: GPU loss %.6f, CPU %.6f (relative difference %.2g)", i, lg[i], lc[i], e)
			break
		}
	}
}
