package cpu

import (
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// Reductions over a vocabulary row (the log-sum-exp here, and the sums of the
// divergences) accumulate in float64 whatever the element type: a float32
// running sum over 151,936 entries drifts by ~1e-4 relative (5e-3 on a small
// divergence), while float64 keeps the result as good as its float32 inputs.
// math.Exp works in float64 anyway, so this costs no extra exponentials.

// rowMax is the largest entry of row times invT (−Inf for an empty or
// all-−Inf row).
func rowMax[F Float](row []F, invT float64) float64 {
	mx := math.Inf(-1)
	for _, v := range row {
		mx = max(mx, float64(v)*invT)
	}
	return mx
}

// logSumExp is log Σ exp(row[i]) in float64, stable for large and −Inf
// entries.
func logSumExp[F Float](row []F) float64 {
	mx := rowMax(row, 1)
	if math.IsInf(mx, -1) {
		return mx
	}
	var s float64
	for _, v := range row {
		s += math.Exp(float64(v) - mx)
	}
	return mx + math.Log(s)
}

// crossEntropyForward: losses[n] = logsumexp(logits[n]) − logits[n, t[n]],
// zero where t[n] is IgnoreIndex.
func crossEntropyForward[F Float](losses, logits []F, targets []int32, N, V int) {
	parallelFor(N, 3*V, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			t := targets[n]
			if t == kdrt.IgnoreIndex {
				losses[n] = 0
				continue
			}
			row := logits[n*V : (n+1)*V]
			losses[n] = F(logSumExp(row) - float64(row[t]))
		}
	})
}

// crossEntropyBackward: dlogits[n] += scale·w[n]·(softmax(logits[n]) −
// onehot(t[n])); w nil means all ones.
func crossEntropyBackward[F Float](dlogits, logits []F, targets []int32, weights []F, N, V int, scale0 F) {
	parallelFor(N, 4*V, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			t := targets[n]
			if t == kdrt.IgnoreIndex {
				continue
			}
			scale := float64(scale0)
			if weights != nil {
				scale *= float64(weights[n])
				if scale == 0 {
					continue
				}
			}
			row, drow := logits[n*V:(n+1)*V], dlogits[n*V:(n+1)*V]
			mx := rowMax(row, 1)
			var sum float64
			for _, v := range row {
				sum += math.Exp(float64(v) - mx)
			}
			// exp((v − max) − log Σ): see logSoftmaxRow for why not v − lse.
			logSum := math.Log(sum)
			for i, v := range row {
				g := scale * math.Exp((float64(v)-mx)-logSum)
				if i == int(t) {
					g -= scale // softmax − onehot in float64: one rounding
				}
				drow[i] += F(g)
			}
		}
	})
}

// AddSum implements runtime.Backend: the sum over x in row order, in
// float64, then added to acc's slot.
func (*Backend) AddSum(acc *kdrt.Tensor, slot int, x *kdrt.Tensor) {
	kdrt.CheckAddSum(acc, slot, x)
	var s float64
	for _, v := range Float32s(x) {
		s += float64(v)
	}
	a := Float32s(acc)
	kdrt.SetFloat64At(a, slot, kdrt.Float64At(a, slot)+s)
}
