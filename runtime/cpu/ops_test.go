package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
)

func TestRMSNormGrad(t *testing.T) {
	for _, sz := range [][2]int{{1, 1}, {3, 5}, {4, 7}} {
		N, C := sz[0], sz[1]
		r := rand.New(rand.NewPCG(1, uint64(C)))
		x, w, g := randn(r, N*C, 1), randn(r, C, 1), randn(r, N*C, 1)
		const eps = 1e-5
		out, rstd := make([]float64, N*C), make([]float64, N)
		loss := func() float64 { rmsnormForward(out, rstd, x, w, N, C, eps); return dot64(out, g) }
		loss()
		// Independent forward reference.
		for n := range N {
			var ss float64
			for i := range C {
				ss += x[n*C+i] * x[n*C+i]
			}
			for i := range C {
				want := x[n*C+i] / math.Sqrt(ss/float64(C)+eps) * w[i]
				if math.Abs(out[n*C+i]-want) > 1e-12 {
					t.Fatalf("rmsnorm forward [%d,%d] = %g, want %g", n, i, out[n*C+i], want)
				}
			}
		}
		dx, dw := make([]float64, N*C), make([]float64, C)
		rmsnormBackward(dx, dw, g, x, w, rstd, N, C)
		checkGrad(t, "rmsnorm dx", x, dx, loss)
		checkGrad(t, "rmsnorm dw", w, dw, loss)
	}
}

func TestLayerNormGrad(t *testing.T) {
	for _, sz := range [][2]int{{1, 2}, {3, 5}, {2, 9}} {
		N, C := sz[0], sz[1]
		r := rand.New(rand.NewPCG(2, uint64(C)))
		x, w, b, g := randn(r, N*C, 1), randn(r, C, 1), randn(r, C, 1), randn(r, N*C, 1)
		const eps = 1e-5
		out, mean, rstd := make([]float64, N*C), make([]float64, N), make([]float64, N)
		loss := func() float64 { layernormForward(out, mean, rstd, x, w, b, N, C, eps); return dot64(out, g) }
		loss()
		for n := range N {
			var m, v float64
			for i := range C {
				m += x[n*C+i] / float64(C)
			}
			for i := range C {
				v += (x[n*C+i] - m) * (x[n*C+i] - m) / float64(C)
			}
			for i := range C {
				want := (x[n*C+i]-m)/math.Sqrt(v+eps)*w[i] + b[i]
				if math.Abs(out[n*C+i]-want) > 1e-12 {
					t.Fatalf("layernorm forward [%d,%d] = %g, want %g", n, i, out[n*C+i], want)
				}
			}
		}
		dx, dw, db := make([]float64, N*C), make([]float64, C), make([]float64, C)
		layernormBackward(dx, dw, db, g, x, w, mean, rstd, N, C)
		checkGrad(t, "layernorm dx", x, dx, loss)
		checkGrad(t, "layernorm dw", w, dw, loss)
		checkGrad(t, "layernorm db", b, db, loss)
	}
}

// naiveMatMul is the textbook triple loop, the reference for gemm.
func naiveMatMul(a, b []float64, rowsA, colsA, rowsB, colsB int, tA, tB bool) []float64 {
	at := func(i, k int) float64 {
		if tA {
			return a[k*colsA+i]
		}
		return a[i*colsA+k]
	}
	bt := func(k, j int) float64 {
		if tB {
			return b[j*colsB+k]
		}
		return b[k*colsB+j]
	}
	m, kk := rowsA, colsA
	if tA {
		m, kk = colsA, rowsA
	}
	n := colsB
	if tB {
		n = rowsB
	}
	c := make([]float64, m*n)
	for i := range m {
		for j := range n {
			for k := range kk {
				c[i*n+j] += at(i, k) * bt(k, j)
			}
		}
	}
	return c
}

func TestMatMulAgainstNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	be := New()
	m, k, n := 5, 7, 3
	for _, tA := range []bool{false, true} {
		for _, tB := range []bool{false, true} {
			ra, ca := m, k
			if tA {
				ra, ca = k, m
			}
			rb, cb := k, n
			if tB {
				rb, cb = n, k
			}
			a, b, c0 := randn(r, ra*ca, 1), randn(r, rb*cb, 1), randn(r, m*n, 1)
			want := naiveMatMul(a, b, ra, ca, rb, cb, tA, tB)
			for i := range want {
				want[i] = 0.5*want[i] + 2*c0[i]
			}
			// float64 kernel.
			c := append([]float64(nil), c0...)
			matmul(c, a, b, ra, ca, rb, cb, tA, tB, 0.5, 2)
			assertClose(t, "matmul f64", c, want, 1e-12)
			// float32 through the backend.
			at, _ := be.Alloc("a", kdrt.F32, ra, ca)
			bt, _ := be.Alloc("b", kdrt.F32, rb, cb)
			ct, _ := be.Alloc("c", kdrt.F32, m, n)
			copy(Float32s(at), to32(a))
			copy(Float32s(bt), to32(b))
			copy(Float32s(ct), to32(c0))
			be.MatMul(ct, at, bt, tA, tB, 0.5, 2)
			assertClose(t, "matmul f32", to64(Float32s(ct)), want, 1e-5)
		}
	}
}

func TestBiasAndAddGrad(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	N, C := 4, 3
	y0, bias, g := randn(r, N*C, 1), randn(r, C, 1), randn(r, N*C, 1)
	y := make([]float64, N*C)
	loss := func() float64 { copy(y, y0); addBias(y, bias, N, C); return dot64(y, g) }
	db := make([]float64, C)
	biasBackward(db, g, N, C)
	checkGrad(t, "bias", bias, db, loss)

	a, b := randn(r, 6, 1), randn(r, 6, 1)
	dst := make([]float64, 6)
	add(dst, a, b)
	for i := range dst {
		if dst[i] != a[i]+b[i] {
			t.Fatalf("add[%d] = %g, want %g", i, dst[i], a[i]+b[i])
		}
	}
}

func TestEmbeddingGrad(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	V, C := 6, 4
	ids := []int32{2, 0, 2, 5, 2} // repeated ids must accumulate
	table, g := randn(r, V*C, 1), randn(r, len(ids)*C, 1)
	out := make([]float64, len(ids)*C)
	loss := func() float64 { embeddingForward(out, ids, table, C); return dot64(out, g) }
	loss()
	for n, id := range ids {
		for i := range C {
			if out[n*C+i] != table[int(id)*C+i] {
				t.Fatalf("embedding row %d col %d wrong", n, i)
			}
		}
	}
	dt := make([]float64, V*C)
	embeddingBackward(dt, g, ids, C)
	checkGrad(t, "embedding", table, dt, loss)
}

func TestRoPE(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	N, H, HD := 5, 3, 6
	pos := []int32{0, 1, 2, 7, 1000}
	invFreq := make([]float32, HD/2)
	for i := range invFreq {
		invFreq[i] = float32(1 / math.Pow(10000, float64(2*i)/float64(HD)))
	}
	x0 := randn(r, N*H*HD, 1)
	x := append([]float64(nil), x0...)
	rope(x, pos, invFreq, N, H, HD, false)
	// Reference: HF's q·cos + rotate_half(q)·sin with cos/sin duplicated over halves.
	for n := range N {
		for h := range H {
			base := n*H*HD + h*HD
			for j := range HD {
				ang := float64(float32(pos[n]) * invFreq[j%(HD/2)])
				var rot float64
				if j < HD/2 {
					rot = -x0[base+j+HD/2]
				} else {
					rot = x0[base+j-HD/2]
				}
				want := x0[base+j]*math.Cos(ang) + rot*math.Sin(ang)
				if math.Abs(x[base+j]-want) > 1e-12 {
					t.Fatalf("rope[%d,%d,%d] = %g, want %g", n, h, j, x[base+j], want)
				}
			}
		}
	}
	// The backward of a rotation is its inverse (its transpose).
	g := randn(r, N*H*HD, 1)
	dx := append([]float64(nil), g...)
	rope(dx, pos, invFreq, N, H, HD, true)
	xv := append([]float64(nil), x0...)
	loss := func() float64 {
		y := append([]float64(nil), xv...)
		rope(y, pos, invFreq, N, H, HD, false)
		return dot64(y, g)
	}
	checkGrad(t, "rope", xv, dx, loss)
}

func f32Tensor(be *Backend, name string, x []float64) *kdrt.Tensor {
	t, _ := be.Alloc(name, kdrt.F32, len(x))
	copy(Float32s(t), to32(x))
	return t
}

