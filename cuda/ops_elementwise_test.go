package cuda

import (
	"fmt"
	"math"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/half"
)

// ewSizes are flat element counts for the elementwise ops: tiny, not a
// multiple of the 256-thread block, and above 32 blocks per SM × 256 threads
// on any current GPU, so that the grid-stride loops go round more than once.
var ewSizes = []int{1, 7, 1000, 4099, 3_000_001}

// ewMatShapes are [N, C] shapes for the row and column ops: one row, one
// column, widths below and above the block sizes, many rows (several row
// chunks in the column sums) and a wide row.
var ewMatShapes = [][2]int{{1, 1}, {1, 7}, {5, 33}, {37, 300}, {3000, 96}, {300, 1000}, {4, 20000}}

func ewName(dt kdrt.DType, dims ...int) string {
	return fmt.Sprintf("%s/%v", dt, dims)
}

func TestAddBias(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, s := range ewMatShapes {
			t.Run(ewName(dt, s[0], s[1]), func(t *testing.T) {
				p.t = t
				yc, yg := p.rand("y", dt, 1, s[0], s[1])
				bc, bg := p.rand("bias", dt, 1, s[1])
				p.cpu.AddBias(yc, bc)
				p.gpu.AddBias(yg, bg)
				p.check("y", yc, yg, tolFor(dt))
				p.check("bias unchanged", bc, bg, 0)
			})
		}
	}
}

func TestBiasBackward(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, s := range ewMatShapes {
			t.Run(ewName(dt, s[0], s[1]), func(t *testing.T) {
				p.t = t
				dyc, dyg := p.rand("dy", dt, 1, s[0], s[1])
				// Random gradients first: the backward accumulates.
				dbc, dbg := p.rand("dbias", dt, 1, s[1])
				p.cpu.BiasBackward(dbc, dyc)
				p.gpu.BiasBackward(dbg, dyg)
				p.check("dbias", dbc, dbg, tolFor(dt))
			})
		}
	}
}

func TestAdd(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, n := range ewSizes {
			t.Run(ewName(dt, n), func(t *testing.T) {
				p.t = t
				ac, ag := p.rand("a", dt, 1, n)
				bc, bg := p.rand("b", dt, 1, n)
				oc, og := p.rand("out", dt, 3, n)
				p.cpu.Add(oc, ac, bc)
				p.gpu.Add(og, ag, bg)
				p.check("out", oc, og, tolFor(dt))
				// In place: a = a + b.
				p.cpu.Add(ac, ac, bc)
				p.gpu.Add(ag, ag, bg)
				p.check("a += b", ac, ag, tolFor(dt))
			})
		}
	}
}

func TestScale(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, n := range ewSizes {
			t.Run(ewName(dt, n), func(t *testing.T) {
				p.t = t
				xc, xg := p.rand("x", dt, 2, n)
				s := float32(p.rng.Float64()*4 - 2)
				p.cpu.Scale(xc, s)
				p.gpu.Scale(xg, s)
				p.check("x", xc, xg, tolFor(dt))
			})
		}
	}
}

func TestSumSquares(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		t.Run(dt.String(), func(t *testing.T) {
			p.t = t
			var cs, gs []*kdrt.Tensor
			// Sizes around the partial-sum count (1024 blocks of 1024
			// elements), an empty tensor and a 2-D one.
			for i, n := range []int{1, 0, 1000, 1<<20 + 3, 5_000_000, 77} {
				c, g := p.rand(fmt.Sprint("x", i), dt, float32(i+1), n)
				cs, gs = append(cs, c), append(gs, g)
			}
			c, g := p.rand("m", dt, 0.5, 37, 301)
			cs, gs = append(cs, c), append(gs, g)
			want, err := p.cpu.SumSquares(cs...)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.gpu.SumSquares(gs...)
			if err != nil {
				t.Fatal(err)
			}
			// Both square the same float32 values exactly in float64; only the
			// order of the float64 additions differs.
			if math.Abs(got-want) > 1e-10*want {
				t.Errorf("sum of squares: GPU %.17g, CPU %.17g", got, want)
			}
			for i := range gs {
				one, err := p.gpu.SumSquares(gs[i])
				if err != nil {
					t.Fatal(err)
				}
				ref, _ := p.cpu.SumSquares(cs[i])
				if math.Abs(one-ref) > 1e-10*ref {
					t.Errorf("sum of squares of %v: GPU %.17g, CPU %.17g", gs[i], one, ref)
				}
			}
			if s, err := p.gpu.SumSquares(); s != 0 || err != nil {
				t.Errorf("sum of squares of nothing: %v, %v", s, err)
			}
		})
	}
}

