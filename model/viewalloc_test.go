package model

import (
	"math/rand/v2"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestShorterBatchesReuseActivations: after a batch of B·T tokens, batches
// of fewer tokens (other B, other T, Llama and GPT-2, F32 and BF16 storage)
// allocate nothing — their activations, Forward's logits and the inference
// forward's buffers are views of the first elements of the same buffers —
// and give the loss, every gradient and the inference forward's output bit
// for bit as a fresh model does, so nothing reads what an earlier, larger
// batch left in the buffers. A batch of more tokens gets larger buffers.
func TestShorterBatchesReuseActivations(t *testing.T) {
	for _, dt := range []kdrt.DType{kdrt.F32, kdrt.BF16} {
		for _, cfg := range []*Config{BuiltinTiny(), gpt2Config(t)} {
			checkShorterBatchesReuse(t, cfg, dt)
		}
	}
}

func checkShorterBatchesReuse(t *testing.T, cfg *Config, dt kdrt.DType) {
	t.Helper()
	newModel := func(be kdrt.Backend) *Model {
		m, err := New(cfg, be, Storage(dt), MasterWeights())
		if err != nil {
			t.Fatal(err)
		}
		if err := m.InitRandom(7); err != nil {
			t.Fatal(err)
		}
		return m
	}
	rng := rand.New(rand.NewPCG(1, 2))
	batch := func(B, T int) Batch {
		b := Batch{B: B, T: T, IDs: make([]int32, B*T), Targets: make([]int32, B*T)}
		for i := range b.IDs {
			b.IDs[i], b.Targets[i] = int32(rng.IntN(cfg.Vocab)), int32(rng.IntN(cfg.Vocab))
		}
		b.Targets[0] = kdrt.IgnoreIndex
		return b
	}
	step := func(m *Model, b Batch) (float64, [][]float32) {
		if err := m.ZeroGrad(); err != nil {
			t.Fatal(err)
		}
		l, err := m.Forward(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(); err != nil {
			t.Fatal(err)
		}
		var gs [][]float32
		for _, p := range m.Params() {
			g := make([]float32, p.G.Numel())
			if err := m.be.Download(p.G, g); err != nil {
				t.Fatal(err)
			}
			gs = append(gs, g)
		}
		// The inference forward of the same batch, and its output.
		h, err := m.InferHidden(b)
		if err != nil {
			t.Fatal(err)
		}
		hv := make([]float32, h.Numel())
		if err := m.be.Download(h, hv); err != nil {
			t.Fatal(err)
		}
		return l, append(gs, hv)
	}
	be := &countingBackend{Backend: cpu.New(), free: -1}
	m := newModel(be)
	step(m, batch(2, 16))
	held, capN := be.allocated, m.acts.capN
	for _, bt := range [][2]int{{2, 9}, {1, 16}, {4, 8}, {3, 5}, {2, 16}} {
		b := batch(bt[0], bt[1])
		l, gs := step(m, b)
		if be.allocated != held || m.acts.capN != capN || m.logits.capN != capN || m.inf.capN != capN {
			t.Errorf("%s %s B=%d T=%d: %d bytes held (from %d), capacity %d/%d/%d tokens: a shorter batch reallocated",
				cfg.ModelType, dt, bt[0], bt[1], be.allocated, held, m.acts.capN, m.logits.capN, m.inf.capN)
		}
		if h := m.acts.layers[0].in; h.Rows() != bt[0]*bt[1] {
			t.Errorf("%s B=%d T=%d: hidden state %v", cfg.ModelType, bt[0], bt[1], h)
		}
		lf, gf := step(newModel(cpu.New()), b)
		if l != lf {
			t.Errorf("%s %s B=%d T=%d: loss %v reusing buffers, %v fresh", cfg.ModelType, dt, bt[0], bt[1], l, lf)
		}
		for i := range gs {
			what := "the inference forward's output"
			if i < len(m.Params()) {
				what = "the gradient of " + m.Params()[i].Name
			}
			for j := range gs[i] {
				if gs[i][j] != gf[i][j] {
					t.Fatalf("%s %s B=%d T=%d: %s[%d] is %v reusing buffers, %v fresh", cfg.ModelType, dt, bt[0], bt[1], what, j, gs[i][j], gf[i][j])
				}
			}
		}
	}
	step(m, batch(3, 16))
	if m.acts.capN != 48 || m.logits.capN != 48 || m.inf.capN != 48 || be.allocated <= held {
		t.Errorf("%s %s: after a batch of 48 tokens the capacity is %d/%d/%d tokens, %d bytes held (from %d)",
			cfg.ModelType, dt, m.acts.capN, m.logits.capN, m.inf.capN, be.allocated, held)
	}
}
