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

// TestQKVBiasRoPE: the q/k/v epilogue adds each bias before rotating (the
// rotation of HF's q_proj output, which includes the bias), and its
// backward gives the bias the row sum of the unrotated gradient: checked
// against float64 finite differences of Σ g·rope(x + b).
func TestQKVBiasRoPE(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(12, 1))
	N, NH, NKV, HD := 4, 3, 1, 6
	pos := []int32{0, 3, 17, 1000}
	invFreq := make([]float32, HD/2)
	for i := range invFreq {
		invFreq[i] = float32(1 / math.Pow(10000, float64(2*i)/float64(HD)))
	}
	q, bq, g := randn(r, N*NH*HD, 1), randn(r, NH*HD, 1), randn(r, N*NH*HD, 1)
	k, v, bk, bv := randn(r, N*NKV*HD, 1), randn(r, N*NKV*HD, 1), randn(r, NKV*HD, 1), randn(r, NKV*HD, 1)
	// float64: y = rope(x + b), loss = Σ g·y.
	loss := func() float64 {
		y := append([]float64(nil), q...)
		addBias(y, bq, N, NH*HD)
		rope(y, pos, invFreq, N, NH, HD, false)
		return dot64(y, g)
	}
	tq, tk, tv := f32Tensor(be, "q", q), f32Tensor(be, "k", k), f32Tensor(be, "v", v)
	tq.Shape, tk.Shape, tv.Shape = []int{N, NH * HD}, []int{N, NKV * HD}, []int{N, NKV * HD}
	tbq, tbk, tbv := f32Tensor(be, "bq", bq), f32Tensor(be, "bk", bk), f32Tensor(be, "bv", bv)
	tpos, _ := be.Alloc("pos", kdrt.I32, N)
	copy(Int32s(tpos), pos)
	tf, _ := be.Alloc("invFreq", kdrt.F32, HD/2)
	copy(Float32s(tf), invFreq)
	be.QKVBiasRoPE(tq, tk, tv, tbq, tbk, tbv, tpos, tf)
	wantQ := append([]float64(nil), q...)
	addBias(wantQ, bq, N, NH*HD)
	rope(wantQ, pos, invFreq, N, NH, HD, false)
	assertClose(t, "q", to64(Float32s(tq)), wantQ, 1e-6)
	wantV := append([]float64(nil), v...)
	addBias(wantV, bv, N, NKV*HD)
	assertClose(t, "v (bias, no rotation)", to64(Float32s(tv)), wantV, 1e-6)

	tdq, tdk, tdv := f32Tensor(be, "dq", g), f32Tensor(be, "dk", k), f32Tensor(be, "dv", v)
	tdq.Shape, tdk.Shape, tdv.Shape = tq.Shape, tk.Shape, tv.Shape
	tdbq, _ := be.Alloc("dbq", kdrt.F32, NH*HD)
	be.QKVBiasRoPEBackward(tdq, tdk, tdv, tdbq, nil, nil, tpos, tf)
	checkGradTol(t, "dbq", bq, to64(Float32s(tdbq)), loss, 1e-5)
	checkGradTol(t, "dq (rotated back)", q, to64(Float32s(tdq)), loss, 1e-5)
}
