package model

import (
	"path/filepath"
	"testing"

	"github.com/kdnative/kdnative/runtime/plan"
)

// TestMemoryFormulasMatchPlan: the sizes New and generation check against
// the free memory before allocating (WeightBytes, ActivationBytes,
// KVCacheBytes: formulas, since a check must not allocate) are what the
// memory planner (runtime/plan, exact sizes) records when the real code
// allocates: New's weights, a training forward's buffers, a generator's
// key/value cache — for Llama, GPT-2 and the Qwen2.5-0.5B shape.
func TestMemoryFormulasMatchPlan(t *testing.T) {
	qwen, err := LoadConfig(filepath.Join("..", "scripts", "gpu", "qwen2.5-0.5b.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []*Config{BuiltinTiny(), gpt2Config(t), qwen} {
		pb := plan.New(plan.Options{Exact: true})
		m, err := New(cfg, pb)
		if err != nil {
			t.Fatal(err)
		}
		weights := pb.Report().FinalBytes - pb.Report().HeldNamed(plan.Step, "rope.inv_freq")
		if want := uint64(cfg.WeightBytes()); weights != want {
			t.Errorf("%s: the plan of New holds %d bytes of weights, WeightBytes says %d", cfg.ModelType, weights, want)
		}
		for _, bt := range [][2]int{{1, 1}, {3, 7}, {8, 1024}} {
			if bt[1] > cfg.MaxPositions {
				continue
			}
			m.freeActs()
			base := pb.Report().FinalBytes
			if err := m.prepare(bt[0], bt[1]); err != nil {
				t.Fatal(err)
			}
			if got, want := pb.Report().FinalBytes-base, uint64(cfg.ActivationBytes(bt[0], bt[1])); got != want {
				t.Errorf("%s B=%d T=%d: the plan of the activations is %d bytes, ActivationBytes says %d", cfg.ModelType, bt[0], bt[1], got, want)
			}
			g, err := m.newGenerator(bt[0], bt[1])
			if err != nil {
				t.Fatal(err)
			}
			if got, want := pb.Report().HeldNamed(plan.Step, "kv.k", "kv.v"), uint64(cfg.KVCacheBytes(bt[0], bt[1])); got != want {
				t.Errorf("%s B=%d Tmax=%d: the plan's key/value cache is %d bytes, KVCacheBytes says %d", cfg.ModelType, bt[0], bt[1], got, want)
			}
			g.free()
		}
	}
}
