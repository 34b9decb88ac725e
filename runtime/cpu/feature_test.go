package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
)

func TestRowNormalizeGrad(t *testing.T) {
	for _, tc := range []struct {
		N, C int
		eps  float64
		tiny []int // rows scaled far below eps (clamped)
	}{
		{1, 1, 1e-12, nil},
		{3, 5, 1e-12, nil},
		{4, 7, 1e-8, nil},
		{5, 4, 0.1, []int{1, 3}},
	} {
		N, C, eps := tc.N, tc.C, tc.eps
		r := rand.New(rand.NewPCG(11, uint64(N*C)))
		x, g := randn(r, N*C, 1), randn(r, N*C, 1)
		for _, n := range tc.tiny {
			for i := range C {
				x[n*C+i] *= 1e-3
			}
		}
		out, norms := make([]float64, N*C), make([]float64, N)
		loss := func() float64 { rowNormalize(out, norms, x, N, C, eps); return dot64(out, g) }
		loss()
		// Independent forward reference: F.normalize(x, dim=-1, eps=eps).
		for n := range N {
			var ss float64
			for i := range C {
				ss += x[n*C+i] * x[n*C+i]
			}
			den := math.Max(math.Sqrt(ss), eps)
			if math.Abs(norms[n]-den) > 1e-15*den {
				t.Fatalf("row normalize norm[%d] = %g, want %g", n, norms[n], den)
			}
			for i := range C {
				if want := x[n*C+i] / den; math.Abs(out[n*C+i]-want) > 1e-14 {
					t.Fatalf("row normalize [%d,%d] = %g, want %g", n, i, out[n*C+i], want)
				}
			}
		}
		// Accumulates: start from a nonzero gradient and subtract it after.
		dx0 := randn(r, N*C, 1)
		dx := append([]float64(nil), dx0...)
		rowNormalizeBackward(dx, g, out, norms, N, C, eps)
		for i := range dx {
			dx[i] -= dx0[i]
		}
		checkGrad(t, "row normalize dx", x, dx, loss)
		for _, n := range tc.tiny {
			for i := range C {
				if want := g[n*C+i] / eps; math.Abs(dx[n*C+i]-want) > 1e-12*math.Abs(want) {
					t.Fatalf("clamped row %d: dx[%d] = %g, want dout/eps = %g", n, i, dx[n*C+i], want)
				}
			}
		}
	}
}

func TestRowNormalizeZeroRow(t *testing.T) {
	// A zero row stays zero, and its gradient is dout/eps (finite).
	x := []float64{0, 0, 0, 3, 4, 0}
	out, norms := make([]float64, 6), make([]float64, 2)
	rowNormalize(out, norms, x, 2, 3, 1e-12)
	if out[0] != 0 || out[1] != 0 || out[2] != 0 || norms[0] != 1e-12 {
		t.Fatalf("zero row normalized to %v (norm %g)", out[:3], norms[0])
	}
	if out[3] != 0.6 || out[4] != 0.8 || norms[1] != 5 {
		t.Fatalf("row (3,4,0) normalized to %v (norm %g)", out[3:], norms[1])
	}
	dx := make([]float64, 6)
	rowNormalizeBackward(dx, []float64{1, 2, 3, 0, 0, 0}, out, norms, 2, 3, 1e-12)
	if dx[0] != 1e12 || dx[1] != 2e12 || dx[2] != 3e12 {
		t.Fatalf("zero row's gradient %v, want dout/eps", dx[:3])
	}
}

func TestRowDotGrad(t *testing.T) {
	N, C := 4, 6
	r := rand.New(rand.NewPCG(12, 12))
	a, b, g := randn(r, N*C, 1), randn(r, N*C, 1), randn(r, N, 1)
	out := make([]float64, N)
	loss := func() float64 { rowDot(out, a, b, N, C); return dot64(out, g) }
	loss()
	for n := range N {
		if want := dot64(a[n*C:(n+1)*C], b[n*C:(n+1)*C]); math.Abs(out[n]-want) > 1e-13 {
			t.Fatalf("row dot [%d] = %g, want %g", n, out[n], want)
		}
	}
	// ∂/∂a = g[n]·b[n] and ∂/∂b = g[n]·a[n]: ScaleRows with β = 1 is the
	// backward of RowDot.
	da, db := randn(r, N*C, 1), randn(r, N*C, 1)
	da0, db0 := append([]float64(nil), da...), append([]float64(nil), db...)
	scaleRows(da, b, g, N, C, 1)
	scaleRows(db, a, g, N, C, 1)
	for i := range da {
		da[i] -= da0[i]
		db[i] -= db0[i]
	}
	checkGrad(t, "row dot da", a, da, loss)
	checkGrad(t, "row dot db", b, db, loss)
}

