package cpu

import (
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// attentionForward computes causal grouped-query attention for q, out
// [B, T, NH, HD] and k, v [B, T, NKV, HD], writing the softmax probabilities to
// probs [B, NH, T, T] (zero above the diagonal and outside the window).
func attentionForward[F Float](out, probs, q, k, v []F, p kdrt.AttentionParams) {
	B, T, NH, NKV, HD := p.B, p.T, p.NH, p.NKV, p.HD
	group := NH / NKV
	qs, ks := NH*HD, NKV*HD // row strides of q/out and k/v
	parallelFor(B*NH, 4*T*T*HD, func(lo, hi int) {
		for bh := lo; bh < hi; bh++ {
			b, h := bh/NH, bh%NH
			kh := h / group
			P := probs[bh*T*T : (bh+1)*T*T]
			qo, ko := b*T*qs+h*HD, b*T*ks+kh*HD
			// S = scale · Q Kᵀ, then the masked softmax row by row.
			gemm(false, true, T, T, HD, F(p.Scale), q[qo:], qs, k[ko:], ks, 0, P, T)
			for t := range T {
				row := P[t*T : (t+1)*T]
				first := visibleFrom(t, p.Window)
				if p.KeyStart != nil {
					first = max(first, p.KeyStart[b])
				}
				if first > t { // a padding query: it sees nothing
					clear(row)
					continue
				}
				mx := F(math.Inf(-1))
				for s := first; s <= t; s++ {
					mx = max(mx, row[s])
				}
				var sum F
				for s := first; s <= t; s++ {
					row[s] = exp(row[s] - mx)
					sum += row[s]
				}
				for s := range row {
					if s < first || s > t {
						row[s] = 0
					} else {
						row[s] /= sum
					}
				}
			}
			gemm(false, false, T, HD, T, 1, P, T, v[ko:], ks, 0, out[qo:], qs)
		}
	})
}

// visibleFrom is the first key position query t sees.
func visibleFrom(t, window int) int {
	if window > 0 && t-window+1 > 0 {
		return t - window + 1
	}
	return 0
}

// attentionBackward accumulates dq, dk, dv. Work is split by (batch, key/value
// head) so that the query heads sharing a key/value head add into dk and dv
// from one goroutine.
func attentionBackward[F Float](dq, dk, dv, dout, probs, q, k, v []F, p kdrt.AttentionParams) {
	B, T, NH, NKV, HD := p.B, p.T, p.NH, p.NKV, p.HD
	group := NH / NKV
	qs, ks := NH*HD, NKV*HD
	sc := F(p.Scale)
	parallelFor(B*NKV, 8*group*T*T*HD, func(lo, hi int) {
		dP := make([]F, T*T)
		for bk := lo; bk < hi; bk++ {
			b, kh := bk/NKV, bk%NKV
			ko := b*T*ks + kh*HD
			for h := kh * group; h < (kh+1)*group; h++ {
				P := probs[(b*NH+h)*T*T : (b*NH+h+1)*T*T]
				qo := b*T*qs + h*HD
				// dV += Pᵀ dO; dP = dO Vᵀ.
				gemm(true, false, T, HD, T, 1, P, T, dout[qo:], qs, 1, dv[ko:], ks)
				gemm(false, true, T, T, HD, 1, dout[qo:], qs, v[ko:], ks, 0, dP, T)
				// dS = P ⊙ (dP − rowsum(P ⊙ dP)), written over dP.
				for t := range T {
					pr, dr := P[t*T:(t+1)*T], dP[t*T:(t+1)*T]
					var dot F
					for s := range pr {
						dot += pr[s] * dr[s]
					}
					for s := range pr {
						dr[s] = pr[s] * (dr[s] - dot)
					}
				}
				// dQ += scale · dS K; dK += scale · dSᵀ Q.
				gemm(false, false, T, HD, T, sc, dP, T, k[ko:], ks, 1, dq[qo:], qs)
				gemm(true, false, T, HD, T, sc, dP, T, q[qo:], qs, 1, dk[ko:], ks)
			}
		}
	})
}
