package cpu

import (
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// QKVBiasRoPE implements runtime.Backend: the biases, then the rotation.
func (b *Backend) QKVBiasRoPE(q, k, v, bq, bk, bv, pos, invFreq *kdrt.Tensor) {
	checkQKV("qkv bias rope", q, k, v, bq, bk, bv)
	for _, p := range [][2]*kdrt.Tensor{{q, bq}, {k, bk}, {v, bv}} {
		if p[1] != nil {
			addBias(Float32s(p[0]), Float32s(p[1]), p[0].Rows(), p[0].Cols())
		}
	}
	if invFreq != nil {
		b.RoPE(q, pos, invFreq)
		b.RoPE(k, pos, invFreq)
	}
}

// QKVBiasRoPEBackward implements runtime.Backend: the inverse rotation, then
// the biases' gradients.
func (b *Backend) QKVBiasRoPEBackward(dq, dk, dv, dbq, dbk, dbv, pos, invFreq *kdrt.Tensor) {
	checkQKV("qkv bias rope backward", dq, dk, dv, dbq, dbk, dbv)
	if invFreq != nil {
		b.RoPEBackward(dq, pos, invFreq)
		b.RoPEBackward(dk, pos, invFreq)
	}
	for _, p := range [][2]*kdrt.Tensor{{dq, dbq}, {dk, dbk}, {dv, dbv}} {
		if p[1] != nil {
			biasBackward(Float32s(p[1]), Float32s(p[0]), p[0].Rows(), p[0].Cols())
		}
	}
}

// checkQKV panics unless q, k, v have one row count and every bias given
// has its tensor's column count.
func checkQKV(op string, q, k, v, bq, bk, bv *kdrt.Tensor) {
	if k.Rows() != q.Rows() || v.Rows() != q.Rows() || v.Cols() != k.Cols() {
		panic(fmt.Sprintf("cpu: %s: %v %v %v do not agree", op, q, k, v))
	}
	for _, p := range [][2]*kdrt.Tensor{{q, bq}, {k, bk}, {v, bv}} {
		if p[1] != nil && p[1].Numel() != p[0].Cols() {
			panic(fmt.Sprintf("cpu: %s: bias %v should have %d elements (the columns of %v)", op, p[1], p[0].Cols(), p[0]))
		}
	}
}

// rope rotates x [N, H·HD] in place, in Hugging Face Llama's "rotate half"
// layout: within each head, element i < HD/2 pairs with element i + HD/2 and
// the pair turns by angle pos[n]·invFreq[i] (inverse = the opposite turn).
// The angle is formed in float32, as transformers forms it, so positions in
// the thousands agree with PyTorch to fp32 rounding.
func rope[F Float](x []F, pos []int32, invFreq []float32, N, H, HD int, inverse bool) {
	half := HD / 2
	parallelFor(N, H*HD*4, func(lo, hi int) {
		cos, sin := make([]F, half), make([]F, half)
		for n := lo; n < hi; n++ {
			for i := range half {
				angle := float64(float32(pos[n]) * invFreq[i])
				s, c := math.Sincos(angle)
				cos[i], sin[i] = F(c), F(s)
				if inverse {
					sin[i] = -sin[i]
				}
			}
			for h := range H {
				head := x[n*H*HD+h*HD : n*H*HD+(h+1)*HD]
				for i := range half {
					a, b := head[i], head[i+half]
					head[i] = a*cos[i] - b*sin[i]
					head[i+half] = b*cos[i] + a*sin[i]
				}
			}
		}
	})
}
