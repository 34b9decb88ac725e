package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/half"
)

// TestMatMulBF16Panels: a BF16 product split into many column panels (every
// combination of transposes, a BF16 or an F32 C, β 0 and 1) equals the F32
// product of the same values rounded once, element by element; split along
// the inner dimension (k > n) it equals it to float32 summation order.
func TestMatMulBF16Panels(t *testing.T) {
	for _, s := range []struct{ M, N, K int }{{7, 53, 9}, {7, 5, 300}} {
		t.Run(fmt.Sprintf("M%d_N%d_K%d", s.M, s.N, s.K), func(t *testing.T) { testMatMulPanels(t, s.M, s.N, s.K) })
	}
}

func testMatMulPanels(t *testing.T, M, N, K int) {
	old := gemmPanel
	t.Cleanup(func() { gemmPanel = old })
	gemmPanel = 40 // a few columns (or rows of the inner dimension) per panel
	be := New()
	r := rand.New(rand.NewPCG(5, 6))
	vals := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = half.BF16ToF32(half.F32ToBF16(float32(r.NormFloat64())))
		}
		return v
	}
	mk := func(dt kdrt.DType, v []float32, shape ...int) *kdrt.Tensor {
		x, err := be.Alloc("x", dt, shape...)
		if err != nil {
			t.Fatal(err)
		}
		if err := be.Upload(x, v); err != nil {
			t.Fatal(err)
		}
		return x
	}
	for _, tA := range []bool{false, true} {
		for _, tB := range []bool{false, true} {
			for _, cdt := range []kdrt.DType{kdrt.BF16, kdrt.F32} {
				for _, beta := range []float32{0, 1} {
					t.Run(fmt.Sprintf("tA%v_tB%v_%s_beta%g", tA, tB, cdt, beta), func(t *testing.T) {
						ash, bsh := []int{M, K}, []int{K, N}
						if tA {
							ash = []int{K, M}
						}
						if tB {
							bsh = []int{N, K}
						}
						av, bv, cv := vals(M*K), vals(K*N), vals(M*N)
						a16, b16, c := mk(kdrt.BF16, av, ash...), mk(kdrt.BF16, bv, bsh...), mk(cdt, cv, M, N)
						a32, b32, c32 := mk(kdrt.F32, av, ash...), mk(kdrt.F32, bv, bsh...), mk(kdrt.F32, cv, M, N)
						be.MatMul(c, a16, b16, tA, tB, 0.5, beta)
						be.MatMul(c32, a32, b32, tA, tB, 0.5, beta)
						got := make([]float32, M*N)
						if err := be.Download(c, got); err != nil {
							t.Fatal(err)
						}
						var num, den float64
						for i, w := range Float32s(c32) {
							if cdt == kdrt.BF16 {
								w = half.BF16ToF32(half.F32ToBF16(w))
							}
							if K <= N && got[i] != w {
								t.Fatalf("element %d: %g, want %g", i, got[i], w)
							}
							num += (float64(got[i]) - float64(w)) * (float64(got[i]) - float64(w))
							den += float64(w) * float64(w)
						}
						// Summed in another order, an element may round to
						// the neighbouring bf16 value: at most 2⁻⁸ relative.
						tol := 1e-6
						if cdt == kdrt.BF16 {
							tol = 4e-3
						}
						if e := math.Sqrt(num / den); e > tol {
							t.Fatalf("relative error %.3g", e)
						}
					})
				}
			}
		}
	}
}

// TestBF16Storage: a BF16 tensor holds two bytes per element, Upload rounds
// to nearest even, Slice shares the storage and Copy and Zero work on it.
func TestBF16Storage(t *testing.T) {
	be := New()
	x, err := be.Alloc("x", kdrt.BF16, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	if got := cap(BF16Bits(x)) * 2; got != x.Bytes() || x.Bytes() != 24 {
		t.Fatalf("a [3 4] BF16 tensor holds %d bytes (Bytes %d), want 24", got, x.Bytes())
	}
	v := []float32{1, 1.00390625 /* 1 + 2⁻⁸: a tie, to even */, 1.01171875 /* a tie above an odd: up */, -3}
	full := append(v, make([]float32, 8)...)
	if err := be.Upload(x, full); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 12)
	be.Download(x, got)
	for i, w := range []float32{1, 1, 1.015625, -3} {
		if got[i] != w {
			t.Errorf("element %d uploaded as %g, want %g", i, got[i], w)
		}
	}
	row := be.Slice(x, 1, 2)
	be.Upload(row, []float32{5, 6, 7, 8})
	be.Download(x, got)
	if got[4] != 5 || got[7] != 8 {
		t.Errorf("a write through a slice did not reach the tensor: %v", got)
	}
	y, _ := be.Alloc("y", kdrt.BF16, 3, 4)
	be.Copy(y, x)
	be.Zero(x)
	be.Download(y, got)
	if got[4] != 5 {
		t.Errorf("copy lost the values: %v", got)
	}
	be.Download(x, got)
	for _, g := range got {
		if g != 0 {
			t.Fatalf("zero left %v", got)
		}
	}
}
