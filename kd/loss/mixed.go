package loss

import (
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// MixedResult is the mixed objective's value and its two parts, unweighted.
type MixedResult struct {
	Loss   float64 // α·CE + (1−α)·KD
	CE, KD float64 // each term before its weight
	Tokens int
	KDInfo KDResult
}

// SFTKD is the classic distillation objective α·CE + (1−α)·KD (Hinton et al.;
// DistillKit's alpha): cross-entropy on the data's targets plus the divergence
// to the teacher on the same positions (those whose target is not
// runtime.IgnoreIndex). Gradients accumulate into dHidden and head.G.
func SFTKD(be kdrt.Backend, hidden *kdrt.Tensor, head Head, dHidden *kdrt.Tensor, targets []int32, teacher Teacher, cfg KDConfig, alpha float64, opt Options) (MixedResult, error) {
	var res MixedResult
	if !(alpha >= 0 && alpha <= 1) {
		return res, fmt.Errorf("loss: mixing weight alpha %g must be in [0, 1]", alpha)
	}
	mask := make([]float32, len(targets))
	for i, t := range targets {
		if t != kdrt.IgnoreIndex {
			mask[i] = 1
		}
	}
	if alpha > 0 {
		ce, n, err := CrossEntropy(be, hidden, head, dHidden, targets, alpha, opt)
		if err != nil {
			return res, err
		}
		res.CE, res.Tokens = ce/alpha, n
	}
	if alpha < 1 {
		kd, err := KD(be, hidden, head, dHidden, teacher, mask, cfg, 1-alpha, opt)
		if err != nil {
			return res, err
		}
		res.KD, res.Tokens, res.KDInfo = kd.Loss/(1-alpha), kd.Tokens, kd
	}
	res.Loss = alpha*res.CE + (1-alpha)*res.KD
	return res, nil
}
