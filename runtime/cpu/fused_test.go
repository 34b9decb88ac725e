package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// TestAddRMSNorm: the fused op is the add, then the RMSNorm of the sum,
// also when the sum is written over its first input.
func TestAddRMSNorm(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(11, 1))
	N, C := 5, 12
	a, b, w := randn(r, N*C, 1), randn(r, N*C, 1), randn(r, C, 1)
	sum := make([]float64, N*C)
	for i := range sum {
		sum[i] = float64(float32(a[i]) + float32(b[i]))
	}
	want, wantR := make([]float64, N*C), make([]float64, N)
	rmsnormForward(want, wantR, sum, to64(to32(w)), N, C, 1e-6)
	ta, tb, tw := f32Tensor(be, "a", a), f32Tensor(be, "b", b), f32Tensor(be, "w", w)
	for _, inPlace := range []bool{false, true} {
		ts, _ := be.Alloc("sum", kdrt.F32, N, C)
		if inPlace {
			ts = f32Tensor(be, "a", a)
		}
		ts.Shape = []int{N, C}
		to, _ := be.Alloc("out", kdrt.F32, N, C)
		tr, _ := be.Alloc("rstd", kdrt.F32, N)
		ta.Shape, tb.Shape = []int{N, C}, []int{N, C}
		x := ta
		if inPlace {
			x = ts
		}
		be.AddRMSNorm(ts, to, tr, x, tb, tw, 1e-6)
		assertClose(t, "sum", to64(Float32s(ts)), sum, 0)
		assertClose(t, "out", to64(Float32s(to)), want, 1e-6)
		assertClose(t, "rstd", to64(Float32s(tr)), wantR, 1e-6)
	}
}

// TestQKVBiasRoPE: the q/k/v epilogue splits the fused projection, adds
// the bias before rotating (the rotation of HF's q_proj output, which
// includes the bias), and its backward gives the bias the row sum of the
// unrotated gradient: checked against float64 finite differences of
// Σ g·rope(x_q + b_q) + Σ gk·rope(x_k + b_k) + Σ gv·(x_v + b_v).
func TestQKVBiasRoPE(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(12, 1))
	N, NH, NKV, HD := 4, 3, 1, 6
	qw, kvw := NH*HD, NKV*HD
	W := qw + 2*kvw
	pos := []int32{0, 3, 17, 1000}
	invFreq := make([]float32, HD/2)
	for i := range invFreq {
		invFreq[i] = float32(1 / math.Pow(10000, float64(2*i)/float64(HD)))
	}
	x, bias := to64(to32(randn(r, N*W, 1))), to64(to32(randn(r, W, 1)))
	gq, gk, gv := to64(to32(randn(r, N*qw, 1))), to64(to32(randn(r, N*kvw, 1))), to64(to32(randn(r, N*kvw, 1)))
	// The float64 reference: column blocks plus bias, q and k rotated.
	split := func() (q, k, v []float64) {
		q, k, v = make([]float64, N*qw), make([]float64, N*kvw), make([]float64, N*kvw)
		for n := range N {
			for c := range W {
				val := x[n*W+c] + bias[c]
				switch {
				case c < qw:
					q[n*qw+c] = val
				case c < qw+kvw:
					k[n*kvw+c-qw] = val
				default:
					v[n*kvw+c-qw-kvw] = val
				}
			}
		}
		rope(q, pos, invFreq, N, NH, HD, false)
		rope(k, pos, invFreq, N, NKV, HD, false)
		return q, k, v
	}
	loss := func() float64 { q, k, v := split(); return dot64(q, gq) + dot64(k, gk) + dot64(v, gv) }
	tensor := func(name string, vals []float64, shape ...int) *kdrt.Tensor {
		tt := f32Tensor(be, name, vals)
		tt.Shape = shape
		return tt
	}
	tpos, _ := be.Alloc("pos", kdrt.I32, N)
	copy(Int32s(tpos), pos)
	tf, _ := be.Alloc("invFreq", kdrt.F32, HD/2)
	copy(Float32s(tf), invFreq)
	tq, _ := be.Alloc("q", kdrt.F32, N, qw)
	tk, _ := be.Alloc("k", kdrt.F32, N, kvw)
	tv, _ := be.Alloc("v", kdrt.F32, N, kvw)
	be.QKVBiasRoPE(tq, tk, tv, tensor("qkv", x, N, W), tensor("bias", bias, W), tpos, tf)
	wq, wk, wv := split()
	assertClose(t, "q", to64(Float32s(tq)), wq, 1e-6)
	assertClose(t, "k", to64(Float32s(tk)), wk, 1e-6)
	assertClose(t, "v (bias, no rotation)", to64(Float32s(tv)), wv, 1e-6)

	tdx, _ := be.Alloc("dqkv", kdrt.F32, N, W)
	tdb, _ := be.Alloc("dbias", kdrt.F32, W)
	be.QKVBiasRoPEBackward(tdx, tdb, tensor("dq", gq, N, qw), tensor("dk", gk, N, kvw), tensor("dv", gv, N, kvw), tpos, tf)
	checkGradTol(t, "dqkv", x, to64(Float32s(tdx)), loss, 1e-5)
	checkGradTol(t, "dbias", bias, to64(Float32s(tdb)), loss, 1e-5)
}
