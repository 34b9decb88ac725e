package cuda

import (
	"fmt"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// normShapes are [N, C]: one element, widths below one warp, at and around the
// row kernels' block sizes, typical hidden sizes, many rows (several row
// chunks in the weight gradients) and wide rows that the 1024-thread block
// tiles (13000: wider than the one-pass RMSNorm backward's 12288 columns).
var normShapes = [][2]int{{1, 1}, {3, 7}, {5, 64}, {37, 896}, {2000, 64}, {300, 1000}, {3, 5000}, {2, 12000}, {2, 13000}}

func normName(dt kdrt.DType, s [2]int) string { return fmt.Sprintf("%s/N%d_C%d", dt, s[0], s[1]) }

func TestRMSNorm(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, s := range normShapes {
			t.Run(normName(dt, s), func(t *testing.T) {
				p.t = t
				N, C := s[0], s[1]
				xc, xg := p.rand("x", dt, 2, N, C)
				wc, wg := p.rand("w", dt, 1, C)
				// Garbage in the outputs: the forward overwrites them.
				oc, og := p.rand("out", dt, 3, N, C)
				rc, rg := p.rand("rstd", kdrt.F32, 3, N)
				p.cpu.RMSNorm(oc, rc, xc, wc, 1e-5)
				p.gpu.RMSNorm(og, rg, xg, wg, 1e-5)
				p.check("rstd", rc, rg, 1e-5)
				p.check("out", oc, og, tolFor(dt))

				// In place (out = x) gives the same.
				p.gpu.RMSNorm(xg, rg, xg, wg, 1e-5)
				p.check("in place", oc, xg, tolFor(dt))
			})
		}
	}
}

func TestRMSNormBackward(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, s := range normShapes {
			t.Run(normName(dt, s), func(t *testing.T) {
				p.t = t
				N, C := s[0], s[1]
				xc, xg := p.rand("x", dt, 2, N, C)
				wc, wg := p.rand("w", dt, 1, C)
				oc, og := p.zeros("out", dt, N, C)
				rc, rg := p.zeros("rstd", kdrt.F32, N)
				p.cpu.RMSNorm(oc, rc, xc, wc, 1e-6)
				p.gpu.RMSNorm(og, rg, xg, wg, 1e-6)
				doc, dog := p.rand("dout", dt, 1, N, C)
				// Random gradients first: the backward accumulates.
				dxc, dxg := p.rand("dx", dt, 1, N, C)
				dwc, dwg := p.rand("dw", dt, 1, C)
				p.cpu.RMSNormBackward(dxc, dwc, doc, xc, wc, rc)
				p.gpu.RMSNormBackward(dxg, dwg, dog, xg, wg, rg)
				p.check("dx", dxc, dxg, tolFor(dt))
				p.check("dw", dwc, dwg, tolFor(dt))
			})
		}
	}
}

func TestLayerNorm(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, s := range normShapes {
			t.Run(normName(dt, s), func(t *testing.T) {
				p.t = t
				N, C := s[0], s[1]
				// An offset mean, so that the two-pass variance matters.
				xv := make([]float32, N*C)
				for i := range xv {
					xv[i] = 0.5 + 2*(2*p.rng.Float32()-1)
				}
				xc, xg := p.from("x", dt, xv, N, C)
				wc, wg := p.rand("w", dt, 1, C)
				bc, bg := p.rand("b", dt, 1, C)
				oc, og := p.rand("out", dt, 3, N, C)
				mc, mg := p.rand("mean", kdrt.F32, 3, N)
				rc, rg := p.rand("rstd", kdrt.F32, 3, N)
				p.cpu.LayerNorm(oc, mc, rc, xc, wc, bc, 1e-5)
				p.gpu.LayerNorm(og, mg, rg, xg, wg, bg, 1e-5)
				p.check("mean", mc, mg, 1e-5)
				p.check("rstd", rc, rg, 1e-5)
				p.check("out", oc, og, tolFor(dt))
			})
		}
	}
}

func TestLayerNormBackward(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, s := range normShapes {
			t.Run(normName(dt, s), func(t *testing.T) {
				p.t = t
				N, C := s[0], s[1]
				xc, xg := p.rand("x", dt, 2, N, C)
				wc, wg := p.rand("w", dt, 1, C)
				bc, bg := p.rand("b", dt, 1, C)
				oc, og := p.zeros("out", dt, N, C)
				mc, mg := p.zeros("mean", kdrt.F32, N)
				rc, rg := p.zeros("rstd", kdrt.F32, N)
				p.cpu.LayerNorm(oc, mc, rc, xc, wc, bc, 1e-5)
				p.gpu.LayerNorm(og, mg, rg, xg, wg, bg, 1e-5)
				doc, dog := p.rand("dout", dt, 1, N, C)
				dxc, dxg := p.rand("dx", dt, 1, N, C)
				dwc, dwg := p.rand("dw", dt, 1, C)
				dbc, dbg := p.rand("db", dt, 1, C)
				p.cpu.LayerNormBackward(dxc, dwc, dbc, doc, xc, wc, mc, rc)
				p.gpu.LayerNormBackward(dxg, dwg, dbg, dog, xg, wg, mg, rg)
				p.check("dx", dxc, dxg, tolFor(dt))
				p.check("dw", dwc, dwg, tolFor(dt))
				p.check("db", dbc, dbg, tolFor(dt))
			})
		}
	}
}

// TestNormDTypes: mixed storage dtypes, and statistics that are not F32,
// panic with a message instead of reading memory as the wrong type.
func TestNormDTypes(t *testing.T) {
	p := newPair(t)
	_, x := p.rand("x", kdrt.BF16, 1, 3, 8)
	_, w := p.rand("w", kdrt.F32, 1, 8)
	_, w16 := p.rand("w16", kdrt.BF16, 1, 8)
	_, out := p.zeros("out", kdrt.BF16, 3, 8)
	_, r := p.zeros("rstd", kdrt.F32, 3)
	_, r16 := p.zeros("rstd16", kdrt.BF16, 3)
	mustPanic := func(what string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s: no panic", what)
			}
		}()
		f()
	}
	mustPanic("F32 weight with BF16 x", func() { p.gpu.RMSNorm(out, r, x, w, 1e-5) })
	mustPanic("BF16 rstd", func() { p.gpu.RMSNorm(out, r16, x, w16, 1e-5) })
	p.gpu.RMSNorm(out, r, x, w16, 1e-5)
	if err := p.gpu.Sync(); err != nil {
		t.Fatal(err)
	}
}
