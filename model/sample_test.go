package model_test

import (
	"math"
	"slices"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestSampleGreedyFollowsLogits: greedy sampling picks, at every step, the
// argmax of the full forward pass's last-position logits, and sampling with
// a seed is reproducible.
func TestSampleGreedyFollowsLogits(t *testing.T) {
	fx := openFixture(t, "qwen2_bias")
	m, err := model.LoadDir(fx.dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int32{5, 17, 3}
	got, err := m.Sample(prompt, 6, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	seq := append([]int32(nil), prompt...)
	V := m.Config.Vocab
	for i, tok := range got {
		if _, err := m.Forward(model.Batch{B: 1, T: len(seq), IDs: seq}); err != nil {
			t.Fatal(err)
		}
		logits := cpu.Float32s(m.Logits())[(len(seq)-1)*V:]
		best, bestV := 0, float32(math.Inf(-1))
		for j, v := range logits[:V] {
			if v > bestV {
				best, bestV = j, v
			}
		}
		if int32(best) != tok {
			t.Fatalf("step %d: sampled %d, argmax of the forward pass %d", i, tok, best)
		}
		seq = append(seq, tok)
	}
	a, _ := m.Sample(prompt, 8, 1.0, 42)
	b, _ := m.Sample(prompt, 8, 1.0, 42)
	if !slices.Equal(a, b) {
		t.Fatalf("same seed gave %v and %v", a, b)
	}
}
