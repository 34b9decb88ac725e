package cpu

import (
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// Attention is the FlashAttention-2 algorithm (Dao, 2023) on the CPU: the
// forward walks the keys a tile at a time with an online softmax and saves
// only the output and one log-sum-exp per query row; the backward recomputes
// the probabilities tile by tile from that log-sum-exp. Memory for what the
// backward needs is O(B·NH·T), never the [T × T] probabilities, and it is the
// same algorithm the CUDA kernels (kernels/attention.cu) run, so the CPU is
// their reference step for step.
//
// Shapes: q, out, dq, dout [B, T, NH, HD]; k, v, dk, dv [B, T, NKV, HD];
// lse [B, NH, T]. Query head h reads key/value head h / (NH/NKV).

// attnTile is the number of query rows and of keys in one tile: 64×64
// scores (32 KiB of float64 in the reference tests) stay in cache.
const attnTile = 64

// attnFirst is the first key position query t of sequence b sees: keys
// s ∈ [attnFirst, t] are visible; attnFirst > t means none (left padding).
func attnFirst(t, b int, p kdrt.AttentionParams) int {
	lo := visibleFrom(t, p.Window)
	if p.KeyStart != nil {
		lo = max(lo, p.KeyStart[b])
	}
	return lo
}

// visibleFrom is the first key position query t sees under the sliding
// window alone.
func visibleFrom(t, window int) int {
	if window > 0 && t-window+1 > 0 {
		return t - window + 1
	}
	return 0
}

// attentionForward computes out and lse with query and key tiles of tile
// rows. lse[b, h, t] = log Σ_s exp(scale·q·k[s]) over the visible keys, −Inf
// for a query that sees none (its output row is zero).
func attentionForward[F Float](out, lse, q, k, v []F, p kdrt.AttentionParams, tile int) {
	B, T, NH, NKV, HD := p.B, p.T, p.NH, p.NKV, p.HD
	group := NH / NKV
	qs, ks := NH*HD, NKV*HD // row strides of q/out and k/v
	nt := (T + tile - 1) / tile
	negInf := F(math.Inf(-1))
	parallelFor(B*NH*nt, 4*tile*T*HD, func(lo, hi int) {
		S := make([]F, tile*tile)
		m, l := make([]F, tile), make([]F, tile)
		for i := lo; i < hi; i++ {
			bh, it := i/nt, i%nt
			b, h := bh/NH, bh%NH
			t0 := it * tile
			t1 := min(t0+tile, T)
			rows := t1 - t0
			qo, ko := (b*T+t0)*qs+h*HD, b*T*ks+(h/group)*HD
			for r := range rows {
				clear(out[qo+r*qs : qo+r*qs+HD])
				m[r], l[r] = negInf, 0
			}
			// attnFirst does not decrease with t: the tile's first row sees
			// the earliest key any of its rows sees.
			for s0 := attnFirst(t0, b, p); s0 < t1; s0 += tile {
				cols := min(s0+tile, t1) - s0
				gemm(false, true, rows, cols, HD, F(p.Scale), q[qo:], qs, k[ko+s0*ks:], ks, 0, S, tile)
				for r := range rows {
					t := t0 + r
					first := attnFirst(t, b, p)
					row := S[r*tile : r*tile+cols]
					// The visible columns of this row: [c0, c1).
					c0, c1 := max(first-s0, 0), min(t-s0+1, cols)
					mx := m[r]
					for c := c0; c < c1; c++ {
						mx = max(mx, row[c])
					}
					if mx == negInf { // nothing visible yet
						clear(row)
						continue
					}
					alpha := exp(m[r] - mx) // 0 when m[r] is −Inf
					var sum F
					for c := range row {
						if c < c0 || c >= c1 {
							row[c] = 0
							continue
						}
						row[c] = exp(row[c] - mx)
						sum += row[c]
					}
					m[r], l[r] = mx, l[r]*alpha+sum
					if alpha != 1 {
						o := out[qo+r*qs : qo+r*qs+HD]
						for d := range o {
							o[d] *= alpha
						}
					}
				}
				gemm(false, false, rows, HD, cols, 1, S, tile, v[ko+s0*ks:], ks, 1, out[qo:], qs)
			}
			L := lse[bh*T+t0 : bh*T+t1]
			for r := range rows {
				if l[r] == 0 {
					L[r] = negInf
					continue
				}
				o := out[qo+r*qs : qo+r*qs+HD]
				inv := 1 / l[r]
				for d := range o {
					o[d] *= inv
				}
				L[r] = m[r] + F(math.Log(float64(l[r])))
			}
		}
	})
}

// attentionBackward writes dq, dk, dv from dout, recomputing the
// probabilities P = exp(scale·q·k − lse) tile by tile (FlashAttention-2's
// backward): with D[t] = Σ_d dout[t,d]·out[t,d],
//
//	dV += Pᵀ dO,  dS = P ⊙ (dO Vᵀ − D),  dQ += scale·dS K,  dK += scale·dSᵀ Q.
//
// Work is split by (batch, key/value head), so that the query heads sharing
// a key/value head add into dk and dv from one goroutine, and each query
// head's dq is written by the goroutine of its key/value head.
func attentionBackward[F Float](dq, dk, dv, dout, out, lse, q, k, v []F, p kdrt.AttentionParams, tile int) {
	B, T, NH, NKV, HD := p.B, p.T, p.NH, p.NKV, p.HD
	group := NH / NKV
	qs, ks := NH*HD, NKV*HD
	sc := F(p.Scale)
	clear(dq[:B*T*qs])
	clear(dk[:B*T*ks])
	clear(dv[:B*T*ks])
	// D[b, h, t], laid out as lse.
	D := make([]F, B*NH*T)
	parallelFor(B*NH, 2*T*HD, func(lo, hi int) {
		for bh := lo; bh < hi; bh++ {
			b, h := bh/NH, bh%NH
			for t := range T {
				o := (b*T+t)*qs + h*HD
				var s F
				for d := range HD {
					s += dout[o+d] * out[o+d]
				}
				D[bh*T+t] = s
			}
		}
	})
	parallelFor(B*NKV, 10*group*T*T*HD, func(lo, hi int) {
		P, dP := make([]F, tile*tile), make([]F, tile*tile)
		for bk := lo; bk < hi; bk++ {
			b, kh := bk/NKV, bk%NKV
			ko := b*T*ks + kh*HD
			for s0 := 0; s0 < T; s0 += tile {
				s1 := min(s0+tile, T)
				cols := s1 - s0
				if p.KeyStart != nil && s1 <= p.KeyStart[b] {
					continue // left padding: no query sees these keys
				}
				// Queries that see a key of [s0, s1): t ≥ s0, and under a
				// window t − s < window for some s < s1.
				tEnd := T
				if p.Window > 0 {
					tEnd = min(T, s1-1+p.Window)
				}
				for h := kh * group; h < (kh+1)*group; h++ {
					bh := b*NH + h
					for t0 := s0; t0 < tEnd; t0 += tile {
						rows := min(t0+tile, tEnd) - t0
						qo := (b*T+t0)*qs + h*HD
						gemm(false, true, rows, cols, HD, sc, q[qo:], qs, k[ko+s0*ks:], ks, 0, P, tile)
						for r := range rows {
							t := t0 + r
							first, L := attnFirst(t, b, p), lse[bh*T+t]
							row := P[r*tile : r*tile+cols]
							for c := range row {
								if s := s0 + c; s < first || s > t {
									row[c] = 0
								} else {
									row[c] = exp(row[c] - L)
								}
							}
						}
						gemm(true, false, cols, HD, rows, 1, P, tile, dout[qo:], qs, 1, dv[ko+s0*ks:], ks)
						gemm(false, true, rows, cols, HD, 1, dout[qo:], qs, v[ko+s0*ks:], ks, 0, dP, tile)
						for r := range rows {
							Dt := D[bh*T+t0+r]
							pr, dr := P[r*tile:r*tile+cols], dP[r*tile:r*tile+cols]
							for c := range pr {
								dr[c] = pr[c] * (dr[c] - Dt)
							}
						}
						gemm(false, false, rows, HD, cols, sc, dP, tile, k[ko+s0*ks:], ks, 1, dq[qo:], qs)
						gemm(true, false, cols, HD, rows, sc, dP, tile, q[qo:], qs, 1, dk[ko+s0*ks:], ks)
					}
				}
			}
		}
	})
}

// Attention implements runtime.Backend.
func (*Backend) Attention(out, lse, q, k, v *kdrt.Tensor, p kdrt.AttentionParams) {
	checkAttention("attention", p, out, lse, q, k, v)
	sameFloat("attention", out, q, k, v)
	onlyF32("attention", lse)
	var f frame
	defer f.done()
	attentionForward(f.out(out), Float32s(lse), f.in(q), f.in(k), f.in(v), p, attnTile)
}

// AttentionBackward implements runtime.Backend.
func (*Backend) AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v *kdrt.Tensor, p kdrt.AttentionParams) {
	checkAttention("attention backward", p, out, lse, q, k, v)
	mustSameNumel("attention backward", dout, q)
	mustSameNumel("attention backward", dq, q)
	mustSameNumel("attention backward", dk, k)
	mustSameNumel("attention backward", dv, v)
	sameFloat("attention backward", dq, dk, dv, dout, out, q, k, v)
	onlyF32("attention backward", lse)
	var f frame
	defer f.done()
	attentionBackward(f.out(dq), f.out(dk), f.out(dv), f.in(dout), f.in(out), Float32s(lse),
		f.in(q), f.in(k), f.in(v), p, attnTile)
}

func checkAttention(op string, p kdrt.AttentionParams, out, lse, q, k, v *kdrt.Tensor) {
	ok := p.NKV > 0 && p.NH%p.NKV == 0 && p.B >= 0 && p.T >= 0 && p.HD >= 0 &&
		q.Numel() == p.B*p.T*p.NH*p.HD && out.Numel() == q.Numel() &&
		k.Numel() == p.B*p.T*p.NKV*p.HD && v.Numel() == k.Numel() &&
		lse.Numel() == p.B*p.NH*p.T && (p.KeyStart == nil || len(p.KeyStart) == p.B)
	if !ok {
		panic(fmt.Sprintf("cpu: %s %+v: shapes of %v %v %v %v %v do not agree (lse should be [B, NH, T])", op, p, out, lse, q, k, v))
	}
}
