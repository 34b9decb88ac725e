package cpu

import (
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// adamw updates param in place exactly as torch.optim.AdamW does: decoupled
// weight decay p ← p·(1 − lr·wd), moments m, v, bias corrections
// 1 − β₁ᵗ and 1 − β₂ᵗ, and p ← p − (lr/bc₁)·m / (√v/√bc₂ + ε).
func adamw[F Float](param, grad, m, v []F, h kdrt.AdamWParams) {
	b1, b2 := float64(h.Beta1), float64(h.Beta2)
	bc1 := 1 - math.Pow(b1, float64(h.Step))
	bc2sqrt := math.Sqrt(1 - math.Pow(b2, float64(h.Step)))
	stepSize := F(float64(h.LR) / bc1)
	decay := F(1 - float64(h.LR)*float64(h.WeightDecay))
	fb1, fb2, eps, bc2 := F(b1), F(b2), F(h.Eps), F(bc2sqrt)
	parallelFor(len(param), 12, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g := grad[i]
			param[i] *= decay
			m[i] = fb1*m[i] + (1-fb1)*g
			v[i] = fb2*v[i] + (1-fb2)*g*g
			param[i] -= stepSize * m[i] / (sqrt(v[i])/bc2 + eps)
		}
	})
}
