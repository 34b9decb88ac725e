package train

import (
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// checkBatchMemory refuses, before the first step, a batch_size × data.max_len
// whose buffers cannot fit in the backend's free memory: the activations of
// the student's forward and backward (and of the online teacher's and the
// DPO reference's forwards) on a full micro-batch, plus the student's
// gradients and AdamW moments, which are allocated next. batch_size=10¹²
// used to panic in make (or be killed by the kernel) in the first step.
func (t *trainer) checkBatchMemory() error {
	r := &t.r
	B, T := r.BatchSize, r.Data.MaxLen
	if r.Objectives.DPO != nil {
		// A preference batch holds the chosen and the rejected sequence of
		// each pair.
		B = int(min(kdrt.MulBytes(2, int64(B)), int64(^uint(0)>>1)))
	}
	need := t.student.Config.ActivationBytes(B, T)
	need = kdrt.AddBytes(need, kdrt.MulBytes(3, t.student.Config.WeightBytes()))
	if t.teacher != nil {
		need = kdrt.AddBytes(need, t.teacher.Config.ActivationBytes(B, T))
	}
	if t.ref != nil {
		need = kdrt.AddBytes(need, t.ref.Config.ActivationBytes(B, T))
	}
	what := fmt.Sprintf("training with batch_size %d × data.max_len %d", r.BatchSize, T)
	return kdrt.CheckFree(t.be, what, need,
		"lower batch_size (in the recipe or with --set batch_size=N; raise grad_accum to keep the tokens per step) or data.max_len")
}
