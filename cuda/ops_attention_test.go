package cuda

import (
	"fmt"
	"math"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// attnCase is one attention shape: B sequences of T positions, NH query heads
// sharing NKV key/value heads of HD.
type attnCase struct {
	B, T, NH, NKV, HD int
	window            int
	keyStart          []int
}

func (c attnCase) params() kdrt.AttentionParams {
	return kdrt.AttentionParams{B: c.B, T: c.T, NH: c.NH, NKV: c.NKV, HD: c.HD,
		Scale: float32(1 / math.Sqrt(float64(c.HD))), Window: c.window, KeyStart: c.keyStart}
}

func (c attnCase) String() string {
	return fmt.Sprintf("B%d_T%d_NH%d_NKV%d_HD%d_W%d_KS%v", c.B, c.T, c.NH, c.NKV, c.HD, c.window, c.keyStart)
}

// attnCases cover GQA (NH/NKV = 2, 1 and 4), head sizes below and above the
// row kernels' 128 threads, T not a multiple of the block size and above it,
// sliding windows, and left padding that differs per sequence (including a
// sequence that is all padding).
var attnCases = []attnCase{
	{B: 1, T: 1, NH: 4, NKV: 2, HD: 16},
	{B: 2, T: 37, NH: 4, NKV: 2, HD: 16},
	{B: 2, T: 130, NH: 4, NKV: 2, HD: 64},
	{B: 2, T: 130, NH: 4, NKV: 4, HD: 16, window: 17},
	{B: 2, T: 77, NH: 4, NKV: 2, HD: 64, window: 5, keyStart: []int{3, 40}},
	{B: 2, T: 130, NH: 4, NKV: 2, HD: 16, keyStart: []int{0, 129}},
	{B: 2, T: 20, NH: 4, NKV: 1, HD: 16, keyStart: []int{20, 7}},
	{B: 3, T: 45, NH: 2, NKV: 2, HD: 160, window: 9, keyStart: []int{1, 0, 30}},
	{B: 1, T: 300, NH: 4, NKV: 2, HD: 64, window: 200},
}

// lseTol is the relative error allowed for the log-sum-exps: they come from
// the same (bf16-rounded) inputs on both sides, accumulated in fp32.
const lseTol = 1e-5

func TestAttention(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, c := range attnCases {
			t.Run(dtName(dt)+"/"+c.String(), func(t *testing.T) {
				p.t = t
				ap := c.params()
				qc, qg := p.rand("q", dt, 1, c.B, c.T, c.NH, c.HD)
				kc, kg := p.rand("k", dt, 1, c.B, c.T, c.NKV, c.HD)
				vc, vg := p.rand("v", dt, 1, c.B, c.T, c.NKV, c.HD)
				// Garbage in the outputs: the forward must overwrite every element.
				oc, og := p.rand("out", dt, 3, c.B, c.T, c.NH, c.HD)
				lc, lg := p.rand("lse", kdrt.F32, 3, c.B, c.NH, c.T)
				p.cpu.Attention(oc, lc, qc, kc, vc, ap)
				p.gpu.Attention(og, lg, qg, kg, vg, ap)
				p.check("lse", lc, lg, lseTol)
				p.check("out", oc, og, tolFor(dt))
			})
		}
	}
}

