package cuda

import (
	"fmt"
	"math"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// featShapes are the [N, C] shapes of the feature-op tests: widths below,
// at and far above one block's 1024 threads, none a multiple of 32 but one.
var featShapes = []struct{ N, C int }{{5, 1}, {7, 33}, {6, 896}, {3, 4099}, {2, 20000}}

// featInput is N rows of C values in [-1, 1), with row 1 (if any) scaled by
// tiny: a row whose norm falls below eps when tiny is small enough.
func (p *pair) featInput(name string, dt kdrt.DType, N, C int, tiny float32) (c, g *kdrt.Tensor) {
	vals := make([]float32, N*C)
	for i := range vals {
		vals[i] = 2*p.rng.Float32() - 1
	}
	if N > 1 {
		for i := C; i < 2*C; i++ {
			vals[i] *= tiny
		}
	}
	return p.from(name, dt, vals, N, C)
}

func TestRowNormalize(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, sh := range featShapes {
			for _, eps := range []float32{kdrt.NormalizeEps, 0.05} {
				name := fmt.Sprintf("%s/%dx%d/eps=%g", dtName(dt), sh.N, sh.C, eps)
				// Row 1 is scaled so that its norm is below 0.05: clamped at
				// the larger eps, not at the smaller.
				xc, xg := p.featInput("x", dt, sh.N, sh.C, 1e-4)
				oc, og := p.rand("out", dt, 1, sh.N, sh.C) // overwritten
				nc, ng := p.rand("norms", kdrt.F32, 1, sh.N)
				p.cpu.RowNormalize(oc, nc, xc, eps)
				p.gpu.RowNormalize(og, ng, xg, eps)
				p.check(name+" out", oc, og, tolFor(dt))
				p.check(name+" norms", nc, ng, tolFor(kdrt.F32))

				// In place: out aliases x.
				p.cpu.RowNormalize(xc, nc, xc, eps)
				p.gpu.RowNormalize(xg, ng, xg, eps)
				p.check(name+" in place", xc, xg, tolFor(dt))
			}
		}
	}
}

func TestRowNormalizeBackward(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, sh := range featShapes {
			for _, eps := range []float32{kdrt.NormalizeEps, 0.05} {
				name := fmt.Sprintf("%s/%dx%d/eps=%g", dtName(dt), sh.N, sh.C, eps)
				// The forward on the CPU; both backwards read its out and norms.
				xc, _ := p.featInput("x", dt, sh.N, sh.C, 1e-4)
				oc0, err := p.cpu.Alloc("out", kdrt.F32, sh.N, sh.C)
				if err != nil {
					t.Fatal(err)
				}
				nc0, err := p.cpu.Alloc("norms", kdrt.F32, sh.N)
				if err != nil {
					t.Fatal(err)
				}
				p.cpu.RowNormalize(oc0, nc0, xc, eps)
				oc, og := p.from("out", dt, values(t, p.cpu, oc0), sh.N, sh.C)
				nc, ng := p.from("norms", kdrt.F32, values(t, p.cpu, nc0), sh.N)
				doc, dog := p.rand("dout", dt, 1, sh.N, sh.C)
				dxc, dxg := p.rand("dx", dt, 1, sh.N, sh.C) // accumulated into
				p.cpu.RowNormalizeBackward(dxc, doc, oc, nc, eps)
				p.gpu.RowNormalizeBackward(dxg, dog, og, ng, eps)
				p.check(name+" dx", dxc, dxg, tolFor(dt))
			}
		}
	}
}

func TestRowDot(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, sh := range featShapes {
			name := fmt.Sprintf("%s/%dx%d", dtName(dt), sh.N, sh.C)
			// b = a + noise, so that the dots are far from 0 (a relative
			// comparison of sums that cancel would measure the CPU's rounding).
			av := make([]float32, sh.N*sh.C)
			bv := make([]float32, sh.N*sh.C)
			for i := range av {
				av[i] = 2*p.rng.Float32() - 1
				bv[i] = av[i] + 0.5*(2*p.rng.Float32()-1)
			}
			ac, ag := p.from("a", dt, av, sh.N, sh.C)
			bc, bg := p.from("b", dt, bv, sh.N, sh.C)
			oc, og := p.rand("out", kdrt.F32, 1, sh.N) // overwritten
			p.cpu.RowDot(oc, ac, bc)
			p.gpu.RowDot(og, ag, bg)
			p.check(name+" out", oc, og, tolFor(kdrt.F32)) // inputs are exact in both
		}
	}
}

func TestScaleRows(t *testing.T) {
	p := newPair(t)
	nan := float32(math.NaN())
	for _, dt := range dtypes {
		for _, sh := range featShapes {
			for _, beta := range []float32{0, 1, -0.5} {
				name := fmt.Sprintf("%s/%dx%d/beta=%g", dtName(dt), sh.N, sh.C, beta)
				xc, xg := p.rand("x", dt, 1, sh.N, sh.C)
				sc, sg := p.rand("s", kdrt.F32, 2, sh.N)
				var dc, dg *kdrt.Tensor
				if beta == 0 {
					// β = 0 must not read dst: NaN there would show.
					vals := make([]float32, sh.N*sh.C)
					for i := range vals {
						vals[i] = nan
					}
					dc, dg = p.from("dst", dt, vals, sh.N, sh.C)
				} else {
					dc, dg = p.rand("dst", dt, 1, sh.N, sh.C)
				}
				p.cpu.ScaleRows(dc, xc, sc, beta)
				p.gpu.ScaleRows(dg, xg, sg, beta)
				p.check(name+" dst", dc, dg, tolFor(dt))

				// In place: dst aliases x.
				p.cpu.ScaleRows(xc, xc, sc, beta)
				p.gpu.ScaleRows(xg, xg, sg, beta)
				p.check(name+" in place", xc, xg, tolFor(dt))
			}
		}
	}
}
