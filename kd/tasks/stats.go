package tasks

import (
	"math"
	"math/rand/v2"
	"sort"
)

// z95 is the standard normal quantile for a two-sided 95% interval.
const z95 = 1.959963984540054

// Wilson is the 95% Wilson score interval for a proportion of successes out
// of n trials (Wilson 1927): unlike the normal approximation it stays inside
// [0, 1] and is sound at 0 or n successes and for small n.
func Wilson(successes float64, n int) (lo, hi float64) {
	if n <= 0 {
		return math.NaN(), math.NaN()
	}
	N := float64(n)
	p := successes / N
	z2 := z95 * z95
	den := 1 + z2/N
	mid := (p + z2/(2*N)) / den
	half := z95 * math.Sqrt(p*(1-p)/N+z2/(4*N*N)) / den
	return math.Max(0, mid-half), math.Min(1, mid+half)
}

// DefaultBootstrap is how many resamples Bootstrap draws by default.
const DefaultBootstrap = 2000

// Bootstrap is the 95% percentile bootstrap interval of a statistic of n
// items: stat is computed on B resamples of the indices 0…n−1 drawn with
// replacement by a generator seeded with seed, and the 2.5% and 97.5%
// quantiles of those values are returned. The same seed gives the same
// interval.
func Bootstrap(n, B int, seed uint64, stat func(idx []int) float64) (lo, hi float64) {
	if n <= 0 {
		return math.NaN(), math.NaN()
	}
	if B <= 0 {
		B = DefaultBootstrap
	}
	r := rand.New(rand.NewPCG(seed, 0x626f6f74737472))
	idx := make([]int, n)
	vals := make([]float64, B)
	for b := range B {
		for i := range idx {
			idx[i] = r.IntN(n)
		}
		vals[b] = stat(idx)
	}
	sort.Float64s(vals)
	return quantile(vals, 0.025), quantile(vals, 0.975)
}

// quantile interpolates linearly between order statistics (numpy's default).
func quantile(sorted []float64, q float64) float64 {
	pos := q * float64(len(sorted)-1)
	i := int(math.Floor(pos))
	if i+1 >= len(sorted) {
		return sorted[len(sorted)-1]
	}
	f := pos - float64(i)
	return sorted[i]*(1-f) + sorted[i+1]*f
}

// BootstrapMean is Bootstrap of the mean of xs.
func BootstrapMean(xs []float64, B int, seed uint64) (lo, hi float64) {
	return Bootstrap(len(xs), B, seed, func(idx []int) float64 {
		var s float64
		for _, i := range idx {
			s += xs[i]
		}
		return s / float64(len(idx))
	})
}

// PassAtK is the unbiased estimator of pass@k from n samples of which c are
// correct (Chen et al. 2021, "Evaluating Large Language Models Trained on
// Code"): 1 − C(n−c, k)/C(n, k), computed as their numerically stable
// product 1 − Π_{i=n−c+1…n} (1 − k/i).
func PassAtK(n, c, k int) float64 {
	if n-c < k {
		return 1
	}
	prod := 1.0
	for i := n - c + 1; i <= n; i++ {
		prod *= 1 - float64(k)/float64(i)
	}
	return 1 - prod
}
