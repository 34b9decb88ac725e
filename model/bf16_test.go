package model_test

import (
	"math"
	"testing"

	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
	"github.com/kdnative/kdnative/runtime/half"
)

// TestInferMatchesTrainingForward: the inference forward (one layer's
// buffers, reused) gives the training forward's output and hidden states
// bit for bit, for every fixture architecture (GQA, tied, biases, a sliding
// window, GPT-2's LayerNorm and learned positions).
func TestInferMatchesTrainingForward(t *testing.T) {
	for _, name := range fixtureCases {
		t.Run(name, func(t *testing.T) {
			fx := openFixture(t, name)
			m, err := model.LoadDir(fx.dir, cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			b := fx.batch(t)
			L := m.Config.Layers
			h, err := m.ForwardHidden(b)
			if err != nil {
				t.Fatal(err)
			}
			want := [][]float32{}
			for i := 0; i <= L; i++ {
				hi, _ := m.Hidden(i)
				want = append(want, download(t, hi))
			}
			wantOut := download(t, h)
			keep := []int{0, L - 1, L}
			got, err := m.InferHidden(b, keep...)
			if err != nil {
				t.Fatal(err)
			}
			if !equal(download(t, got), wantOut) {
				t.Errorf("InferHidden's output differs from ForwardHidden's")
			}
			for _, i := range keep {
				hi, err := m.Hidden(i)
				if err != nil {
					t.Fatal(err)
				}
				if !equal(download(t, hi), want[i]) {
					t.Errorf("kept hidden state %d differs from the training forward's", i)
				}
			}
			if _, err := m.Hidden(1); L > 2 && err == nil {
				t.Errorf("Hidden(1) after an inference forward that did not keep it: no error")
			}
			if err := m.BackwardHidden(nil); err == nil {
				t.Errorf("BackwardHidden after an inference forward: no error")
			}
		})
	}
}

func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !(math.IsNaN(float64(a[i])) && math.IsNaN(float64(b[i]))) {
			return false
		}
	}
	return true
}

// TestInferenceKeepsNoTrainingState: a model used only for inference (a
// teacher) allocates no gradients, no training activations and no logits:
// its memory is its weights and one layer's buffers, the same for 2 layers
// as for 8.
func TestInferenceKeepsNoTrainingState(t *testing.T) {
	var bufs []int
	for _, L := range []int{2, 8} {
		cfg := model.BuiltinTiny()
		cfg.Layers = L
		cfg.LayerWindow = make([]int, L)
		be := cpu.New()
		m, err := model.New(cfg, be, model.Storage(kdrt.BF16))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.InitRandom(1); err != nil {
			t.Fatal(err)
		}
		weights := m.TensorBytes()
		ids := make([]int32, 2*16)
		for i := range ids {
			ids[i] = int32(i % cfg.Vocab)
		}
		if _, err := m.InferHidden(model.Batch{B: 2, T: 16, IDs: ids}); err != nil {
			t.Fatal(err)
		}
		for _, p := range m.Params() {
			if p.G != nil || p.Master != nil {
				t.Fatalf("%d layers: parameter %s has a gradient or a master copy after inference", L, p.Name)
			}
		}
		bufs = append(bufs, m.TensorBytes()-weights)
	}
	if bufs[0] != bufs[1] {
		t.Errorf("the inference forward's buffers take %d bytes at 2 layers and %d at 8: they should not grow with depth", bufs[0], bufs[1])
	}
}

// TestBF16MatchesPyTorch: each fixture model stored in BF16 on the CPU
// (weights rounded from the fixture's float32, activations rounded as
// stored, float32 arithmetic) against PyTorch's float32 loss, logits and
// gradients, within what bf16 storage costs: 2⁻⁸ relative per rounding,
// a few roundings deep through these two-layer models (the errors measured are a third of these bounds).
func TestBF16MatchesPyTorch(t *testing.T) {
	const lossTol, logitTol, gradTol = 2e-3, 2e-2, 3e-2
	for _, name := range fixtureCases {
		t.Run(name, func(t *testing.T) {
			fx := openFixture(t, name)
			m, err := model.LoadDir(fx.dir, cpu.New(), model.Storage(kdrt.BF16), model.MasterWeights())
			if err != nil {
				t.Fatal(err)
			}
			b := fx.batch(t)
			loss, err := m.Forward(b)
			if err != nil {
				t.Fatal(err)
			}
			wantLoss := float64(fx.f32(t, "loss")[0])
			le := math.Abs(loss-wantLoss) / wantLoss
			lg := relErr(download(t, m.Logits()), fx.f32(t, "logits"))
			if err := m.ZeroGrad(); err != nil {
				t.Fatal(err)
			}
			if err := m.Backward(); err != nil {
				t.Fatal(err)
			}
			grads, _, err := m.ExportTensors(true)
			if err != nil {
				t.Fatal(err)
			}
			var all, ref []float32
			for n, g := range grads {
				all, ref = append(all, g...), append(ref, fx.f32(t, "grad."+n)...)
			}
			ge := relErr(all, ref)
			t.Logf("bf16: loss %.2e, logits %.2e, gradients %.2e relative error", le, lg, ge)
			if le > lossTol || lg > logitTol || ge > gradTol {
				t.Errorf("bf16 loss %.3g (tolerance %g), logits %.3g (%g), gradients %.3g (%g) relative error", le, lossTol, lg, logitTol, ge, gradTol)
			}
		})
	}
}