func TestSwiGLUGrad(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	n := 11
	gate, up, g := randn(r, n, 2), randn(r, n, 1), randn(r, n, 1)
	out := make([]float64, n)
	loss := func() float64 { swigluForward(out, gate, up); return dot64(out, g) }
	loss()
	for i := range out {
		want := gate[i] / (1 + math.Exp(-gate[i])) * up[i]
		if math.Abs(out[i]-want) > 1e-12 {
			t.Fatalf("swiglu[%d] = %g, want %g", i, out[i], want)
		}
	}
	dg, du := make([]float64, n), make([]float64, n)
	swigluBackward(dg, du, g, gate, up)
	checkGrad(t, "swiglu dgate", gate, dg, loss)
	checkGrad(t, "swiglu dup", up, du, loss)
}

func TestGELUGrad(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	n := 13
	x, g := randn(r, n, 2), randn(r, n, 1)
	out := make([]float64, n)
	loss := func() float64 { geluForward(out, x); return dot64(out, g) }
	loss()
	for i := range out {
		v := x[i]
		want := 0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*v*v*v)))
		if math.Abs(out[i]-want) > 1e-12 {
			t.Fatalf("gelu[%d] = %g, want %g", i, out[i], want)
		}
	}
	dx := make([]float64, n)
	geluBackward(dx, g, x)
	checkGrad(t, "gelu", x, dx, loss)
}

func TestCrossEntropyGrad(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 10))
	N, V := 4, 7
	logits := randn(r, N*V, 3)
	logits[1*V+3] = 40 // a peaked row
	targets := []int32{3, 3, kdrt.IgnoreIndex, 0}
	losses := make([]float64, N)
	const sc = 0.25
	loss := func() float64 {
		crossEntropyForward(losses, logits, targets, N, V)
		var s float64
		for _, l := range losses {
			s += sc * l
		}
		return s
	}
	loss()
	for n, tg := range targets {
		if tg == kdrt.IgnoreIndex {
			if losses[n] != 0 {
				t.Fatalf("ignored row %d has loss %g", n, losses[n])
			}
			continue
		}
		var z float64
		for i := range V {
			z += math.Exp(logits[n*V+i])
		}
		want := math.Log(z) - logits[n*V+int(tg)]
		if math.Abs(losses[n]-want) > 1e-12*max(1, math.Abs(want)) {
			t.Fatalf("ce row %d = %g, want %g", n, losses[n], want)
		}
	}
	dl := make([]float64, N*V)
	crossEntropyBackward(dl, logits, targets, nil, N, V, sc)
	checkGrad(t, "cross entropy", logits, dl, loss)

	// −Inf logits (masked vocabulary entries) give no NaN.
	masked := []float64{0, math.Inf(-1), 1, math.Inf(-1)}
	l := make([]float64, 1)
	crossEntropyForward(l, masked, []int32{2}, 1, 4)
	d := make([]float64, 4)
	crossEntropyBackward(d, masked, []int32{2}, nil, 1, 4, 1)
	for _, v := range append(l, d...) {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			t.Fatalf("masked logits gave %v, %v", l, d)
		}
	}
}

func TestAdamWMatchesFormula(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	n := 9
	p, m, v := randn(r, n, 1), make([]float64, n), make([]float64, n)
	h := kdrt.AdamWParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
	// Reference written from Loshchilov & Hutter's algorithm as torch states it.
	rp, rm, rv := append([]float64(nil), p...), make([]float64, n), make([]float64, n)
	b1, b2, lr, wd := float64(h.Beta1), float64(h.Beta2), float64(h.LR), float64(h.WeightDecay)
	for step := 1; step <= 3; step++ {
		g := randn(r, n, 1)
		h.Step = step
		adamw(p, g, m, v, h, 1)
		for i := range rp {
			rp[i] -= lr * wd * rp[i]
			rm[i] = b1*rm[i] + (1-b1)*g[i]
			rv[i] = b2*rv[i] + (1-b2)*g[i]*g[i]
			mhat := rm[i] / (1 - math.Pow(b1, float64(step)))
			vhat := rv[i] / (1 - math.Pow(b2, float64(step)))
			rp[i] -= lr * mhat / (math.Sqrt(vhat) + float64(h.Eps))
		}
	}
	assertClose(t, "adamw", p, rp, 1e-10)
}

func TestCrossEntropyWeightedGrad(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 12))
	N, V := 3, 5
	logits := randn(r, N*V, 2)
	targets := []int32{1, 4, 0}
	w := []float64{0.5, -2, 0}
	losses := make([]float64, N)
	loss := func() float64 {
		crossEntropyForward(losses, logits, targets, N, V)
		return dot64(losses, w) * 3
	}
	dl := make([]float64, N*V)
	crossEntropyBackward(dl, logits, targets, w, N, V, 3)
	checkGrad(t, "weighted cross entropy", logits, dl, loss)
}
