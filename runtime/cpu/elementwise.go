package cpu

import "math"

// addBias: y[N,C] += bias[C].
func addBias[F Float](y, bias []F, N, C int) {
	parallelFor(N, C, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			row := y[n*C : (n+1)*C]
			for i := range row {
				row[i] += bias[i]
			}
		}
	})
}

// biasBackward: dbias[C] += Σ_n dy[n, :].
func biasBackward[F Float](dbias, dy []F, N, C int) {
	columnsAccumulate(dbias, N, C, func(n, i int) F { return dy[n*C+i] })
}

// add: dst = a + b.
func add[F Float](dst, a, b []F) {
	parallelFor(len(dst), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dst[i] = a[i] + b[i]
		}
	})
}

// scale: x *= s.
func scale[F Float](x []F, s F) {
	parallelFor(len(x), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			x[i] *= s
		}
	})
}

// sumSquares returns Σ x² accumulated in float64.
func sumSquares[F Float](x []F) float64 {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return s
}

// swigluForward: out = silu(gate)·up, silu(g) = g·σ(g).
func swigluForward[F Float](out, gate, up []F) {
	parallelFor(len(out), 20, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g := gate[i]
			out[i] = g / (1 + exp(-g)) * up[i]
		}
	})
}

// swigluBackward writes dgate = dout·up·σ(g)·(1 + g·(1−σ(g))) and
// dup = dout·silu(g).
func swigluBackward[F Float](dgate, dup, dout, gate, up []F) {
	parallelFor(len(dout), 24, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g := gate[i]
			s := 1 / (1 + exp(-g))
			dgate[i] = dout[i] * up[i] * s * (1 + g*(1-s))
			dup[i] = dout[i] * g * s
		}
	})
}

// geluC is sqrt(2/π), the constant of GELU's tanh approximation.
var geluC = math.Sqrt(2 / math.Pi)

// geluForward: out = ½x(1 + tanh(√(2/π)(x + 0.044715x³))), GPT-2's gelu_new.
func geluForward[F Float](out, x []F) {
	c := F(geluC)
	parallelFor(len(out), 20, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			v := x[i]
			out[i] = 0.5 * v * (1 + tanh(c*(v+0.044715*v*v*v)))
		}
	})
}

// geluBackward accumulates dx += dout·gelu'(x).
func geluBackward[F Float](dx, dout, x []F) {
	c := F(geluC)
	parallelFor(len(dx), 24, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			v := x[i]
			u := c * (v + 0.044715*v*v*v)
			t := tanh(u)
			du := c * (1 + 3*0.044715*v*v)
			dx[i] += dout[i] * (0.5*(1+t) + 0.5*v*(1-t*t)*du)
		}
	})
}