// embeddingCase is a table [V, C] and N ids.
type embeddingCase struct{ V, C, N int }

var embeddingCases = []embeddingCase{{1, 1, 1}, {50, 33, 20}, {1000, 300, 257}, {7, 4100, 9}, {30, 64, 2000}}

func ewRandomIDs(p *pair, n, V int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(p.rng.IntN(V))
	}
	return ids
}

func TestEmbedding(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, c := range embeddingCases {
			t.Run(ewName(dt, c.V, c.C, c.N), func(t *testing.T) {
				p.t = t
				tc, tg := p.rand("table", dt, 1, c.V, c.C)
				ic, ig := p.ints("ids", ewRandomIDs(p, c.N, c.V), c.N)
				oc, og := p.rand("out", dt, 3, c.N, c.C)
				p.cpu.Embedding(oc, ic, tc)
				p.gpu.Embedding(og, ig, tg)
				p.check("out", oc, og, 0)
			})
		}
	}
}

func TestEmbeddingBackward(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, c := range embeddingCases {
			t.Run(ewName(dt, c.V, c.C, c.N), func(t *testing.T) {
				p.t = t
				// Few distinct ids among many rows: repeated ids add up.
				ic, ig := p.ints("ids", ewRandomIDs(p, c.N, c.V), c.N)
				dc, dg := p.rand("dout", dt, 1, c.N, c.C)
				tc, tg := p.rand("dtable", dt, 1, c.V, c.C)
				p.cpu.EmbeddingBackward(tc, dc, ic)
				p.gpu.EmbeddingBackward(tg, dg, ig)
				tol := tolFor(dt)
				if dt == kdrt.BF16 {
					// Each of the k ≈ N/V additions into a BF16 row rounds to
					// 8 bits (unit roundoff 2⁻⁹): the error grows as √k·2⁻⁹,
					// 1.6% at k = 67, on any GPU. Allow twice that.
					tol = max(tol, 2*math.Sqrt(float64(c.N)/float64(c.V))*math.Exp2(-9))
				}
				p.check("dtable", tc, tg, tol)
			})
		}
	}
}

// TestEmbeddingOutOfRange: the device validates nothing, but ids outside
// [0, V) neither read nor write outside the table. The table is a view of
// rows [1, V+1) of a larger tensor whose first and last rows are sentinels
// that must come back unchanged.
func TestEmbeddingOutOfRange(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		t.Run(dt.String(), func(t *testing.T) {
			p.t = t
			const V, C = 10, 37
			ids := []int32{3, -1, V, 0, V - 1, math.MaxInt32, math.MinInt32, -100}
			_, ig := p.ints("ids", ids, len(ids))
			fc, fg := p.rand("table+sentinels", dt, 1, V+2, C)
			tg := p.gpu.Slice(fg, 1, V+1)
			tc := p.cpu.Slice(fc, 1, V+1)

			// Forward: out-of-range rows come out zero.
			want := make([]float32, len(ids)*C)
			tv := values(t, p.cpu, tc)
			for n, id := range ids {
				if id >= 0 && id < V {
					copy(want[n*C:(n+1)*C], tv[int(id)*C:(int(id)+1)*C])
				}
			}
			wc, _ := p.from("want", dt, want, len(ids), C)
			_, og := p.rand("out", dt, 3, len(ids), C)
			p.gpu.Embedding(og, ig, tg)
			p.check("out", wc, og, 0)

			// Backward: out-of-range rows are skipped.
			dv := make([]float32, len(ids)*C)
			for i := range dv {
				dv[i] = float32(p.rng.Float64()*2 - 1)
			}
			_, dg := p.from("dout", dt, dv, len(ids), C)
			var valid []int32
			var validRows []float32
			for n, id := range ids {
				if id >= 0 && id < V {
					valid = append(valid, id)
					validRows = append(validRows, dv[n*C:(n+1)*C]...)
				}
			}
			vic, _ := p.ints("valid ids", valid, len(valid))
			vdc, _ := p.from("valid dout", dt, validRows, len(valid), C)
			p.cpu.EmbeddingBackward(tc, vdc, vic)
			p.gpu.EmbeddingBackward(tg, dg, ig)
			p.check("table and sentinels", fc, fg, tolFor(dt))
		})
	}
}

