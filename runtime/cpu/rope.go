package cpu

import (
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/half"
)

// QKVBiasRoPE implements runtime.Backend: the column blocks of qkv plus
// the bias, then the rotation.
func (b *Backend) QKVBiasRoPE(q, k, v, qkv, bias, pos, invFreq *kdrt.Tensor) {
	checkQKV("qkv bias rope", qkv, bias, q, k, v)
	sameFloat("qkv bias rope", qkv, bias, q, k, v)
	var f frame
	defer f.done()
	W, qkvs, bs := qkv.Cols(), f.in(qkv), f.in(bias)
	off := 0
	for i, t := range []*kdrt.Tensor{q, k, v} {
		x, c := f.out(t), t.Cols()
		for n := range t.Rows() {
			copy(x[n*c:(n+1)*c], qkvs[n*W+off:n*W+off+c])
			if bias != nil {
				for i, bv := range bs[off : off+c] {
					x[n*c+i] += bv
				}
			}
		}
		// Rotated before rounding: the GPU's one pass stores q and k once.
		if invFreq != nil && i < 2 {
			HD := 2 * invFreq.Numel()
			rope(x, Int32s(pos), Float32s(invFreq), t.Rows(), c/HD, HD, false)
		}
		off += c
	}
}

// QKVBiasRoPEBackward implements runtime.Backend: the inverse rotation of
// copies of dq and dk, gathered with dv into dqkv, and the bias's gradient.
func (b *Backend) QKVBiasRoPEBackward(dqkv, dbias, dq, dk, dv, pos, invFreq *kdrt.Tensor) {
	checkQKV("qkv bias rope backward", dqkv, dbias, dq, dk, dv)
	gradFloat("qkv bias rope backward", sameFloat("qkv bias rope backward", dqkv, dq, dk, dv), dbias)
	var f frame
	defer f.done()
	W, out := dqkv.Cols(), f.out(dqkv)
	off := 0
	for i, t := range []*kdrt.Tensor{dq, dk, dv} {
		c := t.Cols()
		x := append([]float32(nil), f.in(t)...)
		if invFreq != nil && i < 2 {
			HD := 2 * invFreq.Numel()
			rope(x, Int32s(pos), Float32s(invFreq), t.Rows(), c/HD, HD, true)
		}
		for n := range t.Rows() {
			copy(out[n*W+off:n*W+off+c], x[n*c:(n+1)*c])
		}
		off += c
	}
	if dbias != nil {
		if dqkv.DType == kdrt.BF16 {
			// The bias gradient sums dqkv as stored, as the GPU's pass does.
			for i, v := range out {
				out[i] = half.BF16ToF32(half.F32ToBF16(v))
			}
		}
		biasBackward(f.out(dbias), out, dqkv.Rows(), W)
	}
}

// checkQKV panics unless q [N, ·], k and v [N, ·] (of one width) are the
// column blocks of qkv [N, W] and bias (when given) has W elements.
func checkQKV(op string, qkv, bias, q, k, v *kdrt.Tensor) {
	N := qkv.Rows()
	if q.Rows() != N || k.Rows() != N || v.Rows() != N || v.Cols() != k.Cols() || q.Cols()+2*k.Cols() != qkv.Cols() ||
		(bias != nil && bias.Numel() != qkv.Cols()) {
		panic(fmt.Sprintf("cpu: %s: %v is not [%v %v %v] (bias %v)", op, qkv, q, k, v, bias))
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
