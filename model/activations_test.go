package model

import (
	"path/filepath"
	"strings"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// sizeBackend records what a model allocates without holding any memory, so
// that the activation plan of a full-size model can be measured on any
// machine. Only the calls New and prepare make are implemented.
type sizeBackend struct {
	kdrt.Backend
	bytes map[string]int // by tensor name
}

func (s *sizeBackend) Alloc(name string, dt kdrt.DType, shape ...int) (*kdrt.Tensor, error) {
	t := &kdrt.Tensor{Shape: append([]int(nil), shape...), DType: dt, Name: name}
	s.bytes[name] += t.Bytes()
	return t, nil
}
func (s *sizeBackend) Free(*kdrt.Tensor)                    {}
func (s *sizeBackend) Upload(*kdrt.Tensor, []float32) error { return nil }
func (s *sizeBackend) Slice(t *kdrt.Tensor, start, end int) *kdrt.Tensor {
	return &kdrt.Tensor{Shape: []int{end - start}, DType: t.DType, Name: t.Name}
}

// TestAttentionStateLinearInT: for the Qwen2.5-0.5B shape
// (scripts/gpu/qwen2.5-0.5b.json) at batch 8, what attention keeps for its
// backward — q, k, v, its output and one log-sum-exp per row, never the
// [T × T] probabilities — grows 4× from T = 1024 to 4096, as the sequence
// does (the bound is 4.5×; the probabilities alone grew 16×).
func TestAttentionStateLinearInT(t *testing.T) {
	cfg, err := LoadConfig(filepath.Join("..", "scripts", "gpu", "qwen2.5-0.5b.json"))
	if err != nil {
		t.Fatal(err)
	}
	state := func(T int) (lse, all int) {
		be := &sizeBackend{bytes: map[string]int{}}
		m, err := New(cfg, be)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.prepare(8, T); err != nil {
			t.Fatal(err)
		}
		for name, n := range be.bytes {
			switch name {
			case "attention.lse":
				lse += n
				all += n
			case "q", "k", "v", "attention.out":
				all += n
			case "attention.probs":
				t.Errorf("the activations hold %d bytes of attention probabilities", n)
			}
			if strings.Contains(name, "probs") {
				t.Errorf("tensor %q: attention should keep no probabilities", name)
			}
		}
		return lse, all
	}
	lse1, all1 := state(1024)
	lse4, all4 := state(4096)
	probs := func(T int) int { return cfg.Layers * 8 * cfg.Heads * T * T * 4 } // what [B, NH, T, T] F32 per layer took
	t.Logf("attention's saved state, Qwen2.5-0.5B shape, batch 8, %d layers (F32):", cfg.Layers)
	t.Logf("  T=1024: %.1f MiB (of which lse %.2f MiB); the probabilities were %.1f MiB", mibOf(all1), mibOf(lse1), mibOf(probs(1024)))
	t.Logf("  T=4096: %.1f MiB (of which lse %.2f MiB); the probabilities were %.1f MiB", mibOf(all4), mibOf(lse4), mibOf(probs(4096)))
	t.Logf("  ratio 4096/1024: %.2f× (the probabilities: %.0f×)", float64(all4)/float64(all1), float64(probs(4096))/float64(probs(1024)))
	if lse1 != cfg.Layers*8*cfg.Heads*1024*4 {
		t.Errorf("lse at T=1024 takes %d bytes, want [B, NH, T] F32 per layer = %d", lse1, cfg.Layers*8*cfg.Heads*1024*4)
	}
	if r := float64(all4) / float64(all1); r > 4.5 {
		t.Errorf("attention's saved state grows %.2f× from T=1024 to 4096, above 4.5×", r)
	}
}

func mibOf(n int) float64 { return float64(n) / (1 << 20) }

// TestHiddenPathHasNoLogits: the training forward the fused losses use
// (ForwardHidden, its backward, and the inference forward) allocates no
// [N × V] tensor — for the Qwen2.5-0.5B shape at batch 8 × 1024 that would
// be 5 GB of logits and as much again for their gradient; only Forward,
// which returns logits, makes them.
func TestHiddenPathHasNoLogits(t *testing.T) {
	cfg, err := LoadConfig(filepath.Join("..", "scripts", "gpu", "qwen2.5-0.5b.json"))
	if err != nil {
		t.Fatal(err)
	}
	const B, T = 8, 1024
	for _, dt := range []kdrt.DType{kdrt.F32, kdrt.BF16} {
		be := &sizeBackend{bytes: map[string]int{}}
		m, err := New(cfg, be, Storage(dt))
		if err != nil {
			t.Fatal(err)
		}
		clear(be.bytes)
		if err := m.prepare(B, T); err != nil {
			t.Fatal(err)
		}
		if err := m.prepareInfer(B, T); err != nil {
			t.Fatal(err)
		}
		logitBytes := B * T * cfg.Vocab * dt.Size()
		total := 0
		for name, n := range be.bytes {
			total += n
			if strings.Contains(name, "logits") {
				t.Errorf("%s: the hidden-state path allocates %q (%d bytes)", dt, name, n)
			}
		}
		t.Logf("%s: training activations + inference buffers at B=%d T=%d: %.2f GiB; one [N × V] tensor would be %.2f GiB",
			dt, B, T, float64(total)/(1<<30), float64(logitBytes)/(1<<30))
		// Forward does make them.
		clear(be.bytes)
		if err := m.prepareLogits(B * T); err != nil {
			t.Fatal(err)
		}
		if be.bytes["logits"] != B*T*cfg.Vocab*4 {
			t.Errorf("%s: Forward's logits take %d bytes, want F32 [N V] = %d", dt, be.bytes["logits"], B*T*cfg.Vocab*4)
		}
	}
}
