// Package backendtest is the conformance suite every Backend runs against
// the CPU backend's float32 ops, the numerical reference. The CPU backend
// runs it on its own BF16 storage, the CUDA backend on the GPU (or the
// kernel emulator): one line each (see BF16).
package backendtest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
	"github.com/kdnative/kdnative/runtime/half"
)

// Tol is the relative L2 error allowed for an output whose path from the
// inputs rounds to bfloat16 k times: √k·2⁻⁸ (each rounding to nearest moves
// every element by at most 2⁻⁸ of its magnitude; independent roundings add
// in quadrature), plus 1e-5 for float32 arithmetic done in another order.
// k = 0 is an output kept in float32 throughout.
func Tol(k int) float64 { return math.Sqrt(float64(k))*math.Exp2(-8) + 1e-5 }

// suite runs ops on be and on the F32 reference with equal inputs.
type suite struct {
	t   *testing.T
	be  kdrt.Backend
	ref *cpu.Backend
	rng *rand.Rand
}

// pair is one operand on both sides: ref is F32 on the CPU, dev has the
// dtype under test on be.
type pair struct{ ref, dev *kdrt.Tensor }

// BF16 checks every op a model, a loss and the optimizer run under
// precision bf16, with BF16 storage on be (and F32 where the mixed-precision
// path keeps F32: weight gradients, statistics, logits, losses, master
// weights and moments), against the CPU's F32 ops on the same inputs, each
// within Tol(k) for its k. Inputs are bf16 values, so both sides start
// equal and the difference is what storing in bf16 costs. Shapes are small
// (the kernel emulator runs this in CI).
func BF16(t *testing.T, be kdrt.Backend) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	s := &suite{be: be, ref: cpu.New(), rng: rand.New(rand.NewPCG(seed, 0xbf16))}
	for _, c := range bf16Cases {
		t.Run(c.name, func(t *testing.T) {
			s.t = t
			c.run(s)
		})
	}
}

type opCase struct {
	name string
	run  func(s *suite)
}

// round is v rounded to bf16 (to make inputs both sides hold exactly).
func round(v float32) float32 { return half.BF16ToF32(half.F32ToBF16(v)) }

func (s *suite) alloc(b kdrt.Backend, name string, dt kdrt.DType, shape []int) *kdrt.Tensor {
	s.t.Helper()
	x, err := b.Alloc(name, dt, shape...)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { b.Free(x) })
	return x
}