// ropeCase is x [N, H·HD] with positions below maxPos and RoPE base theta.
type ropeCase struct {
	N, H, HD, maxPos int
	theta            float64
}

var ropeCases = []ropeCase{
	{1, 1, 2, 1, 10000},
	{5, 3, 64, 100, 10000},
	{37, 14, 128, 32768, 1e6},  // H·HD/2 = 896 pairs: several per thread
	{200, 2, 64, 32768, 10000}, // positions up to 32k: the fp32 angle matters
	{9, 5, 160, 4096, 500000},
}

func ropeInvFreqs(HD int, theta float64) []float32 {
	f := make([]float32, HD/2)
	for i := range f {
		f[i] = float32(1 / math.Pow(theta, float64(2*i)/float64(HD)))
	}
	return f
}

func TestRoPE(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, c := range ropeCases {
			t.Run(fmt.Sprintf("%s/N%d_H%d_HD%d_pos%d", dt, c.N, c.H, c.HD, c.maxPos), func(t *testing.T) {
				p.t = t
				pos := make([]int32, c.N)
				for i := range pos {
					pos[i] = int32(p.rng.IntN(c.maxPos))
				}
				pos[len(pos)-1] = int32(c.maxPos - 1)
				pc, pg := p.ints("pos", pos, c.N)
				fc, fg := p.from("invFreq", kdrt.F32, ropeInvFreqs(c.HD, c.theta), c.HD/2)
				xc, xg := p.rand("x", dt, 1, c.N, c.H*c.HD)
				x0 := values(t, p.gpu, xg)
				p.cpu.RoPE(xc, pc, fc)
				p.gpu.RoPE(xg, pg, fg)
				p.check("rope", xc, xg, tolFor(dt))

				dc, dg := p.rand("dx", dt, 1, c.N, c.H*c.HD)
				p.cpu.RoPEBackward(dc, pc, fc)
				p.gpu.RoPEBackward(dg, pg, fg)
				p.check("rope backward", dc, dg, tolFor(dt))

				// The backward undoes the forward.
				p.gpu.RoPEBackward(xg, pg, fg)
				bc, _ := p.from("x before", kdrt.F32, x0, c.N, c.H*c.HD)
				p.check("rope then inverse", bc, xg, 2*tolFor(dt))
			})
		}
	}
}

func TestSwiGLU(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, n := range ewSizes {
			t.Run(ewName(dt, n), func(t *testing.T) {
				p.t = t
				gc, gg := p.rand("gate", dt, 6, n)
				uc, ug := p.rand("up", dt, 2, n)
				oc, og := p.rand("out", dt, 3, n)
				p.cpu.SwiGLU(oc, gc, uc)
				p.gpu.SwiGLU(og, gg, ug)
				p.check("out", oc, og, tolFor(dt))
			})
		}
	}
}

func TestSwiGLUBackward(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, n := range ewSizes {
			t.Run(ewName(dt, n), func(t *testing.T) {
				p.t = t
				gc, gg := p.rand("gate", dt, 6, n)
				uc, ug := p.rand("up", dt, 2, n)
				doc, dog := p.rand("dout", dt, 1, n)
				dgc, dgg := p.rand("dgate", dt, 1, n)
				duc, dug := p.rand("dup", dt, 1, n)
				p.cpu.SwiGLUBackward(dgc, duc, doc, gc, uc)
				p.gpu.SwiGLUBackward(dgg, dug, dog, gg, ug)
				p.check("dgate", dgc, dgg, tolFor(dt))
				p.check("dup", duc, dug, tolFor(dt))
			})
		}
	}
}

func TestGELU(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, n := range ewSizes {
			t.Run(ewName(dt, n), func(t *testing.T) {
				p.t = t
				xc, xg := p.rand("x", dt, 5, n)
				oc, og := p.rand("out", dt, 3, n)
				p.cpu.GELU(oc, xc)
				p.gpu.GELU(og, xg)
				p.check("out", oc, og, tolFor(dt))
			})
		}
	}
}