func TestScaleRows(t *testing.T) {
	N, C := 3, 4
	r := rand.New(rand.NewPCG(13, 13))
	x, s, d0 := randn(r, N*C, 1), randn(r, N, 1), randn(r, N*C, 1)
	for _, beta := range []float64{0, 1, -0.5} {
		dst := append([]float64(nil), d0...)
		if beta == 0 {
			for i := range dst {
				dst[i] = math.NaN() // β = 0 must not read dst
			}
		}
		scaleRows(dst, x, s, N, C, beta)
		for n := range N {
			for i := range C {
				want := s[n] * x[n*C+i]
				if beta != 0 {
					want += beta * d0[n*C+i]
				}
				if math.Abs(dst[n*C+i]-want) > 1e-14 {
					t.Fatalf("scale rows β=%g [%d,%d] = %g, want %g", beta, n, i, dst[n*C+i], want)
				}
			}
		}
	}
	// In place.
	y := append([]float64(nil), x...)
	scaleRows(y, y, s, N, C, 0)
	for i := range y {
		if y[i] != s[i/C]*x[i] {
			t.Fatalf("scale rows in place [%d] = %g, want %g", i, y[i], s[i/C]*x[i])
		}
	}
}

// TestFeatureOpsBackend runs the ops in float32 through the Backend and
// compares them with the float64 kernels.
func TestFeatureOpsBackend(t *testing.T) {
	be := New()
	N, C := 37, 129 // odd sizes; large enough to run on several workers
	r := rand.New(rand.NewPCG(14, 14))
	x, y, g, s := randn(r, N*C, 1), randn(r, N*C, 1), randn(r, N*C, 1), randn(r, N, 1)
	for i := range C {
		x[5*C+i] = 0 // a zero row: clamped
	}
	alloc := func(name string, v []float64, shape ...int) *kdrt.Tensor {
		tt, err := be.Alloc(name, kdrt.F32, shape...)
		if err != nil {
			t.Fatal(err)
		}
		if v != nil {
			if err := be.Upload(tt, to32(v)); err != nil {
				t.Fatal(err)
			}
		}
		return tt
	}
	xt, yt, gt, st := alloc("x", x, N, C), alloc("y", y, N, C), alloc("g", g, N, C), alloc("s", s, N)
	const eps = kdrt.CosineEps

	out, norms := make([]float64, N*C), make([]float64, N)
	rowNormalize(out, norms, x, N, C, eps)
	outT, normsT := alloc("out", nil, N, C), alloc("norms", nil, N)
	be.RowNormalize(outT, normsT, xt, eps)
	assertClose(t, "row normalize f32", to64(Float32s(outT)), out, 1e-5)
	assertClose(t, "row normalize norms f32", to64(Float32s(normsT)), norms, 1e-5)

	d0 := randn(r, N*C, 1)
	dx := append([]float64(nil), d0...)
	rowNormalizeBackward(dx, g, out, norms, N, C, eps)
	dxT := alloc("dx", d0, N, C)
	be.RowNormalizeBackward(dxT, gt, outT, normsT, eps)
	// The zero row's gradient is dout/eps = 1e8·g: compare rows apart.
	for n := range N {
		assertClose(t, "row normalize backward f32", to64(Float32s(dxT)[n*C:(n+1)*C]), dx[n*C:(n+1)*C], 1e-5)
	}

	dots := make([]float64, N)
	rowDot(dots, x, y, N, C)
	dotsT := alloc("dots", nil, N)
	be.RowDot(dotsT, xt, yt)
	assertClose(t, "row dot f32", to64(Float32s(dotsT)), dots, 1e-5)

	sc := append([]float64(nil), y...)
	scaleRows(sc, x, s, N, C, 0.5)
	scT := alloc("sc", y, N, C)
	be.ScaleRows(scT, xt, st, 0.5)
	assertClose(t, "scale rows f32", to64(Float32s(scT)), sc, 1e-5)

	// In place through the backend (out aliases x).
	be.RowNormalize(xt, normsT, xt, eps)
	assertClose(t, "row normalize in place f32", to64(Float32s(xt)), out, 1e-5)
}

func TestFeatureOpsShapePanics(t *testing.T) {
	be := New()
	a, _ := be.Alloc("a", kdrt.F32, 3, 4)
	b, _ := be.Alloc("b", kdrt.F32, 4, 3)
	v, _ := be.Alloc("v", kdrt.F32, 2)
	for name, f := range map[string]func(){
		"row normalize norms": func() { be.RowNormalize(a, v, a, 1e-12) },
		"row dot cols":        func() { be.RowDot(v, a, b) },
		"scale rows s":        func() { be.ScaleRows(a, a, v, 0) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic on mismatched shapes", name)
				}
			}()
			f()
		}()
	}
}
