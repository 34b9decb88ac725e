package cpu

import (
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// The divergences work on one row at a time. Every one of them is written as
// D(q) with its gradient g = ∂D/∂q over the bins (the vocabulary, or the top-k
// plus tail of a sparse teacher); the chain rule through q = softmax(s/τ)
// then gives ∂D/∂s_j = (1/τ)·q_j·(g_j − Σ_i q_i·g_i). Probabilities and
// log-probabilities are both kept so that 0·log 0 terms are skipped, never
// evaluated (no NaN from −Inf logits).
//
// Whatever the element type F of the inputs and outputs, a row's
// log-probabilities, the bins' terms and every sum over them are float64
// (see loss.go): the float32 backend then computes exactly what the float64
// instance does on the same inputs, rounded once at the output. With float32
// scratch rows and sums, a 151,936-wide row lost 5e-3 of a small divergence
// and 1e-2 of its gradient's max-norm (TestDivergenceLargeVocab).

var negInf = math.Inf(-1)

// tailFloor is the least mass a sparse teacher's tail bin is given.
const tailFloor = 1e-10

// logSoftmaxRow writes ls = log_softmax(x·invT); −Inf inputs give −Inf
// outputs. A row that is entirely −Inf stays −Inf.
func logSoftmaxRow[F Float](ls []float64, x []F, invT float64) {
	mx := rowMax(x, invT)
	if math.IsInf(mx, -1) {
		for i := range ls {
			ls[i] = negInf
		}
		return
	}
	var sum float64
	for _, v := range x {
		sum += math.Exp(float64(v)*invT - mx)
	}
	// (v/τ − max) − log Σ, not v/τ − (max + log Σ): rounding the sum max + log Σ
	// would shift every log-probability by up to half an ulp of it, so the
	// probabilities would no longer sum to 1 (found against torch in float32).
	logSum := math.Log(sum)
	for i, v := range x {
		ls[i] = (float64(v)*invT - mx) - logSum
	}
}

// logAddExp returns log(eᵃ + eᵇ) without overflow.
func logAddExp(a, b float64) float64 {
	if math.IsInf(a, -1) {
		return b
	}
	if math.IsInf(b, -1) {
		return a
	}
	if a < b {
		a, b = b, a
	}
	return a + math.Log1p(math.Exp(b-a))
}

// binDivergence evaluates D over bins given the teacher's (lp) and student's
// (lq) log-probabilities, writing g_i = ∂D/∂q_i multiplied by q_i (qg) — the
// product is what the softmax chain needs and stays finite where q_i = 0.
func binDivergence(qg, lp, lq []float64, kind kdrt.DivergenceKind, beta, alpha float64) float64 {
	var d float64
	switch kind {
	case kdrt.ForwardKL: // g = −p/q, so q·g = −p
		for i := range lp {
			p := math.Exp(lp[i])
			if p > 0 {
				d += p * (lp[i] - lq[i])
			}
			qg[i] = -p
		}
	case kdrt.ReverseKL: // g = log q − log p + 1 (the constant cancels)
		for i := range lq {
			q := math.Exp(lq[i])
			qg[i] = 0
			if q > 0 {
				d += q * (lq[i] - lp[i])
				qg[i] = q * (lq[i] - lp[i])
			}
		}
	case kdrt.JSD:
		if beta == 0 {
			return binDivergence(qg, lp, lq, kdrt.ForwardKL, 0, 0)
		}
		if beta == 1 {
			return binDivergence(qg, lp, lq, kdrt.ReverseKL, 0, 0)
		}
		lb, l1b := math.Log(beta), math.Log(1-beta)
		for i := range lp {
			lm := logAddExp(lb+lp[i], l1b+lq[i])
			p, q := math.Exp(lp[i]), math.Exp(lq[i])
			qg[i] = 0
			if p > 0 {
				d += beta * p * (lp[i] - lm)
			}
			if q > 0 {
				d += (1 - beta) * q * (lq[i] - lm)
				qg[i] = (1 - beta) * q * (lq[i] - lm) // g = (1−β)(log q − log m)
			}
		}
	case kdrt.TVD: // g = ½·sign(q − p)
		for i := range lp {
			p, q := math.Exp(lp[i]), math.Exp(lq[i])
			d += 0.5 * math.Abs(p-q)
			switch {
			case q > p:
				qg[i] = 0.5 * q
			case q < p:
				qg[i] = -0.5 * q
			default:
				qg[i] = 0
			}
		}
	case kdrt.SkewKL: // m = αp + (1−α)q; g = −(1−α)·p/m
		la, l1a := math.Log(alpha), math.Log(1-alpha)
		for i := range lp {
			p := math.Exp(lp[i])
			qg[i] = 0
			if p > 0 {
				lm := logAddExp(la+lp[i], l1a+lq[i])
				d += p * (lp[i] - lm)
				// q·g = −(1−α)·p·q/m, with q/m = exp(lq − lm).
				qg[i] = -(1 - alpha) * p * math.Exp(lq[i]-lm)
			}
		}
	case kdrt.SkewReverseKL: // m = (1−α)p + αq; g = log q − log m + 1 − α·q/m
		la, l1a := math.Log(alpha), math.Log(1-alpha)
		for i := range lq {
			q := math.Exp(lq[i])
			qg[i] = 0
			if q > 0 {
				lm := logAddExp(l1a+lp[i], la+lq[i])
				d += q * (lq[i] - lm)
				qg[i] = q * (lq[i] - lm - alpha*math.Exp(lq[i]-lm))
			}
		}
	}
	return d
}

// sumOf is Σ x.
func sumOf(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v
	}
	return s
}

