package cpu

import (
	"fmt"
	"math"
	"slices"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// attentionDecode: the query of sequence b, at position at[b], against its
// cached keys/values (sequence b's at rows b·Tmax + s).
func attentionDecode[F Float](out, q, kc, vc []F, p kdrt.AttentionParams, at []int32, Tmax int) {
	B, NH, NKV, HD := max(p.B, 1), p.NH, p.NKV, p.HD
	group := NH / NKV
	ks := NKV * HD
	top := int(slices.Max(at))
	parallelFor(B*NH, 4*(top+1)*HD, func(i0, i1 int) {
		w := make([]F, top+1)
		for bh := i0; bh < i1; bh++ {
			b, h := bh/NH, bh%NH
			pos := int(at[b])
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
func (*Backend) AttentionDecode(out, q, kCache, vCache, at *kdrt.Tensor, p kdrt.AttentionParams) {
	B := max(p.B, 1)
	Tmax := kCache.Rows() / B
	if p.NKV <= 0 || p.NH%p.NKV != 0 || q.Numel() != B*p.NH*p.HD || out.Numel() != q.Numel() || kCache.Rows()%B != 0 ||
		kCache.Cols() != p.NKV*p.HD || vCache.Numel() != kCache.Numel() || at.DType != kdrt.I32 || at.Numel() != B ||
		(p.KeyStart != nil && len(p.KeyStart) != B) {
		panic(fmt.Sprintf("cpu: attention decode %+v: shapes of %v %v %v %v %v do not agree", p, out, q, kCache, vCache, at))
	}
	pos := Int32s(at)
	for b, s := range pos {
		if s < 0 || int(s) >= Tmax {
			panic(fmt.Sprintf("cpu: attention decode: sequence %d's position %d is outside its cache of %d positions", b, s, Tmax))
		}
	}
	sameFloat("attention decode", out, q, kCache, vCache)
	var f frame
	defer f.done()
	if kCache.DType == kdrt.BF16 {
		// Widen only the positions the queries see, not the whole cache.
		kc, vc := f.get(kCache.Numel()), f.get(vCache.Numel())
		rows := kCache.Cols()
		kb, vb := BF16Bits(kCache), BF16Bits(vCache)
		for b := range B {
			lo, hi := b*Tmax*rows, (b*Tmax+int(pos[b])+1)*rows
			widen(kc[lo:hi], kb[lo:hi])
			widen(vc[lo:hi], vb[lo:hi])
		}
		attentionDecode(f.out(out), f.in(q), kc, vc, p, pos, Tmax)
		return
	}
	attentionDecode(f.out(out), f.in(q), Float32s(kCache), Float32s(vCache), p, pos, Tmax)
}

// KVAppend implements runtime.Backend.
func (b *Backend) KVAppend(cache, src, at *kdrt.Tensor) {
	B := at.Numel()
	if at.DType != kdrt.I32 || B == 0 || cache.DType != src.DType || cache.Cols() != src.Cols() ||
		cache.Rows()%B != 0 || src.Rows()%B != 0 {
		panic(fmt.Sprintf("cpu: kv append of %v into %v at %v: shapes do not agree", src, cache, at))
	}
	Tmax, n := cache.Rows()/B, src.Rows()/B
	for s, p := range Int32s(at) {
		if p < 0 || int(p)+n > Tmax {
			panic(fmt.Sprintf("cpu: kv append: sequence %d's %d rows at position %d do not fit its cache of %d positions", s, n, p, Tmax))
		}
		dst := b.Slice(cache, s*Tmax+int(p), s*Tmax+int(p)+n)
		b.Copy(dst, b.Slice(src, s*n, (s+1)*n))
	}
}
