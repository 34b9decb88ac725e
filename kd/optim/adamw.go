package optim

import (
	"errors"
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// Slot is one parameter the optimizer updates: its value W, its gradient G and
// whether weight decay applies to it.
type Slot struct {
	Name  string
	W, G  *kdrt.Tensor
	Decay bool
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
type AdamW struct {
	cfg   AdamWConfig
	be    kdrt.Backend
	slots []Slot
	m, v  []*kdrt.Tensor
	step  int
}

// NewAdamW allocates the moments (zero) for every slot.
func NewAdamW(be kdrt.Backend, slots []Slot, cfg AdamWConfig) (*AdamW, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := &AdamW{cfg: cfg, be: be, slots: slots}
	for _, s := range slots {
		if s.W == nil || s.G == nil {
			return nil, fmt.Errorf("adamw: parameter %s has no value or no gradient", s.Name)
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

// Step clips the gradients (if configured) and updates every parameter with
// learning rate lr. It returns the gradient norm before clipping.
func (o *AdamW) Step(lr float64) (gradNorm float64, err error) {
	norm, err := o.GradNorm()
	if err != nil {
		return 0, err
	}
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return norm, ErrNonFinite
	}
	if o.cfg.MaxGradNorm > 0 {
		// torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1.
		if c := o.cfg.MaxGradNorm / (norm + 1e-6); c < 1 {
			for _, s := range o.slots {
				o.be.Scale(s.G, float32(c))
			}
		}
	}
	o.step++
	for i, s := range o.slots {
		wd := 0.0
		if s.Decay {
			wd = o.cfg.WeightDecay
		}
		o.be.AdamW(s.W, s.G, o.m[i], o.v[i], kdrt.AdamWParams{
			LR: float32(lr), Beta1: float32(o.cfg.Beta1), Beta2: float32(o.cfg.Beta2),
			Eps: float32(o.cfg.Eps), WeightDecay: float32(wd), Step: o.step,
		})
	}
	return norm, o.be.Sync()
}

// Moments returns the first and second moment tensors, in slot order, for
// saving training state.
func (o *AdamW) Moments() (m, v []*kdrt.Tensor) { return o.m, o.v }

// SetStepCount restores the update count when resuming from saved state.
func (o *AdamW) SetStepCount(n int) { o.step = n }

// TensorBytes is the memory the optimizer's moments take.
func (o *AdamW) TensorBytes() int {
	n := 0
	for i := range o.m {
		n += o.m[i].Bytes() + o.v[i].Bytes()
	}
	return n
}