func TestAttentionBackward(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, c := range attnCases {
			t.Run(dtName(dt)+"/"+c.String(), func(t *testing.T) {
				p.t = t
				ap := c.params()
				qc, qg := p.rand("q", dt, 1, c.B, c.T, c.NH, c.HD)
				kc, kg := p.rand("k", dt, 1, c.B, c.T, c.NKV, c.HD)
				vc, vg := p.rand("v", dt, 1, c.B, c.T, c.NKV, c.HD)
				// The backward's out and lse: the CPU forward's, given to both
				// (out rounded to the storage dtype on both sides).
				oc0, err := p.cpu.Alloc("out", kdrt.F32, c.B, c.T, c.NH, c.HD)
				if err != nil {
					t.Fatal(err)
				}
				lc0, err := p.cpu.Alloc("lse", kdrt.F32, c.B, c.NH, c.T)
				if err != nil {
					t.Fatal(err)
				}
				p.cpu.Attention(oc0, lc0, qc, kc, vc, ap)
				oc, og := p.from("out", dt, values(t, p.cpu, oc0), c.B, c.T, c.NH, c.HD)
				lc, lg := p.from("lse", kdrt.F32, values(t, p.cpu, lc0), c.B, c.NH, c.T)
				doc, dog := p.rand("dout", dt, 1, c.B, c.T, c.NH, c.HD)
				// Garbage in the gradients: the backward writes them.
				dqc, dqg := p.rand("dq", dt, 3, c.B, c.T, c.NH, c.HD)
				dkc, dkg := p.rand("dk", dt, 3, c.B, c.T, c.NKV, c.HD)
				dvc, dvg := p.rand("dv", dt, 3, c.B, c.T, c.NKV, c.HD)
				p.cpu.AttentionBackward(dqc, dkc, dvc, doc, oc, lc, qc, kc, vc, ap)
				p.gpu.AttentionBackward(dqg, dkg, dvg, dog, og, lg, qg, kg, vg, ap)
				tol := tolFor(dt)
				p.check("dq", dqc, dqg, tol)
				p.check("dk", dkc, dkg, tol)
				p.check("dv", dvc, dvg, tol)
				p.check("lse unchanged", lc, lg, 0)
			})
		}
	}
}

func TestAttentionDecode(t *testing.T) {
	p := newPair(t)
	type decodeCase struct {
		B, Tmax, NH, NKV, HD int // B is p.B: 0 means one sequence
		window               int
		keyStart             []int
		pos                  []int
	}
	cases := []decodeCase{
		{B: 0, Tmax: 9, NH: 4, NKV: 2, HD: 16, pos: []int{0, 4, 8}},
		{B: 2, Tmax: 50, NH: 4, NKV: 2, HD: 16, pos: []int{0, 1, 17, 49}},
		{B: 2, Tmax: 50, NH: 4, NKV: 2, HD: 64, window: 8, pos: []int{0, 7, 8, 30, 49}},
		{B: 2, Tmax: 50, NH: 4, NKV: 2, HD: 64, keyStart: []int{3, 30}, pos: []int{0, 3, 17, 30, 49}},
		{B: 2, Tmax: 200, NH: 4, NKV: 1, HD: 16, window: 150, keyStart: []int{0, 5}, pos: []int{5, 130, 199}},
		{B: 3, Tmax: 20, NH: 2, NKV: 2, HD: 160, window: 6, keyStart: []int{2, 0, 11}, pos: []int{1, 10, 19}},
	}
	for _, dt := range dtypes {
		for _, c := range cases {
			B := max(c.B, 1)
			ap := kdrt.AttentionParams{B: c.B, T: 1, NH: c.NH, NKV: c.NKV, HD: c.HD,
				Scale: float32(1 / math.Sqrt(float64(c.HD))), Window: c.window, KeyStart: c.keyStart}
			for _, pos := range c.pos {
				name := fmt.Sprintf("%s/B%d_Tmax%d_NH%d_NKV%d_HD%d_W%d_KS%v/pos%d", dt, c.B, c.Tmax, c.NH, c.NKV, c.HD, c.window, c.keyStart, pos)
				t.Run(name, func(t *testing.T) {
					p.t = t
					qc, qg := p.rand("q", dt, 1, B, c.NH*c.HD)
					kc, kg := p.rand("k cache", dt, 1, B*c.Tmax, c.NKV*c.HD)
					vc, vg := p.rand("v cache", dt, 1, B*c.Tmax, c.NKV*c.HD)
					oc, og := p.rand("out", dt, 3, B, c.NH*c.HD)
					p.cpu.AttentionDecode(oc, qc, kc, vc, ap, pos)
					p.gpu.AttentionDecode(og, qg, kg, vg, ap, pos)
					p.check("out", oc, og, tolFor(dt))
				})
			}
		}
	}
}
