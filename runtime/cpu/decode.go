package cpu

import (
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// attentionDecode: one query at position pos against cached keys/values.
func attentionDecode[F Float](out, q, kc, vc []F, p kdrt.AttentionParams, pos int) {
	NH, NKV, HD := p.NH, p.NKV, p.HD
	group := NH / NKV
	lo := visibleFrom(pos, p.Window)
	ks := NKV * HD
	parallelFor(NH, 4*(pos+1)*HD, func(h0, h1 int) {
		w := make([]F, pos+1)
		for h := h0; h < h1; h++ {
			kh := h / group
			qh := q[h*HD : (h+1)*HD]
			mx := F(math.Inf(-1))
			for s := lo; s <= pos; s++ {
				var d F
				k := kc[s*ks+kh*HD : s*ks+(kh+1)*HD]
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
			o := out[h*HD : (h+1)*HD]
			clear(o)
			for s := lo; s <= pos; s++ {
				v := vc[s*ks+kh*HD : s*ks+(kh+1)*HD]
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
	if p.NKV <= 0 || p.NH%p.NKV != 0 || q.Numel() != p.NH*p.HD || out.Numel() != q.Numel() ||
		kCache.Cols() != p.NKV*p.HD || vCache.Numel() != kCache.Numel() || pos < 0 || pos >= kCache.Rows() {
		panic(fmt.Sprintf("cpu: attention decode %+v at %d: shapes of %v %v %v %v do not agree", p, pos, out, q, kCache, vCache))
	}
	attentionDecode(Float32s(out), Float32s(q), Float32s(kCache), Float32s(vCache), p, pos)
}