// TestMasterWeightsLoadExactly: a BF16 model with master weights keeps the
// checkpoint's float32 values in its masters (not their bf16 rounding), its
// BF16 weights are those rounded, and it exports (and so saves) the masters.
func TestMasterWeightsLoadExactly(t *testing.T) {
	fx := openFixture(t, "qwen2_bias")
	f32m, err := model.LoadDir(fx.dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := f32m.ExportTensors(false)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.LoadDir(fx.dir, cpu.New(), model.Storage(kdrt.BF16), model.MasterWeights())
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := m.ExportTensors(false)
	if err != nil {
		t.Fatal(err)
	}
	rounded := 0
	for n, w := range want {
		if !equal(got[n], w) {
			t.Fatalf("%s: the exported master differs from the checkpoint", n)
		}
		p := m.Param(n)
		if p == nil || p.W.DType != kdrt.BF16 || p.Master == nil {
			t.Fatalf("%s: want a BF16 weight with a master, got %v", n, p)
		}
		wv := download(t, p.W)
		for i, v := range w {
			if r := half.BF16ToF32(half.F32ToBF16(v)); wv[i] != r {
				t.Fatalf("%s[%d]: BF16 weight %g, want %g rounded = %g", n, i, wv[i], v, r)
			} else if r != v {
				rounded++
			}
		}
	}
	if rounded == 0 {
		t.Fatal("no weight needed rounding: the test shows nothing")
	}
}

// TestGenerateBF16: generation with a BF16 model (cache and activations in
// BF16, logits F32) gives each token a log-probability close to the float32
// model's for the same tokens.
func TestGenerateBF16(t *testing.T) {
	fx := openFixture(t, "llama_gqa")
	m32, err := model.LoadDir(fx.dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	m16, err := model.LoadDir(fx.dir, cpu.New(), model.Storage(kdrt.BF16))
	if err != nil {
		t.Fatal(err)
	}
	prompts := [][]int32{{1, 5, 9, 2}, {7, 3}}
	p := model.GenerateParams{MaxTokens: 6}
	g16, err := m16.GenerateBatch(prompts, p)
	if err != nil {
		t.Fatal(err)
	}
	for r, g := range g16 {
		if len(g.Tokens) != p.MaxTokens {
			t.Fatalf("row %d: %d tokens, want %d", r, len(g.Tokens), p.MaxTokens)
		}
		// Score the bf16 model's tokens with the float32 model.
		seq := append(append([]int32(nil), prompts[r]...), g.Tokens...)
		h, err := m32.InferHidden(model.Batch{B: 1, T: len(seq), IDs: seq})
		if err != nil {
			t.Fatal(err)
		}
		be := m32.Backend()
		logits, _ := be.Alloc("logits", kdrt.F32, len(seq), m32.Config.Vocab)
		if err := m32.HeadLogits(logits, h); err != nil {
			t.Fatal(err)
		}
		lv := download(t, logits)
		V := m32.Config.Vocab
		for i, tok := range g.Tokens {
			pos := len(prompts[r]) + i - 1
			row := lv[pos*V : (pos+1)*V]
			mx := math.Inf(-1)
			for _, v := range row {
				mx = math.Max(mx, float64(v))
			}
			var s float64
			for _, v := range row {
				s += math.Exp(float64(v) - mx)
			}
			want := float64(row[tok]) - mx - math.Log(s)
			if d := math.Abs(float64(g.LogProbs[i]) - want); d > 0.05 {
				t.Errorf("row %d token %d: bf16 log-probability %.4f, float32 %.4f", r, i, g.LogProbs[i], want)
			}
		}
	}
}
