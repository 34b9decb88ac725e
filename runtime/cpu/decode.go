package cpu

import (
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// attentionDecode: query position pos of each sequence against its cached
// keys/values (sequence b's at rows b·Tmax + s).
func attentionDecode[F Float](out, q, kc, vc []F, p kdrt.AttentionParams, pos, Tmax int) {
	B, NH, NKV, HD := max(p.B, 1), p.NH, p.NKV, p.HD
	group := NH / NKV
	ks := NKV * HD
	parallelFor(B*NH, 4*(pos+1)*HD, func(i0, i1 int) {
		w := make([]F, pos+1)
		for bh := i0; bh < i1; bh++ {
			b, h := bh/NH, bh%NH
			lo := visibleFrom(pos, p.Window)
			if p.KeyStart != nil {
				lo = max(lo, p.KeyStart[b])
			}
			kh := h / group
			qh := q[(b*NH+h)*HD : (b*NH+h+1)*HD]
			o := out[(b*NH+h)*HD : (b*NH+h+1)*HD]
			clear(o)
			if lo > pos {
				continue
			}
			base := b * Tmax * ks
			mx := F(math.Inf(-1))
			for s := lo; s <= pos; s++ {
				var d F
				k := kc[base+s*ks+kh*HD : base+s*ks+(kh+1)*HD]
				for i := range qh {
					d += qh[i] * k[i]
				}
				w[s] = d * F(p.Scale)
				mx = max(mx, w[s])
			}
			var sum F
			for s := lo; s <= pos; s++ {
				w[s] = exp(w[s] - mx)
				sum += w[s]
			}
			for s := lo; s <= pos; s++ {
				v := vc[base+s*ks+kh*HD : base+s*ks+(kh+1)*HD]
				a := w[s] / sum
				for i := range o {
					o[i] += a * v[i]
				}
			}
		}
	})
}

// AttentionDecode implements runtime.Backend.
func (*Backend) AttentionDecode(out, q, kCache, vCache *kdrt.Tensor, p kdrt.AttentionParams, pos int) {
	B := max(p.B, 1)
	Tmax := kCache.Rows() / B
	if p.NKV <= 0 || p.NH%p.NKV != 0 || q.Numel() != B*p.NH*p.HD || out.Numel() != q.Numel() || kCache.Rows()%B != 0 ||
		kCache.Cols() != p.NKV*p.HD || vCache.Numel() != kCache.Numel() || pos < 0 || pos >= Tmax ||
		(p.KeyStart != nil && len(p.KeyStart) != B) {
		panic(fmt.Sprintf("cpu: attention decode %+v at %d: shapes of %v %v %v %v do not agree", p, pos, out, q, kCache, vCache))
	}
	sameFloat("attention decode", out, q, kCache, vCache)
	var f frame
	defer f.done()
	if kCache.DType == kdrt.BF16 {
		// Widen only the positions the query sees, not the whole cache.
		kc, vc := f.get(kCache.Numel()), f.get(vCache.Numel())
		rows := kCache.Cols()
		kb, vb := BF16Bits(kCache), BF16Bits(vCache)
		for b := range B {
			lo, hi := b*Tmax*rows, (b*Tmax+pos+1)*rows
			widen(kc[lo:hi], kb[lo:hi])
			widen(vc[lo:hi], vb[lo:hi])
		}
		attentionDecode(f.out(out), f.in(q), kc, vc, p, pos, Tmax)
		return
	}
	attentionDecode(f.out(out), f.in(q), Float32s(kCache), Float32s(vCache), p, pos, Tmax)
}
