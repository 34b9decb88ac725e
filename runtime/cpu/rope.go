package cpu

import "math"

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