// vals makes a pair holding vals (rounded to bf16 for a BF16 dev tensor, and
// then on both sides).
func (s *suite) vals(name string, dt kdrt.DType, vals []float32, shape ...int) pair {
	s.t.Helper()
	vals = append([]float32(nil), vals...)
	if dt == kdrt.BF16 {
		for i, v := range vals {
			vals[i] = round(v)
		}
	}
	p := pair{s.alloc(s.ref, name, kdrt.F32, shape), s.alloc(s.be, name, dt, shape)}
	if err := s.ref.Upload(p.ref, vals); err != nil {
		s.t.Fatal(err)
	}
	if err := s.be.Upload(p.dev, vals); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// rand is vals with uniform values in [−scale, scale).
func (s *suite) rand(name string, dt kdrt.DType, scale float32, shape ...int) pair {
	v := make([]float32, kdrt.Numel(shape))
	for i := range v {
		v[i] = scale * (2*s.rng.Float32() - 1)
	}
	return s.vals(name, dt, v, shape...)
}

func (s *suite) ints(name string, vals []int32, shape ...int) pair {
	s.t.Helper()
	p := pair{s.alloc(s.ref, name, kdrt.I32, shape), s.alloc(s.be, name, kdrt.I32, shape)}
	if err := s.ref.UploadInt32(p.ref, vals); err != nil {
		s.t.Fatal(err)
	}
	if err := s.be.UploadInt32(p.dev, vals); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// positions are N position ids in [0, maxPos).
func (s *suite) positions(N, maxPos int) pair {
	v := make([]int32, N)
	for i := range v {
		v[i] = int32(s.rng.IntN(maxPos))
	}
	return s.ints("positions", v, N)
}

// invFreq is RoPE's inverse frequencies for head size HD (base 10000).
func (s *suite) invFreq(HD int) pair {
	v := make([]float32, HD/2)
	for i := range v {
		v[i] = float32(1 / math.Pow(10000, float64(2*i)/float64(HD)))
	}
	return s.vals("inv_freq", kdrt.F32, v, HD/2)
}

func download(t *testing.T, b kdrt.Backend, x *kdrt.Tensor) []float32 {
	t.Helper()
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	v := make([]float32, x.Numel())
	if err := b.Download(x, v); err != nil {
		t.Fatal(err)
	}
	return v
}

// relErr is ‖got − want‖₂/‖want‖₂ (absolute below ‖want‖₂ = 1e-6); a NaN or
// an infinity where the other side has none is an infinite error.
func relErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		if math.IsNaN(g) != math.IsNaN(w) || math.IsInf(g, 0) != math.IsInf(w, 0) {
			return math.Inf(1)
		}
		if math.IsNaN(w) || math.IsInf(w, 0) {
			continue
		}
		num += (g - w) * (g - w)
		den += w * w
	}
	if den < 1e-12 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

// check compares an output's two sides within Tol(k).
func (s *suite) check(what string, p pair, k int) {
	s.t.Helper()
	want, got := download(s.t, s.ref, p.ref), download(s.t, s.be, p.dev)
	e, tol := relErr(got, want), Tol(k)
	s.t.Logf("%-28s %s  relative error %.2e  (tolerance %.2e, k = %d)", what, p.dev.DType, e, tol, k)
	if !(e <= tol) {
		s.t.Errorf("%s (%v): relative error %.3g above √%d·2⁻⁸ + 1e-5 = %.3g", what, p.dev, e, k, tol)
	}
}

const (
	bf  = kdrt.BF16
	f32 = kdrt.F32
)

// The shapes: N rows of width C (a multiple of 8 takes the GPU's vector
// paths, an odd one the scalar ones), F the MLP width, V the vocabulary.
const (
	nRows = 24
	width = 64
	oddC  = 37
	mlpF  = 96
	vocab = 50
)

var bf16Cases = []opCase{
	{"MatMul", func(s *suite) {
		// The three products of a linear layer: y = x·Wᵀ (BF16 out), and
		// its backward dx = dy·W (BF16) and dW += dyᵀ·x (F32, accumulated).
		x, w := s.rand("x", bf, 1, nRows, width), s.rand("w", bf, 1, mlpF, width)
		y := s.rand("y", bf, 1, nRows, mlpF)
		s.ref.MatMul(y.ref, x.ref, w.ref, false, true, 1, 0)
		s.be.MatMul(y.dev, x.dev, w.dev, false, true, 1, 0)
		s.check("y = x·Wᵀ", y, 1)
		dy, dx := s.rand("dy", bf, 1, nRows, mlpF), s.rand("dx", bf, 1, nRows, width)
		s.ref.MatMul(dx.ref, dy.ref, w.ref, false, false, 1, 1)
		s.be.MatMul(dx.dev, dy.dev, w.dev, false, false, 1, 1)
		s.check("dx += dy·W", dx, 1)
		dw := s.rand("dw", f32, 1, mlpF, width)
		s.ref.MatMul(dw.ref, dy.ref, x.ref, true, false, 1, 1)
		s.be.MatMul(dw.dev, dy.dev, x.dev, true, false, 1, 1)
		s.check("dW += dyᵀ·x (F32)", dw, 0)
		// Logits in F32 straight from the accumulator (the fused losses).
		h, head := s.rand("hidden", bf, 1, nRows, width), s.rand("head", bf, 1, vocab, width)
		logits := s.rand("logits", f32, 1, nRows, vocab)
		s.ref.MatMul(logits.ref, h.ref, head.ref, false, true, 1, 0)
		s.be.MatMul(logits.dev, h.dev, head.dev, false, true, 1, 0)
		s.check("logits = h·headᵀ (F32)", logits, 0)
		// Both operands transposed, α and β other than 0 and 1.
		a, b := s.rand("a", bf, 1, oddC, nRows), s.rand("b", bf, 1, mlpF, oddC)
		c := s.rand("c", bf, 1, nRows, mlpF)
		s.ref.MatMul(c.ref, a.ref, b.ref, true, true, 0.5, -2)
		s.be.MatMul(c.dev, a.dev, b.dev, true, true, 0.5, -2)
		s.check("c = ½aᵀbᵀ − 2c", c, 1)
	}},
	{"AddBias", func(s *suite) {
		y, b := s.rand("y", bf, 1, nRows, oddC), s.rand("bias", bf, 1, oddC)
		s.ref.AddBias(y.ref, b.ref)
		s.be.AddBias(y.dev, b.dev)
		s.check("y + bias", y, 1)
	}},
	{"BiasBackward", func(s *suite) {
		dy, db := s.rand("dy", bf, 1, nRows, oddC), s.rand("dbias", f32, 1, oddC)
		s.ref.BiasBackward(db.ref, dy.ref)
		s.be.BiasBackward(db.dev, dy.dev)
		s.check("dbias += Σ dy (F32)", db, 0)
	}},
	{"Add", func(s *suite) {
		a, b, d := s.rand("a", bf, 1, nRows, width), s.rand("b", bf, 1, nRows, width), s.rand("dst", bf, 1, nRows, width)
		s.ref.Add(d.ref, a.ref, b.ref)
		s.be.Add(d.dev, a.dev, b.dev)
		s.check("a + b", d, 1)
		s.ref.Add(a.ref, a.ref, b.ref) // in place
		s.be.Add(a.dev, a.dev, b.dev)
		s.check("a += b", a, 1)
	}},
	{"Scale", func(s *suite) {
		x := s.rand("x", bf, 1, nRows, oddC)
		s.ref.Scale(x.ref, 0.3)
		s.be.Scale(x.dev, 0.3)
		s.check("0.3·x", x, 1)
	}},
	{"SumSquares", func(s *suite) {
		x, y := s.rand("x", bf, 1, nRows, oddC), s.rand("y", bf, 2, mlpF)
		want, _ := s.ref.SumSquares(x.ref, y.ref)
		got, err := s.be.SumSquares(x.dev, y.dev)
		if err != nil {
			s.t.Fatal(err)
		}
		if e := math.Abs(got-want) / want; !(e <= Tol(0)) {
			s.t.Errorf("Σx² of BF16 tensors %g, reference %g (relative error %.3g)", got, want, e)
		}
	}},
	{"Cast", func(s *suite) {
		v := make([]float32, nRows*oddC)
		for i := range v {
			v[i] = float32(s.rng.NormFloat64() * 3)
		}
		src := s.vals("src", f32, v, nRows, oddC)
		dst := s.alloc(s.be, "dst", bf, []int{nRows, oddC})
		s.be.Cast(dst, src.dev)
		got := download(s.t, s.be, dst)
		for i := range v {
			if got[i] != round(v[i]) {
				s.t.Fatalf("cast of %g to BF16 gave %g, want %g (nearest even)", v[i], got[i], round(v[i]))
			}
		}
		back := s.alloc(s.be, "back", f32, []int{nRows, oddC})
		s.be.Cast(back, dst)
		for i, g := range download(s.t, s.be, back) {
			if g != round(v[i]) {
				s.t.Fatalf("cast back to F32 gave %g, want %g (exact)", g, round(v[i]))
			}
		}
	}},
	{"Embedding", func(s *suite) {
		ids := make([]int32, nRows)
		for i := range ids {
			ids[i] = int32(s.rng.IntN(vocab / 4)) // repeats, for the backward
		}
		id := s.ints("ids", ids, nRows)
		table, out := s.rand("table", bf, 1, vocab, width), s.rand("out", bf, 1, nRows, width)
		s.ref.Embedding(out.ref, id.ref, table.ref)
		s.be.Embedding(out.dev, id.dev, table.dev)
		s.check("gather", out, 0) // stored values copied: exact
		dt, dout := s.rand("dtable", f32, 1, vocab, width), s.rand("dout", bf, 1, nRows, width)
		s.ref.EmbeddingBackward(dt.ref, dout.ref, id.ref)
		s.be.EmbeddingBackward(dt.dev, dout.dev, id.dev)
		s.check("dtable += scatter (F32)", dt, 0)
	}},
	{"RMSNorm", func(s *suite) {
		for _, C := range []int{width, oddC} {
			x, w := s.rand("x", bf, 2, nRows, C), s.rand("w", bf, 1, C)
			out, rstd := s.rand("out", bf, 1, nRows, C), s.rand("rstd", f32, 1, nRows)
			s.ref.RMSNorm(out.ref, rstd.ref, x.ref, w.ref, 1e-6)
			s.be.RMSNorm(out.dev, rstd.dev, x.dev, w.dev, 1e-6)
			s.check(fmt.Sprintf("out C=%d", C), out, 1)
			s.check(fmt.Sprintf("rstd (F32) C=%d", C), rstd, 0)
			dx, dw, dout := s.rand("dx", bf, 1, nRows, C), s.rand("dw", f32, 1, C), s.rand("dout", bf, 1, nRows, C)
			s.ref.RMSNormBackward(dx.ref, dw.ref, dout.ref, x.ref, w.ref, rstd.ref)
			s.be.RMSNormBackward(dx.dev, dw.dev, dout.dev, x.dev, w.dev, rstd.dev)
			s.check(fmt.Sprintf("dx C=%d", C), dx, 1)
			s.check(fmt.Sprintf("dw (F32) C=%d", C), dw, 0)
		}
	}},
	{"AddRMSNorm", func(s *suite) {
		for _, C := range []int{width, oddC} {
			a, b, w := s.rand("a", bf, 2, nRows, C), s.rand("b", bf, 2, nRows, C), s.rand("w", bf, 1, C)
			sum, out, rstd := s.rand("sum", bf, 1, nRows, C), s.rand("out", bf, 1, nRows, C), s.rand("rstd", f32, 1, nRows)
			s.ref.AddRMSNorm(sum.ref, out.ref, rstd.ref, a.ref, b.ref, w.ref, 1e-6)
			s.be.AddRMSNorm(sum.dev, out.dev, rstd.dev, a.dev, b.dev, w.dev, 1e-6)
			s.check(fmt.Sprintf("sum C=%d", C), sum, 1)
			// The norm reads the sum as stored: two roundings to out.
			s.check(fmt.Sprintf("out C=%d", C), out, 2)
			s.check(fmt.Sprintf("rstd (F32) C=%d", C), rstd, 1)
		}
	}},
	{"LayerNorm", func(s *suite) {
		v := make([]float32, nRows*oddC)
		for i := range v {
			v[i] = 0.5 + 2*(2*s.rng.Float32()-1) // an offset mean: the two-pass variance matters
		}
		x := s.vals("x", bf, v, nRows, oddC)
		w, b := s.rand("w", bf, 1, oddC), s.rand("b", bf, 1, oddC)
		out, mean, rstd := s.rand("out", bf, 1, nRows, oddC), s.rand("mean", f32, 1, nRows), s.rand("rstd", f32, 1, nRows)
		s.ref.LayerNorm(out.ref, mean.ref, rstd.ref, x.ref, w.ref, b.ref, 1e-5)
		s.be.LayerNorm(out.dev, mean.dev, rstd.dev, x.dev, w.dev, b.dev, 1e-5)
		s.check("out", out, 1)
		s.check("mean (F32)", mean, 0)
		s.check("rstd (F32)", rstd, 0)
		dx, dw, db, dout := s.rand("dx", bf, 1, nRows, oddC), s.rand("dw", f32, 1, oddC), s.rand("db", f32, 1, oddC), s.rand("dout", bf, 1, nRows, oddC)
		s.ref.LayerNormBackward(dx.ref, dw.ref, db.ref, dout.ref, x.ref, w.ref, mean.ref, rstd.ref)
		s.be.LayerNormBackward(dx.dev, dw.dev, db.dev, dout.dev, x.dev, w.dev, mean.dev, rstd.dev)
		s.check("dx", dx, 1)
		s.check("dw (F32)", dw, 0)
		s.check("db (F32)", db, 0)
	}},
	{"RoPE", func(s *suite) {
		const H, HD = 3, 16
		x, pos, inv := s.rand("x", bf, 1, nRows, H*HD), s.positions(nRows, 4096), s.invFreq(HD)
		s.ref.RoPE(x.ref, pos.ref, inv.ref)
		s.be.RoPE(x.dev, pos.dev, inv.dev)
		s.check("rotated", x, 1)
		s.ref.RoPEBackward(x.ref, pos.ref, inv.ref)
		s.be.RoPEBackward(x.dev, pos.dev, inv.dev)
		s.check("rotated back", x, 2)
	}},
	{"QKVBiasRoPE", func(s *suite) {
		const NH, NKV, HD = 4, 2, 16
		W := (NH + 2*NKV) * HD
		qkv, bias := s.rand("qkv", bf, 1, nRows, W), s.rand("bias", bf, 1, W)
		pos, inv := s.positions(nRows, 512), s.invFreq(HD)
		q, k, v := s.rand("q", bf, 1, nRows, NH*HD), s.rand("k", bf, 1, nRows, NKV*HD), s.rand("v", bf, 1, nRows, NKV*HD)
		s.ref.QKVBiasRoPE(q.ref, k.ref, v.ref, qkv.ref, bias.ref, pos.ref, inv.ref)
		s.be.QKVBiasRoPE(q.dev, k.dev, v.dev, qkv.dev, bias.dev, pos.dev, inv.dev)
		s.check("q", q, 1)
		s.check("k", k, 1)
		s.check("v", v, 1)
		dqkv, dbias := s.rand("dqkv", bf, 1, nRows, W), s.rand("dbias", f32, 1, W)
		s.ref.QKVBiasRoPEBackward(dqkv.ref, dbias.ref, q.ref, k.ref, v.ref, pos.ref, inv.ref)
		s.be.QKVBiasRoPEBackward(dqkv.dev, dbias.dev, q.dev, k.dev, v.dev, pos.dev, inv.dev)
		s.check("dqkv", dqkv, 2)
		s.check("dbias (F32)", dbias, 1)
	}},
	{"Attention", func(s *suite) {
		// Head size 64 takes the GPU's tensor-core kernels, which round the
		// probabilities P (and in the backward dS) to bf16 as the inputs of
		// their products: one rounding more per product on the path.
		for _, c := range []kdrt.AttentionParams{
			{B: 2, T: 40, NH: 4, NKV: 2, HD: 64},
			{B: 2, T: 23, NH: 2, NKV: 1, HD: 16, Window: 7, KeyStart: []int{3, 0}},
		} {
			c.Scale = float32(1 / math.Sqrt(float64(c.HD)))
			name := fmt.Sprintf("T%d HD%d", c.T, c.HD)
			q := s.rand("q", bf, 1, c.B, c.T, c.NH, c.HD)
			k := s.rand("k", bf, 1, c.B, c.T, c.NKV, c.HD)
			v := s.rand("v", bf, 1, c.B, c.T, c.NKV, c.HD)
			out, lse := s.rand("out", bf, 1, c.B, c.T, c.NH, c.HD), s.rand("lse", f32, 1, c.B, c.NH, c.T)
			s.ref.Attention(out.ref, lse.ref, q.ref, k.ref, v.ref, c)
			s.be.Attention(out.dev, lse.dev, q.dev, k.dev, v.dev, c)
			s.check("out "+name, out, 2)
			s.check("lse (F32) "+name, lse, 0)
			// The backward from the same saved state on both sides.
			s.be.Upload(out.dev, download(s.t, s.ref, out.ref))
			s.ref.Upload(out.ref, download(s.t, s.be, out.dev))
			dout := s.rand("dout", bf, 1, c.B, c.T, c.NH, c.HD)
			dq, dk, dv := s.rand("dq", bf, 1, c.B, c.T, c.NH, c.HD), s.rand("dk", bf, 1, c.B, c.T, c.NKV, c.HD), s.rand("dv", bf, 1, c.B, c.T, c.NKV, c.HD)
			s.ref.AttentionBackward(dq.ref, dk.ref, dv.ref, dout.ref, out.ref, lse.ref, q.ref, k.ref, v.ref, c)
			s.be.AttentionBackward(dq.dev, dk.dev, dv.dev, dout.dev, out.dev, lse.dev, q.dev, k.dev, v.dev, c)
			s.check("dq "+name, dq, 3)
			s.check("dk "+name, dk, 3)
			s.check("dv "+name, dv, 2)
		}
	}},
	{"AttentionDecode", func(s *suite) {
		c := kdrt.AttentionParams{B: 2, NH: 4, NKV: 2, HD: 16, KeyStart: []int{0, 2}}
		c.Scale = 0.25
		const Tmax = 12
		kc, vc := s.rand("k cache", bf, 1, c.B*Tmax, c.NKV*c.HD), s.rand("v cache", bf, 1, c.B*Tmax, c.NKV*c.HD)
		// New keys and values appended at each sequence's position first.
		at := s.ints("at", []int32{9, 6}, c.B)
		nk, nv := s.rand("new k", bf, 1, c.B, c.NKV*c.HD), s.rand("new v", bf, 1, c.B, c.NKV*c.HD)
		s.ref.KVAppend(kc.ref, nk.ref, at.ref)
		s.be.KVAppend(kc.dev, nk.dev, at.dev)
		s.ref.KVAppend(vc.ref, nv.ref, at.ref)
		s.be.KVAppend(vc.dev, nv.dev, at.dev)
		s.check("k cache after append", kc, 0)
		s.check("v cache after append", vc, 0)
		q, out := s.rand("q", bf, 1, c.B, c.NH*c.HD), s.rand("out", bf, 1, c.B, c.NH*c.HD)
		s.ref.AttentionDecode(out.ref, q.ref, kc.ref, vc.ref, at.ref, c)
		s.be.AttentionDecode(out.dev, q.dev, kc.dev, vc.dev, at.dev, c)
		s.check("out", out, 1)
	}},
	{"SwiGLU", func(s *suite) {
		g, u, out := s.rand("gate", bf, 3, nRows, mlpF), s.rand("up", bf, 1, nRows, mlpF), s.rand("out", bf, 1, nRows, mlpF)
		s.ref.SwiGLU(out.ref, g.ref, u.ref)
		s.be.SwiGLU(out.dev, g.dev, u.dev)
		s.check("silu(gate)·up", out, 1)
		dg, du, dout := s.rand("dgate", bf, 1, nRows, mlpF), s.rand("dup", bf, 1, nRows, mlpF), s.rand("dout", bf, 1, nRows, mlpF)
		s.ref.SwiGLUBackward(dg.ref, du.ref, dout.ref, g.ref, u.ref)
		s.be.SwiGLUBackward(dg.dev, du.dev, dout.dev, g.dev, u.dev)
		s.check("dgate", dg, 1)
		s.check("dup", du, 1)
	}},
	{"GELU", func(s *suite) {
		x, out := s.rand("x", bf, 3, nRows, oddC), s.rand("out", bf, 1, nRows, oddC)
		s.ref.GELU(out.ref, x.ref)
		s.be.GELU(out.dev, x.dev)
		s.check("gelu", out, 1)
		dx, dout := s.rand("dx", bf, 1, nRows, oddC), s.rand("dout", bf, 1, nRows, oddC)
		s.ref.GELUBackward(dx.ref, dout.ref, x.ref)
		s.be.GELUBackward(dx.dev, dout.dev, x.dev)
		s.check("dx += dout·gelu'", dx, 1)
	}},
	{"RowOps", func(s *suite) {
		x, out, norms := s.rand("x", bf, 1, nRows, oddC), s.rand("out", bf, 1, nRows, oddC), s.rand("norms", f32, 1, nRows)
		s.ref.RowNormalize(out.ref, norms.ref, x.ref, 1e-8)
		s.be.RowNormalize(out.dev, norms.dev, x.dev, 1e-8)
		s.check("normalized", out, 1)
		s.check("norms (F32)", norms, 0)
		dx, dout := s.rand("dx", bf, 1, nRows, oddC), s.rand("dout", bf, 1, nRows, oddC)
		s.ref.RowNormalizeBackward(dx.ref, dout.ref, out.ref, norms.ref, 1e-8)
		s.be.RowNormalizeBackward(dx.dev, dout.dev, out.dev, norms.dev, 1e-8)
		// The two sides' out differ by a rounding already.
		s.check("dx", dx, 3)
		dot := s.rand("dot", f32, 1, nRows)
		s.ref.RowDot(dot.ref, x.ref, dout.ref)
		s.be.RowDot(dot.dev, x.dev, dout.dev)
		s.check("row dot (F32)", dot, 0)
		dst := s.rand("dst", bf, 1, nRows, oddC)
		s.ref.ScaleRows(dst.ref, x.ref, dot.ref, 1)
		s.be.ScaleRows(dst.dev, x.dev, dot.dev, 1)
		s.check("dst += s·x", dst, 1)
	}},
	{"AdamW", func(s *suite) {
		// The per-tensor op on a BF16 parameter: the update in fp32, rounded once.
		p, g := s.rand("param", bf, 1, nRows, oddC), s.rand("grad", bf, 0.1, nRows, oddC)
		zeros := make([]float32, nRows*oddC)
		m, v := s.vals("m", f32, zeros, nRows, oddC), s.vals("v", f32, zeros, nRows, oddC)
		h := kdrt.AdamWParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, Step: 1}
		s.ref.AdamW(p.ref, g.ref, m.ref, v.ref, h)
		s.be.AdamW(p.dev, g.dev, m.dev, v.dev, h)
		s.check("param", p, 1)
		s.check("m (F32)", m, 0)
		s.check("v (F32)", v, 0)
	}},
	{"AdamWStep", adamwStepCase},
}

