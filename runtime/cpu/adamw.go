package cpu

import (
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// adamw updates param in place exactly as torch.optim.AdamW does: decoupled
// weight decay p ← p·(1 − lr·wd), moments m, v, bias corrections
// 1 − β₁ᵗ and 1 − β₂ᵗ, and p ← p − (lr/bc₁)·m / (√v/√bc₂ + ε). Each gradient
// element is first multiplied by gscale (the clip factor; 1 is exact).
func adamw[F Float](param, grad, m, v []F, h kdrt.AdamWParams, gscale F) {
	b1, b2 := float64(h.Beta1), float64(h.Beta2)
	bc1 := 1 - math.Pow(b1, float64(h.Step))
	bc2sqrt := math.Sqrt(1 - math.Pow(b2, float64(h.Step)))
	stepSize := F(float64(h.LR) / bc1)
	decay := F(1 - float64(h.LR)*float64(h.WeightDecay))
	fb1, fb2, eps, bc2 := F(b1), F(b2), F(h.Eps), F(bc2sqrt)
	parallelFor(len(param), 12, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g := grad[i] * gscale
			param[i] *= decay
			m[i] = fb1*m[i] + (1-fb1)*g
			v[i] = fb2*v[i] + (1-fb2)*g*g
			param[i] -= stepSize * m[i] / (sqrt(v[i])/bc2 + eps)
		}
	})
}

// adamwGroup is the CPU's AdamWGroup: the slots themselves.
type adamwGroup struct{ slots []kdrt.AdamWSlot }

func (g *adamwGroup) Slots() []kdrt.AdamWSlot { return g.slots }
func (g *adamwGroup) Free()                   {}

// PrepareAdamW implements runtime.Backend.
func (*Backend) PrepareAdamW(slots []kdrt.AdamWSlot) (kdrt.AdamWGroup, error) {
	if err := kdrt.CheckAdamWSlots(slots); err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	return &adamwGroup{slots: append([]kdrt.AdamWSlot(nil), slots...)}, nil
}

// AdamWStep implements runtime.Backend: the norm in float64, then the
// slots one after another, each master rounded into its BF16 param.
func (b *Backend) AdamWStep(g kdrt.AdamWGroup, norm *kdrt.Tensor, h kdrt.AdamWParams, maxNorm float32) {
	grp, ok := g.(*adamwGroup)
	if !ok {
		panic(fmt.Sprintf("cpu: AdamWStep of a %T, not a group the CPU backend prepared", g))
	}
	if norm.Numel() != 1 || norm.DType != kdrt.F32 {
		panic(fmt.Sprintf("cpu: AdamWStep: norm %v should be F32 [1]", norm))
	}
	var ss float64
	for _, s := range grp.slots {
		ss += sumSquares(Float32s(s.Grad))
	}
	n := math.Sqrt(ss)
	Float32s(norm)[0] = float32(n)
	if math.IsNaN(n) || math.IsInf(n, 0) {
		return
	}
	scale := float32(1)
	if maxNorm > 0 {
		// torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1.
		scale = float32(min(1, float64(maxNorm)/(n+1e-6)))
	}
	for _, s := range grp.slots {
		hs := h
		if !s.Decay {
			hs.WeightDecay = 0
		}
		if s.Master != nil {
			adamw(Float32s(s.Master), Float32s(s.Grad), Float32s(s.M), Float32s(s.V), hs, scale)
			b.Cast(s.Param, s.Master)
			continue
		}
		var f frame
		adamw(f.out(s.Param), Float32s(s.Grad), Float32s(s.M), Float32s(s.V), hs, scale)
		f.done()
	}
}
