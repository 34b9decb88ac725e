package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// naiveAttention is the independent reference: the definition with explicit
// loops over the full score row, no tiles, no gemm, no online softmax. It
// returns out [B, T, NH, HD] and lse [B, NH, T].
func naiveAttention(q, k, v []float64, p kdrt.AttentionParams) (out, lse []float64) {
	B, T, NH, NKV, HD := p.B, p.T, p.NH, p.NKV, p.HD
	out, lse = make([]float64, B*T*NH*HD), make([]float64, B*NH*T)
	visible := func(b, t, s int) bool {
		if s > t || (p.Window > 0 && t-s >= p.Window) {
			return false
		}
		return p.KeyStart == nil || s >= p.KeyStart[b]
	}
	for b := range B {
		for h := range NH {
			kh := h / (NH / NKV)
			for t := range T {
				scores := make([]float64, T)
				mx := math.Inf(-1)
				for s := range T {
					if !visible(b, t, s) {
						continue
					}
					var d float64
					for i := range HD {
						d += q[((b*T+t)*NH+h)*HD+i] * k[((b*T+s)*NKV+kh)*HD+i]
					}
					scores[s] = d * float64(p.Scale)
					mx = max(mx, scores[s])
				}
				var sum float64
				w := make([]float64, T)
				for s := range T {
					if visible(b, t, s) {
						w[s] = math.Exp(scores[s] - mx)
						sum += w[s]
					}
				}
				if sum == 0 {
					lse[(b*NH+h)*T+t] = math.Inf(-1)
					continue
				}
				lse[(b*NH+h)*T+t] = mx + math.Log(sum)
				for s := range T {
					for i := range HD {
						out[((b*T+t)*NH+h)*HD+i] += w[s] / sum * v[((b*T+s)*NKV+kh)*HD+i]
					}
				}
			}
		}
	}
	return out, lse
}

// attnGradCases cover GQA with a head count that is not a power of two,
// length 1, sliding windows, plain multi-head, and left padding that differs
// per sequence, including a sequence that is all padding.
var attnGradCases = []kdrt.AttentionParams{
	{B: 2, T: 5, NH: 3, NKV: 1, HD: 4},
	{B: 1, T: 1, NH: 2, NKV: 2, HD: 3},
	{B: 2, T: 6, NH: 6, NKV: 2, HD: 2, Window: 3},
	{B: 1, T: 4, NH: 5, NKV: 5, HD: 8},
	{B: 3, T: 9, NH: 4, NKV: 2, HD: 3, Window: 4, KeyStart: []int{0, 3, 9}},
	{B: 2, T: 11, NH: 2, NKV: 1, HD: 2, KeyStart: []int{5, 1}},
}

// TestAttentionGrad checks the tiled forward (out and lse) against the naive
// definition, and its recomputing backward against float64 finite
// differences, at tile sizes that put tile edges everywhere (1: every key
// its own tile) and one larger than the sequence.
func TestAttentionGrad(t *testing.T) {
	for ci, p := range attnGradCases {
		p.Scale = float32(1 / math.Sqrt(float64(p.HD)))
		for _, tile := range []int{1, 2, 3, 64} {
			t.Run(fmt.Sprintf("%d/tile%d", ci, tile), func(t *testing.T) {
				r := rand.New(rand.NewPCG(7, uint64(ci)))
				nq, nk := p.B*p.T*p.NH*p.HD, p.B*p.T*p.NKV*p.HD
				q, k, v, g := randn(r, nq, 1), randn(r, nk, 1), randn(r, nk, 1), randn(r, nq, 1)
				out, lse := make([]float64, nq), make([]float64, p.B*p.NH*p.T)
				loss := func() float64 { attentionForward(out, lse, q, k, v, p, tile); return dot64(out, g) }
				loss()
				wantOut, wantLSE := naiveAttention(q, k, v, p)
				assertClose(t, "attention forward", out, wantOut, 1e-12)
				checkLSE(t, lse, wantLSE)
				// The backward writes: garbage in the gradients must not survive.
				dq, dk, dv := randn(r, nq, 5), randn(r, nk, 5), randn(r, nk, 5)
				attentionBackward(dq, dk, dv, g, out, lse, q, k, v, p, tile)
				checkGrad(t, "attention dq", q, dq, loss)
				checkGrad(t, "attention dk", k, dk, loss)
				checkGrad(t, "attention dv", v, dv, loss)
			})
		}
	}
}

// checkLSE compares log-sum-exps, which must agree on which rows are −Inf.
func checkLSE(t *testing.T, got, want []float64) {
	t.Helper()
	for i := range want {
		if math.IsInf(want[i], -1) != math.IsInf(got[i], -1) || !math.IsInf(want[i], -1) && math.Abs(got[i]-want[i]) > 1e-12*(1+math.Abs(want[i])) {
			t.Fatalf("lse[%d] = %g, want %g", i, got[i], want[i])
		}
	}
}

