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
	// The tensor-core kernels' head sizes (BF16), each causal with GQA, then
	// with a window and per-row key starts (one that pads past a whole
	// 64-key tile), at lengths that are and are not multiples of 64.
	{B: 2, T: 100, NH: 4, NKV: 2, HD: 64},
	{B: 2, T: 130, NH: 4, NKV: 1, HD: 64, window: 33, keyStart: []int{5, 97}},
	{B: 2, T: 100, NH: 4, NKV: 2, HD: 80},
	{B: 2, T: 130, NH: 4, NKV: 1, HD: 80, window: 33, keyStart: []int{5, 97}},
	{B: 1, T: 128, NH: 6, NKV: 2, HD: 96},
	{B: 2, T: 130, NH: 4, NKV: 1, HD: 96, window: 70, keyStart: []int{70, 0}},
	{B: 2, T: 64, NH: 2, NKV: 2, HD: 128},
	{B: 2, T: 130, NH: 4, NKV: 2, HD: 128, window: 33, keyStart: []int{5, 97}},
	// Windows whose edge falls on the last row of a query tile of the dK/dV
	// kernel (32 rows for HD > 64, 64 for HD 64): one masked entry decides.
	{B: 1, T: 200, NH: 2, NKV: 1, HD: 80, window: 95},
	{B: 1, T: 260, NH: 2, NKV: 1, HD: 64, window: 127},
}

// rowTolFor is the relative error allowed in any one row of an attention
// output or gradient.
func rowTolFor(dt kdrt.DType) float64 {
	if dt == kdrt.BF16 {
		return 2e-2
	}
	return 1e-3
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
				p.gpu.ResetLaunches()
				p.gpu.Attention(og, lg, qg, kg, vg, ap)
				p.ran(attnKernels(p.gpu, dt, c.HD, "fwd")...)
				p.check("lse", lc, lg, lseTol)
				p.checkRows("out", oc, og, c.HD, tolFor(dt), rowTolFor(dt))
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
				p.gpu.ResetLaunches()
				p.gpu.AttentionBackward(dqg, dkg, dvg, dog, og, lg, qg, kg, vg, ap)
				p.ran(attnKernels(p.gpu, dt, c.HD, "bwd")...)
				tol, rowTol := tolFor(dt), rowTolFor(dt)
				p.checkRows("dq", dqc, dqg, c.HD, tol, rowTol)
				p.checkRows("dk", dkc, dkg, c.HD, tol, rowTol)
				p.checkRows("dv", dvc, dvg, c.HD, tol, rowTol)
				p.check("lse unchanged", lc, lg, 0)
			})
		}
	}
}

// attnKernels are the kernels an attention call of dtype dt and head size
// hd must launch on b: the tensor-core ones for BF16 at 64, 80, 96, 128 on
// compute capability 8.0 and later, else the scalar ones.
func attnKernels(b *Backend, dt kdrt.DType, hd int, pass string) []string {
	mma := dt == kdrt.BF16 && b.dev.Major >= 8 && (hd == 64 || hd == 80 || hd == 96 || hd == 128)
	switch {
	case pass == "fwd" && mma:
		return []string{fmt.Sprintf("attn_mma_fwd_%d", hd)}
	case pass == "fwd":
		return []string{kernelFor("attn_fwd", dt)}
	case mma:
		return []string{kernelFor("attn_bwd_dot", dt), fmt.Sprintf("attn_mma_bwd_dq_%d", hd), fmt.Sprintf("attn_mma_bwd_dkv_%d", hd)}
	}
	return []string{kernelFor("attn_bwd_dot", dt), kernelFor("attn_bwd_dq", dt), kernelFor("attn_bwd_dkv", dt)}
}

