package optim

import (
	"errors"
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// Slot is one parameter the optimizer updates: its value W, its gradient G,
// its master copy and whether weight decay applies to it.
type Slot struct {
	Name string
	// W is the value the model computes with (F32, or BF16 under mixed
	// precision) and G its gradient (F32).
	W, G *kdrt.Tensor
	// Master is the F32 master copy of a BF16 W, which the update applies to
	// (W then receives it rounded); nil when W is F32 and its own master.
	Master *kdrt.Tensor
	Decay  bool
}

// AdamWConfig holds AdamW's hyperparameters.
type AdamWConfig struct {
	Beta1, Beta2, Eps, WeightDecay float64
	// MaxGradNorm > 0 clips the global L2 norm of all gradients to it before
	// the update, as torch.nn.utils.clip_grad_norm_ does; 0 disables clipping.
	MaxGradNorm float64
}

// DefaultAdamW is the configuration most LLM fine-tuning recipes use.
var DefaultAdamW = AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.0, MaxGradNorm: 1.0}

// Validate reports hyperparameters outside their domains.
func (c AdamWConfig) Validate() error {
	switch {
	case !(c.Beta1 >= 0 && c.Beta1 < 1):
		return fmt.Errorf("adamw: beta1 %g must be in [0, 1)", c.Beta1)
	case !(c.Beta2 >= 0 && c.Beta2 < 1):
		return fmt.Errorf("adamw: beta2 %g must be in [0, 1)", c.Beta2)
	case !(c.Eps > 0):
		return fmt.Errorf("adamw: eps %g must be positive", c.Eps)
	case !(c.WeightDecay >= 0):
		return fmt.Errorf("adamw: weight decay %g must be ≥ 0", c.WeightDecay)
	case !(c.MaxGradNorm >= 0):
		return fmt.Errorf("adamw: max grad norm %g must be ≥ 0", c.MaxGradNorm)
	}
	return nil
}

// AdamW is Adam with decoupled weight decay (Loshchilov & Hutter), with
// bias-corrected fp32 moments, updating exactly as torch.optim.AdamW does.
// A step is the backend's multi-tensor AdamWStep: the gradient norm, the
// clip factor and the update of every parameter in a few launches, with one
// download (the norm) per step.
type AdamW struct {
	cfg   AdamWConfig
	be    kdrt.Backend
	slots []Slot
	m, v  []*kdrt.Tensor
	group kdrt.AdamWGroup
	norm  *kdrt.Tensor // F32 [1]: the last step's gradient norm, on the device
	step  int
}

// NewAdamW allocates the moments (zero) for every slot and prepares the
// backend's multi-tensor update over them.
func NewAdamW(be kdrt.Backend, slots []Slot, cfg AdamWConfig) (*AdamW, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := &AdamW{cfg: cfg, be: be, slots: slots}
	var group []kdrt.AdamWSlot
	for _, s := range slots {
		if s.W == nil || s.G == nil {
			return nil, fmt.Errorf("adamw: parameter %s has no value or no gradient", s.Name)
		}
		if s.W.DType != kdrt.F32 && s.Master == nil {
			return nil, fmt.Errorf("adamw: parameter %s is %s without an F32 master copy (mixed precision updates the master)", s.Name, s.W.DType)
		}
		m, err := be.Alloc("adamw.m."+s.Name, kdrt.F32, s.W.Shape...)
		if err != nil {
			return nil, err
		}
		v, err := be.Alloc("adamw.v."+s.Name, kdrt.F32, s.W.Shape...)
		if err != nil {
			return nil, err
		}
		o.m, o.v = append(o.m, m), append(o.v, v)
		group = append(group, kdrt.AdamWSlot{Param: s.W, Master: s.Master, Grad: s.G, M: m, V: v, Decay: s.Decay, Name: s.Name})
	}
	var err error
	if o.norm, err = be.Alloc("adamw.grad_norm", kdrt.F32, 1); err != nil {
		return nil, err
	}
	if o.group, err = be.PrepareAdamW(group); err != nil {
		return nil, err
	}
	return o, nil
}

// StepCount is the number of updates made so far.
func (o *AdamW) StepCount() int { return o.step }

// GradNorm returns the global L2 norm of all gradients.
func (o *AdamW) GradNorm() (float64, error) {
	gs := make([]*kdrt.Tensor, len(o.slots))
	for i, s := range o.slots {
		gs[i] = s.G
	}
	ss, err := o.be.SumSquares(gs...)
	return math.Sqrt(ss), err
}

// ErrNonFinite is returned by Step when the gradients contain NaN or Inf; the
// parameters are left untouched.
var ErrNonFinite = errors.New("adamw: gradient norm is not finite")

// Step clips the gradients (if configured: by the factor
// torch.nn.utils.clip_grad_norm_ uses, applied as the update reads them; the
// gradients themselves are left as they are) and updates every parameter
// with learning rate lr, all on the device. It returns the gradient norm
// before clipping, the one value it reads back; with a non-finite norm
// nothing is updated and the error is ErrNonFinite.
func (o *AdamW) Step(lr float64) (gradNorm float64, err error) {
	o.Launch(lr, o.norm)
	var host [1]float32
	err = o.be.Download(o.norm, host[:])
	return o.Finish(float64(host[0]), err)
}

// Launch is Step without its download: it queues the clipping and the
// update, writing the gradient norm into norm (F32 [1] on the device), and
// reads nothing back, so that a caller can read the norm together with
// whatever else it reads once per step (loss.Sums.Head). Finish completes it.
func (o *AdamW) Launch(lr float64, norm *kdrt.Tensor) {
	o.step++
	o.be.AdamWStep(o.group, norm, kdrt.AdamWParams{
		LR: float32(lr), Beta1: float32(o.cfg.Beta1), Beta2: float32(o.cfg.Beta2),
		Eps: float32(o.cfg.Eps), WeightDecay: float32(o.cfg.WeightDecay), Step: o.step,
	}, float32(o.cfg.MaxGradNorm))
}

// Finish completes a Launch given the norm the caller read back and the
// error of that read: it returns the norm, and ErrNonFinite (nothing was
// updated) for a NaN or infinite one; after a failed read the step is not
// counted either.
func (o *AdamW) Finish(norm float64, readErr error) (float64, error) {
	if readErr != nil {
		o.step--
		return 0, readErr
	}
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		o.step-- // nothing was updated
		return norm, ErrNonFinite
	}
	return norm, nil
}

// Moments returns the first and second moment tensors, in slot order, for
// saving training state.
func (o *AdamW) Moments() (m, v []*kdrt.Tensor) { return o.m, o.v }

// SetStepCount restores the update count when resuming from saved state.
func (o *AdamW) SetStepCount(n int) { o.step = n }

// Free releases the moments and the backend's group.
func (o *AdamW) Free() {
	o.group.Free()
	for i := range o.m {
		o.be.Free(o.m[i])
		o.be.Free(o.v[i])
	}
	o.be.Free(o.norm)
	o.m, o.v = nil, nil
}

// TensorBytes is the memory the optimizer's moments take.
func (o *AdamW) TensorBytes() int {
	n := 0
	for i := range o.m {
		n += o.m[i].Bytes() + o.v[i].Bytes()
	}
	return n
}