// TestAttentionBackendF32: the float32 backend, with its own tile size,
// agrees with the float64 algorithm on shapes longer than a tile, and a
// padding query gets a zero output row and an lse of −Inf.
func TestAttentionBackendF32(t *testing.T) {
	be := New()
	for ci, p := range []kdrt.AttentionParams{
		{B: 2, T: 150, NH: 4, NKV: 2, HD: 16, Window: 70, KeyStart: []int{0, 131}},
		{B: 1, T: 129, NH: 2, NKV: 1, HD: 8},
	} {
		p.Scale = float32(1 / math.Sqrt(float64(p.HD)))
		r := rand.New(rand.NewPCG(9, uint64(ci)))
		nq, nk := p.B*p.T*p.NH*p.HD, p.B*p.T*p.NKV*p.HD
		q, k, v, g := randn(r, nq, 1), randn(r, nk, 1), randn(r, nk, 1), randn(r, nq, 1)
		// The float64 reference, rounded inputs so both see the same values.
		q, k, v, g = to64(to32(q)), to64(to32(k)), to64(to32(v)), to64(to32(g))
		out, lse := make([]float64, nq), make([]float64, p.B*p.NH*p.T)
		attentionForward(out, lse, q, k, v, p, 7)
		wantOut, wantLSE := naiveAttention(q, k, v, p)
		assertClose(t, "attention forward, tile 7", out, wantOut, 1e-12)
		checkLSE(t, lse, wantLSE)
		dq, dk, dv := make([]float64, nq), make([]float64, nk), make([]float64, nk)
		attentionBackward(dq, dk, dv, g, out, lse, q, k, v, p, 7)

		tq, tk, tv := f32Tensor(be, "q", q), f32Tensor(be, "k", k), f32Tensor(be, "v", v)
		tout, _ := be.Alloc("out", kdrt.F32, nq)
		tlse, _ := be.Alloc("lse", kdrt.F32, p.B, p.NH, p.T)
		be.Attention(tout, tlse, tq, tk, tv, p)
		assertClose(t, "attention f32", to64(Float32s(tout)), out, 1e-5)
		for i, l := range Float32s(tlse) {
			if math.IsInf(lse[i], -1) != math.IsInf(float64(l), -1) || !math.IsInf(lse[i], -1) && math.Abs(float64(l)-lse[i]) > 1e-5 {
				t.Fatalf("lse f32 [%d] = %g, want %g", i, l, lse[i])
			}
		}
		if p.KeyStart != nil { // sequence 1's first 131 queries are padding
			b, row := 1, p.NH*p.HD
			for i, o := range Float32s(tout)[(b*p.T)*row : (b*p.T+131)*row] {
				if o != 0 {
					t.Fatalf("padding query output element %d = %g, want 0", i, o)
				}
			}
		}
		tdq, _ := be.Alloc("dq", kdrt.F32, nq)
		tdk, _ := be.Alloc("dk", kdrt.F32, nk)
		tdv, _ := be.Alloc("dv", kdrt.F32, nk)
		for _, x := range [][]float32{Float32s(tdq), Float32s(tdk), Float32s(tdv)} {
			for i := range x {
				x[i] = 7 // the backward writes
			}
		}
		be.AttentionBackward(tdq, tdk, tdv, f32Tensor(be, "g", g), tout, tlse, tq, tk, tv, p)
		assertClose(t, "attention dq f32", to64(Float32s(tdq)), dq, 1e-5)
		assertClose(t, "attention dk f32", to64(Float32s(tdk)), dk, 1e-5)
		assertClose(t, "attention dv f32", to64(Float32s(tdv)), dv, 1e-5)
	}
}

// TestAttentionShapePanics: an lse of the wrong size (the old [B, NH, T, T]
// probabilities, say) is a programming error naming the tensors.
func TestAttentionShapePanics(t *testing.T) {
	be := New()
	p := kdrt.AttentionParams{B: 1, T: 4, NH: 2, NKV: 1, HD: 2, Scale: 1}
	q, _ := be.Alloc("q", kdrt.F32, 1, 4, 2, 2)
	k, _ := be.Alloc("k", kdrt.F32, 1, 4, 1, 2)
	v, _ := be.Alloc("v", kdrt.F32, 1, 4, 1, 2)
	out, _ := be.Alloc("out", kdrt.F32, 1, 4, 2, 2)
	probs, _ := be.Alloc("probs", kdrt.F32, 1, 2, 4, 4)
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "probs") {
			t.Errorf("attention with a [B, NH, T, T] lse: recovered %v, want a panic naming it", r)
		}
	}()
	be.Attention(out, probs, q, k, v, p)
}