// softmaxChain turns q·g into ∂D/∂s_j = (1/τ)·(q_j·g_j − q_j·Σ_i q_i·g_i) and
// adds it, times w, into ds.
func softmaxChain[F Float](ds []F, qg, lq []float64, w, invT float64) {
	s := sumOf(qg)
	for j := range qg {
		ds[j] += F(w * invT * (qg[j] - math.Exp(lq[j])*s))
	}
}

// divergenceRows is the dense Divergence over rows: student [N, Vs], teacher
// [N, Vt], the first V columns of each compared.
func divergenceRows[F Float](losses, dstudent, student, teacher, weights []F, N, Vs, Vt int, p kdrt.DivergenceParams) {
	V := p.Vocab
	if V == 0 {
		V = Vs
	}
	invT := 1 / float64(p.Temperature)
	beta, alpha := float64(p.Beta), float64(p.Alpha)
	parallelFor(N, 30*V, func(lo, hi int) {
		lp, lq, qg := make([]float64, V), make([]float64, V), make([]float64, V)
		for n := lo; n < hi; n++ {
			w := float64(weights[n])
			if w == 0 {
				losses[n] = 0
				continue
			}
			logSoftmaxRow(lp, teacher[n*Vt:n*Vt+V], invT)
			logSoftmaxRow(lq, student[n*Vs:n*Vs+V], invT)
			losses[n] = F(w * binDivergence(qg, lp, lq, p.Kind, beta, alpha))
			if dstudent != nil {
				softmaxChain(dstudent[n*Vs:n*Vs+V], qg, lq, w, invT)
			}
		}
	})
}

