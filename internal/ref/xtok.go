package ref

import (
	"math"
	"slices"
)

// SortedL1 is Universal Logit Distillation's distance between two
// probability vectors of possibly different lengths (Boizard et al. 2024):
// both sorted in decreasing order, the shorter padded with zeros, and
// Σ_r |a_r − b_r| (llm-recipes' DistillationLoss, TRL GOLD's ULD term).
func SortedL1(a, b []float64) float64 {
	sa, sb := slices.Clone(a), slices.Clone(b)
	slices.SortFunc(sa, func(x, y float64) int { return compareDesc(x, y) })
	slices.SortFunc(sb, func(x, y float64) int { return compareDesc(x, y) })
	n := max(len(sa), len(sb))
	var d float64
	for r := range n {
		var x, y float64
		if r < len(sa) {
			x = sa[r]
		}
		if r < len(sb) {
			y = sb[r]
		}
		d += math.Abs(x - y)
	}
	return d
}

func compareDesc(x, y float64) int {
	switch {
	case x > y:
		return -1
	case x < y:
		return 1
	}
	return 0
}

// CrossTokenizer is the divergence runtime.CrossTokenizerOps defines, from
// the student's and the teacher's logits s, t (different lengths) at
// temperature T: the merged distributions m_s = exp(slog)·softmax(s/T) and
// m_t = exp(tlog)·softmax(t/T), the forward KL Σ m_t·log(m_t/m_s) over the
// matched pairs (student id, teacher id) times a, plus SortedL1 of the
// entries of the ids no pair names times b.
func CrossTokenizer(s, t []float64, slog, tlog, T float64, pairs [][2]int, a, b float64) float64 {
	ms, mt := Softmax(s, T), Softmax(t, T)
	for i := range ms {
		ms[i] *= math.Exp(slog)
	}
	for j := range mt {
		mt[j] *= math.Exp(tlog)
	}
	sUsed, tUsed := make([]bool, len(ms)), make([]bool, len(mt))
	var kl float64
	for _, pr := range pairs {
		i, j := pr[0], pr[1]
		sUsed[i], tUsed[j] = true, true
		if mt[j] > 0 {
			kl += mt[j] * math.Log(mt[j]/ms[i])
		}
	}
	var fs, ft []float64
	for i, v := range ms {
		if !sUsed[i] {
			fs = append(fs, v)
		}
	}
	for j, v := range mt {
		if !tUsed[j] {
			ft = append(ft, v)
		}
	}
	return a*kl + b*SortedL1(fs, ft)
}