func TestGELUBackward(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, n := range ewSizes {
			t.Run(ewName(dt, n), func(t *testing.T) {
				p.t = t
				xc, xg := p.rand("x", dt, 5, n)
				doc, dog := p.rand("dout", dt, 1, n)
				dxc, dxg := p.rand("dx", dt, 1, n)
				p.cpu.GELUBackward(dxc, doc, xc)
				p.gpu.GELUBackward(dxg, dog, xg)
				p.check("dx", dxc, dxg, tolFor(dt))
			})
		}
	}
}

func TestAdamW(t *testing.T) {
	p := newPair(t)
	hs := []kdrt.AdamWParams{
		{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, Step: 1},
		{LR: 3e-4, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, Step: 10},
		{LR: 1e-2, Beta1: 0.8, Beta2: 0.99, Eps: 1e-6, WeightDecay: 0, Step: 1000},
	}
	for _, dt := range dtypes {
		for _, n := range []int{1, 1000, 3_000_001} {
			for hi, h := range hs {
				t.Run(fmt.Sprintf("%s/%d/h%d", dt, n, hi), func(t *testing.T) {
					p.t = t
					pc, pg := p.rand("param", dt, 1, n)
					gc, gg := p.rand("grad", dt, 1, n)
					mc, mg := p.rand("m", kdrt.F32, 0.1, n)
					vv := make([]float32, n)
					for i := range vv {
						vv[i] = 0.01 * p.rng.Float32()
					}
					if h.Step == 1 {
						clear(vv) // the first step starts from zero moments
					}
					vc, vg := p.from("v", kdrt.F32, vv, n)
					if h.Step == 1 {
						p.cpu.Zero(mc)
						p.gpu.Zero(mg)
					}
					// Two steps, the second with the same gradient.
					for range 2 {
						p.cpu.AdamW(pc, gc, mc, vc, h)
						p.gpu.AdamW(pg, gg, mg, vg, h)
						h.Step++
					}
					p.check("m", mc, mg, 1e-5)
					p.check("v", vc, vg, 1e-5)
					p.check("param", pc, pg, tolFor(dt))
				})
			}
		}
	}
}

// TestCast converts F32 to BF16 and back; the BF16 values must be exactly
// runtime/half's rounding (ties to even, overflow to Inf, NaN kept).
func TestCast(t *testing.T) {
	p := newPair(t)
	for _, n := range ewSizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			p.t = t
			vals := make([]float32, n)
			for i := range vals {
				vals[i] = float32(p.rng.NormFloat64() * math.Pow(2, float64(p.rng.IntN(40)-20)))
			}
			special := []float32{
				0, float32(math.Copysign(0, -1)), 1, -1,
				math.Float32frombits(0x3f808000),  // 1 + 2⁻⁸: a tie, to even (down to 1)
				math.Float32frombits(0x3f818000),  // a tie above an odd bf16: up
				math.MaxFloat32, -math.MaxFloat32, // overflow to ±Inf
				float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
				1e-40, -1e-42, // subnormals
			}
			copy(vals, special[:min(n, len(special))])

			want := make([]float32, n)
			for i, v := range vals {
				want[i] = half.BF16ToF32(half.F32ToBF16(v))
			}
			wc, _ := p.from("want", kdrt.F32, want, n)

			_, sg := p.from("src", kdrt.F32, vals, n)
			bf, err := p.gpu.Alloc("bf16", kdrt.BF16, n)
			if err != nil {
				t.Fatal(err)
			}
			defer p.gpu.Free(bf)
			p.gpu.Cast(bf, sg)
			p.check("f32 to bf16", wc, bf, 0)

			back, err := p.gpu.Alloc("back", kdrt.F32, n)
			if err != nil {
				t.Fatal(err)
			}
			defer p.gpu.Free(back)
			p.gpu.Cast(back, bf)
			p.check("bf16 to f32", wc, back, 0)

			// Equal dtypes copy.
			same, err := p.gpu.Alloc("same", kdrt.F32, n)
			if err != nil {
				t.Fatal(err)
			}
			defer p.gpu.Free(same)
			p.gpu.Cast(same, back)
			p.check("f32 to f32", wc, same, 0)
		})
	}
}