// ran fails the test unless the GPU launched exactly the kernels names,
// once each, since its last ResetLaunches.
func (p *pair) ran(names ...string) {
	p.t.Helper()
	got := p.gpu.Launches().ByKernel
	for _, n := range names {
		if got[n] != 1 {
			p.t.Errorf("kernel %s ran %d times, want once (launched: %v)", n, got[n], got)
		}
	}
	if len(got) != len(names) {
		p.t.Errorf("launched %v, want only %v", got, names)
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
			for i, pos := range c.pos {
				// Sequence b's query is at the case's position, or (from the
				// second sequence on) at another one of the case's.
				at := make([]int32, B)
				for b := range at {
					at[b] = int32(c.pos[(i+b)%len(c.pos)])
				}
				name := fmt.Sprintf("%s/B%d_Tmax%d_NH%d_NKV%d_HD%d_W%d_KS%v/pos%d", dt, c.B, c.Tmax, c.NH, c.NKV, c.HD, c.window, c.keyStart, pos)
				t.Run(name, func(t *testing.T) {
					p.t = t
					qc, qg := p.rand("q", dt, 1, B, c.NH*c.HD)
					kc, kg := p.rand("k cache", dt, 1, B*c.Tmax, c.NKV*c.HD)
					vc, vg := p.rand("v cache", dt, 1, B*c.Tmax, c.NKV*c.HD)
					oc, og := p.rand("out", dt, 3, B, c.NH*c.HD)
					ac, ag := p.ints("at", at, B)
					p.cpu.AttentionDecode(oc, qc, kc, vc, ac, ap)
					p.gpu.AttentionDecode(og, qg, kg, vg, ag, ap)
					p.checkRows("out", oc, og, c.HD, tolFor(dt), rowTolFor(dt))
				})
			}
		}
	}
}

// TestKVAppend: new rows written at each sequence's position, read from the
// device, land where the CPU puts them (bit for bit: a copy), for one
// sequence and for several in one call; a position past the cache (which
// the CPU refuses) writes nothing on the device, and a decode query there
// gives zeros rather than reading past the cache.
func TestKVAppend(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, c := range []struct {
			B, n, Tmax, C int
			at            []int32
		}{
			{B: 1, n: 1, Tmax: 9, C: 32, at: []int32{5}},
			{B: 1, n: 7, Tmax: 9, C: 24, at: []int32{2}},
			{B: 3, n: 2, Tmax: 20, C: 300, at: []int32{0, 11, 18}},
		} {
			t.Run(fmt.Sprintf("%s/B%d_n%d_C%d", dt, c.B, c.n, c.C), func(t *testing.T) {
				p.t = t
				kc, kg := p.rand("cache", dt, 1, c.B*c.Tmax, c.C)
				sc, sg := p.rand("src", dt, 1, c.B*c.n, c.C)
				ac, ag := p.ints("at", c.at, c.B)
				p.cpu.KVAppend(kc, sc, ac)
				p.gpu.KVAppend(kg, sg, ag)
				p.check("cache", kc, kg, 0)
			})
		}
	}
	t.Run("past the cache", func(t *testing.T) {
		p.t = t
		const Tmax, C = 6, 16
		_, kg := p.rand("cache", kdrt.F32, 1, 2*Tmax, C)
		before := values(t, p.gpu, kg)
		_, sg := p.rand("src", kdrt.F32, 1, 2*2, C)
		_, ag := p.ints("at", []int32{Tmax - 1, -3}, 2)
		p.gpu.KVAppend(kg, sg, ag) // sequence 0's second row and both of sequence 1's fall outside
		after, src := values(t, p.gpu, kg), values(t, p.gpu, sg)
		for i := range after {
			want := before[i]
			if i >= (Tmax-1)*C && i < Tmax*C { // sequence 0's first new row
				want = src[i-(Tmax-1)*C]
			}
			if after[i] != want {
				t.Fatalf("cache element %d is %v after the append, want %v", i, after[i], want)
			}
		}
		ap := kdrt.AttentionParams{B: 2, T: 1, NH: 2, NKV: 1, HD: C, Scale: 0.25}
		_, qg := p.rand("q", kdrt.F32, 1, 2, 2*C)
		_, og := p.rand("out", kdrt.F32, 1, 2, 2*C)
		_, vg := p.rand("v cache", kdrt.F32, 1, 2*Tmax, C)
		_, at := p.ints("at", []int32{Tmax, 2}, 2)
		p.gpu.AttentionDecode(og, qg, kg, vg, at, ap)
		for i, x := range values(t, p.gpu, og)[:2*C] {
			if x != 0 {
				t.Fatalf("the query past the cache gave %v at %d, want zeros", x, i)
			}
		}
	})
}
