package train

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// smallMemory is the CPU backend reporting a chosen free memory.
type smallMemory struct {
	*cpu.Backend
	free int64
}

func (b smallMemory) FreeMemory() (free, total int64, ok bool) { return b.free, 2 * b.free, true }

// TestBatchSizeOverMemory is the issue's --set batch_size=1000000000000: it
// panicked in make (or the kernel killed the process) in the first step. It
// is refused before training with the bytes needed, the bytes free and what
// to change; for sft, for online kd and for dpo (whose batches hold both
// sequences of a pair), by their memory plans, and for on-policy
// distillation, which the planner does not run, by the memory formulas.
func TestBatchSizeOverMemory(t *testing.T) {
	w := newWorld(t)
	for _, c := range []struct {
		name string
		edit func(r *Recipe)
	}{
		{"sft", func(r *Recipe) { r.Objectives.SFT = &SFTTerm{Weight: 1} }},
		{"kd", func(r *Recipe) {
			r.Teacher = w.teacher
			r.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1}
		}},
		{"dpo", func(r *Recipe) {
			r.Data.Train = w.pairs
			r.Objectives.DPO = &DPOTerm{Weight: 1, Beta: 0.1}
		}},
		{"onpolicy", func(r *Recipe) {
			r.Teacher = w.teacher
			r.Objectives.OnPolicy = &OnPolicyTerm{Weight: 1, PromptTokens: 8, MaxNewTokens: 8}
		}},
	} {
		r := w.recipe(filepath.Join(w.dir, "out-"+c.name))
		c.edit(&r)
		r.BatchSize = 1_000_000_000_000
		_, err := Run(context.Background(), cpu.New(), r, Options{})
		var oom *kdrt.OutOfMemoryError
		if !errors.As(err, &oom) {
			t.Fatalf("%s: batch_size 10¹²: %v, want an out-of-memory error", c.name, err)
		}
		t.Logf("%s: %v", c.name, err)
		for _, want := range []string{"batch_size 1000000000000 × data.max_len 64", "needs", "free", "lower batch_size", "--set batch_size="} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %q does not say %q", c.name, err, want)
			}
		}
	}
	// An ordinary batch on a backend with 1 kB free is refused too, with
	// the numbers the backend reports.
	r := w.recipe(filepath.Join(w.dir, "out-small"))
	r.Objectives.SFT = &SFTTerm{Weight: 1}
	_, err := Run(context.Background(), smallMemory{cpu.New(), 1000}, r, Options{})
	if err == nil || !strings.Contains(err.Error(), "1.0 kB free of 2.0 kB") {
		t.Errorf("batch of 4 × 64 with 1 kB free: %v", err)
	}
}
