package model

import (
	kdrt "github.com/kdnative/kdnative/runtime"
	"path/filepath"
	"testing"

	"github.com/kdnative/kdnative/runtime/plan"
)

// TestMemoryFormulasMatchPlan: the sizes New and generation check against
// the free memory before allocating (WeightBytes, ActivationBytes,
// KVCacheBytes: formulas, since a check must not allocate) are what the
// memory planner (runtime/plan, exact sizes) records when the real code
// allocates: New's weights, a training forward's buffers, a generator's
// key/value cache, an inference forward's buffers — for Llama, GPT-2 and
// the Qwen2.5-0.5B shape, stored in F32 and in BF16 (with F32 masters).
func TestMemoryFormulasMatchPlan(t *testing.T) {
	qwen, err := LoadConfig(filepath.Join("..", "scripts", "gpu", "qwen2.5-0.5b.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []*Config{BuiltinTiny(), gpt2Config(t), qwen} {
		for _, dt := range []kdrt.DType{kdrt.F32, kdrt.BF16} {
			checkFormulasMatchPlan(t, cfg, dt)
		}
	}
}

func checkFormulasMatchPlan(t *testing.T, cfg *Config, dt kdrt.DType) {
	t.Helper()
	pb := plan.New(plan.Options{Exact: true})
	m, err := New(cfg, pb, Storage(dt), MasterWeights())
	if err != nil {
		t.Fatal(err)
	}
	weights := pb.Report().FinalBytes - pb.Report().HeldNamed(plan.Step, "rope.inv_freq")
	if want := uint64(cfg.weightBytes(dt, true)); weights != want {
		t.Errorf("%s %s: the plan of New holds %d bytes of weights, weightBytes says %d", cfg.ModelType, dt, weights, want)
	}
	if dt == kdrt.F32 && weights != uint64(cfg.WeightBytes()) {
		t.Errorf("%s: the plan of New holds %d bytes of weights, WeightBytes says %d", cfg.ModelType, weights, cfg.WeightBytes())
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
		if got, want := pb.Report().FinalBytes-base, uint64(cfg.activationBytes(dt, bt[0], bt[1])); got != want {
			t.Errorf("%s %s B=%d T=%d: the plan of the activations is %d bytes, activationBytes says %d", cfg.ModelType, dt, bt[0], bt[1], got, want)
		}
		base = pb.Report().FinalBytes
		m.freeInfer()
		if err := m.prepareInfer(bt[0], bt[1]); err != nil {
			t.Fatal(err)
		}
		if got, want := pb.Report().FinalBytes-base, uint64(cfg.inferBytes(dt, bt[0], bt[1])); got != want {
			t.Errorf("%s %s B=%d T=%d: the plan of the inference forward is %d bytes, inferBytes says %d", cfg.ModelType, dt, bt[0], bt[1], got, want)
		}
		m.freeInfer()
		g, err := m.newGenerator(bt[0], bt[1])
		if err != nil {
			t.Fatal(err)
		}
		if got, want := pb.Report().HeldNamed(plan.Step, "kv.k", "kv.v"), uint64(cfg.kvCacheBytes(dt, bt[0], bt[1])); got != want {
			t.Errorf("%s %s B=%d Tmax=%d: the plan's key/value cache is %d bytes, kvCacheBytes says %d", cfg.ModelType, dt, bt[0], bt[1], got, want)
		}
		g.free()
	}
}