// sparseDivergenceRows is SparseDivergence: the teacher is K (id, logprob)
// pairs per row.
func sparseDivergenceRows[F Float](losses, dstudent, student []F, ids []int32, logprobs, tails, weights []F, N, V, K int, p kdrt.DivergenceParams) {
	invT := 1 / float64(p.Temperature)
	beta, alpha := float64(p.Beta), float64(p.Alpha)
	bins := K
	if p.Tail == kdrt.TailBucket {
		bins = K + 1
	}
	parallelFor(N, 30*V, func(lo, hi int) {
		ls := make([]float64, V)
		lp, lq, qg := make([]float64, bins), make([]float64, bins), make([]float64, bins)
		inTop := make([]bool, V)
		for n := lo; n < hi; n++ {
			w := float64(weights[n])
			if w == 0 {
				losses[n] = 0
				continue
			}
			rowIDs, rowLP := ids[n*K:(n+1)*K], logprobs[n*K:(n+1)*K]
			logSoftmaxRow(ls, student[n*V:(n+1)*V], invT)
			for k, id := range rowIDs {
				lp[k], lq[k] = float64(rowLP[k]), ls[id]
			}
			if p.Tail == kdrt.Renormalize {
				renormalizeLog(lp)
				renormalizeLog(lq)
			} else {
				if tails != nil {
					// The teacher's own measure of its tail: the K+1 bins,
					// renormalized, are the teacher as the cache knows it.
					lp[K] = float64(tails[n])
					if K == V {
						lp[K] = negInf
					}
					renormalizeLog(lp)
				} else {
					// Teacher tail: 1 − Σ top-k, clamped against rounding. A
					// confident teacher's tail (1e-9) is below float32's
					// resolution near 1; the float64 sum keeps it.
					var pt float64
					for _, v := range lp[:K] {
						pt += math.Exp(v)
					}
					// When ids lie outside the top-k the tail is floored at
					// tailFloor: a softmax over finite logits never gives a bin
					// exactly zero mass, and without the floor every reverse
					// divergence would be infinite whenever rounding makes the
					// top-k sum to 1.
					if K < V {
						lp[K] = math.Log(math.Max(tailFloor, 1-pt))
					} else {
						lp[K] = negInf
					}
				}
				// Student tail: the mass of every id outside the top-k, summed
				// directly (1 − Σ q_k would cancel when the top-k holds nearly all).
				for _, id := range rowIDs {
					inTop[id] = true
				}
				mx := negInf
				for j, v := range ls {
					if !inTop[j] {
						mx = max(mx, v)
					}
				}
				var sum float64
				if !math.IsInf(mx, -1) {
					for j, v := range ls {
						if !inTop[j] {
							sum += math.Exp(v - mx)
						}
					}
				}
				lq[K] = mx + math.Log(sum)
				for _, id := range rowIDs {
					inTop[id] = false
				}
			}
			losses[n] = F(w * binDivergence(qg, lp, lq, p.Kind, beta, alpha))
			if dstudent == nil {
				continue
			}
			ds := dstudent[n*V : (n+1)*V]
			s := sumOf(qg)
			if p.Tail == kdrt.Renormalize {
				// Only the k ids are in the renormalized student's softmax.
				for k, id := range rowIDs {
					ds[id] += F(w * invT * (qg[k] - math.Exp(lq[k])*s))
				}
				continue
			}
			// Tail bucket: every id outside the top-k shares the tail bin's
			// g, so its gradient is (1/τ)·q_j·(g_tail − s), with
			// g_tail = qg[K]/q_tail.
			gTail := 0.0
			if qt := math.Exp(lq[K]); qt > 0 {
				gTail = qg[K] / qt
			}
			for _, id := range rowIDs {
				inTop[id] = true
			}
			c := w * invT * (gTail - s)
			for j, v := range ls {
				if !inTop[j] {
					ds[j] += F(c * math.Exp(v))
				}
			}
			for k, id := range rowIDs {
				inTop[id] = false
				ds[id] += F(w * invT * (qg[k] - math.Exp(lq[k])*s))
			}
		}
	})
}

// renormalizeLog subtracts logsumexp so the bins' probabilities sum to 1.
func renormalizeLog(l []float64) {
	lse := logSumExp(l)
	for i := range l {
		l[i] -= lse
	}
}

// DivergenceRows64 and SparseDivergenceRows64 are the float64 instances of
// the algorithms behind Divergence and SparseDivergence (the same generic
// code), on plain slices. They exist for tests that need the CPU's own
// computation without float32 rounding of inputs and outputs (the CUDA
// conformance tests compare with these).
func DivergenceRows64(losses, dstudent, student, teacher, weights []float64, N, Vs, Vt int, p kdrt.DivergenceParams) {
	divergenceRows(losses, dstudent, student, teacher, weights, N, Vs, Vt, p)
}

// SparseDivergenceRows64: see DivergenceRows64. tails may be nil.
func SparseDivergenceRows64(losses, dstudent, student []float64, ids []int32, logprobs, tails, weights []float64, N, V, K int, p kdrt.DivergenceParams) {
	sparseDivergenceRows(losses, dstudent, student, ids, logprobs, tails, weights, N, V, K, p)
}
