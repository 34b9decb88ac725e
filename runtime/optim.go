package runtime

import "fmt"

// AdamWSlot is one parameter of a multi-tensor AdamW update (OptimizerOps).
type AdamWSlot struct {
	// Param is the value the model computes with: F32, or BF16. With Master
	// set, Param receives the updated master rounded to its dtype; without,
	// it is updated in place (a BF16 Param in fp32, rounded once).
	Param *Tensor
	// Master is nil or the F32 master copy the update applies to (mixed
	// precision: the BF16 weights are a rounding of it, so an update
	// smaller than a bf16 ulp still moves the master).
	Master *Tensor
	// Grad, M and V are F32: the gradient and the first and second moments.
	Grad, M, V *Tensor
	// Decay applies the weight decay to this slot.
	Decay bool
	// Name is for error messages.
	Name string
}

// AdamWGroup is a fixed list of slots prepared by a backend for AdamWStep:
// on a GPU, a table of their addresses on the device, built once, so that
// one launch updates every slot.
type AdamWGroup interface {
	// Slots returns the slots, in the order given to PrepareAdamW.
	Slots() []AdamWSlot
	// Free releases what PrepareAdamW allocated (not the slots' tensors).
	Free()
}

// OptimizerOps are the optimizer's multi-tensor ops: clipping and the AdamW
// update over every parameter at once, with nothing read back to the host.
type OptimizerOps interface {
	// PrepareAdamW checks the slots (equal element counts, Grad, M, V and
	// Master F32, Param F32 or BF16) and makes a group of them. The tensors
	// must stay allocated while the group is used.
	PrepareAdamW(slots []AdamWSlot) (AdamWGroup, error)
	// AdamWStep computes the global L2 norm ‖g‖ of every slot's gradient (the
	// sum of squares accumulated in float64) into norm, F32 [1], on the
	// device; then, when ‖g‖ is finite, updates every slot as AdamW does
	// with the gradient multiplied by the clip factor
	// min(1, maxNorm/(‖g‖ + 1e-6)) (torch.nn.utils.clip_grad_norm_; no
	// clipping when maxNorm ≤ 0). When ‖g‖ is NaN or infinite nothing is
	// updated. The gradients themselves are left as they are. Nothing is
	// read back: the caller downloads norm when it wants the value (once
	// per step, for the progress line and to see a non-finite norm).
	AdamWStep(g AdamWGroup, norm *Tensor, h AdamWParams, maxNorm float32)
}

// CheckAdamWSlots reports slots PrepareAdamW must refuse, naming the slot.
func CheckAdamWSlots(slots []AdamWSlot) error {
	for i, s := range slots {
		name := s.Name
		if name == "" {
			name = fmt.Sprintf("slot %d", i)
		}
		if s.Param == nil || s.Grad == nil || s.M == nil || s.V == nil {
			return fmt.Errorf("adamw %s: param, gradient and moments are required", name)
		}
		n := s.Param.Numel()
		for _, t := range []*Tensor{s.Grad, s.M, s.V, s.Master} {
			if t == nil {
				continue
			}
			if t.Numel() != n {
				return fmt.Errorf("adamw %s: %v and %v differ in size", name, s.Param, t)
			}
			if t.DType != F32 {
				return fmt.Errorf("adamw %s: %v should be F32 (gradients, moments and master weights are F32)", name, t)
			}
		}
		if s.Param.DType != F32 && s.Param.DType != BF16 {
			return fmt.Errorf("adamw %s: %v should be F32 or BF16", name, s.Param)
		}
	}
	return nil
}
