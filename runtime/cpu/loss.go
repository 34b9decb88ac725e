package cpu

import (
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// logSumExp of a row, stable for large and −Inf entries.
func logSumExp[F Float](row []F) F {
	mx := F(math.Inf(-1))
	for _, v := range row {
		mx = max(mx, v)
	}
	if math.IsInf(float64(mx), -1) {
		return mx
	}
	var s F
	for _, v := range row {
		s += exp(v - mx)
	}
	return mx + F(math.Log(float64(s)))
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
			losses[n] = logSumExp(row) - row[t]
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
			scale := scale0
			if weights != nil {
				scale *= weights[n]
				if scale == 0 {
					continue
				}
			}
			row, drow := logits[n*V:(n+1)*V], dlogits[n*V:(n+1)*V]
			mx := F(math.Inf(-1))
			for _, v := range row {
				mx = max(mx, v)
			}
			var sum F
			for _, v := range row {
				sum += exp(v - mx)
			}
			// exp((v − max) − log Σ): see logSoftmaxRow for why not v − lse.
			logSum := F(math.Log(float64(sum)))
			for i, v := range row {
				drow[i] += scale * exp((v-mx)-logSum)
			}
			drow[t] -= scale
		}
	})
}