// adamwStepCase: the multi-tensor step with F32 master weights and BF16
// params, clipping on, against the reference's per-tensor AdamW on the
// masters after scaling the gradients on the host side as torch's
// clip_grad_norm_ does.
func adamwStepCase(s *suite) {
	shapes := [][]int{{nRows, oddC}, {mlpF}, {3, 5}, {200}}
	var slots []kdrt.AdamWSlot
	type ref struct{ master, grad, m, v *kdrt.Tensor }
	var refs []ref
	var params, masters []pair
	for i, sh := range shapes {
		master := s.rand("master", f32, 1, sh...)
		param := s.alloc(s.be, "param", bf, sh)
		s.be.Cast(param, master.dev)
		grad := s.rand("grad", f32, 0.5, sh...)
		m, v := s.vals("m", f32, make([]float32, kdrt.Numel(sh)), sh...), s.vals("v", f32, make([]float32, kdrt.Numel(sh)), sh...)
		slots = append(slots, kdrt.AdamWSlot{Param: param, Master: master.dev, Grad: grad.dev, M: m.dev, V: v.dev, Decay: i%2 == 0, Name: fmt.Sprint(i)})
		refs = append(refs, ref{master.ref, grad.ref, m.ref, v.ref})
		params = append(params, pair{master.ref, param})
		masters = append(masters, master)
	}
	g, err := s.be.PrepareAdamW(slots)
	if err != nil {
		s.t.Fatal(err)
	}
	defer g.Free()
	norm := s.alloc(s.be, "norm", f32, []int{1})
	h := kdrt.AdamWParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
	const maxNorm = 0.25
	for step := 1; step <= 2; step++ {
		h.Step = step
		s.be.AdamWStep(g, norm, h, maxNorm)
		var ss float64
		for _, r := range refs {
			x, _ := s.ref.SumSquares(r.grad)
			ss += x
		}
		want := math.Sqrt(ss)
		got := download(s.t, s.be, norm)[0]
		if e := math.Abs(float64(got)-want) / want; e > 1e-6 {
			s.t.Errorf("step %d: gradient norm %g, reference %g", step, got, want)
		}
		c := float32(min(1, maxNorm/(want+1e-6)))
		for i, r := range refs {
			hs := h
			if i%2 != 0 {
				hs.WeightDecay = 0
			}
			scaled := s.alloc(s.ref, "scaled", f32, r.grad.Shape)
			s.ref.Copy(scaled, r.grad)
			s.ref.Scale(scaled, c)
			s.ref.AdamW(r.master, scaled, r.m, r.v, hs)
		}
	}
	for i := range shapes {
		s.check(fmt.Sprintf("master %d (F32)", i), masters[i], 0)
		s.check(fmt.Sprintf("param %d = bf16(master)", i), params[i], 1)
	}
}
