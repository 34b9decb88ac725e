package cpu

import (
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu/sgemm"
	"github.com/kdnative/kdnative/runtime/half"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

var impl gonum.Implementation

// gemm computes C = α·op(A)·op(B) + β·C for row-major matrices with leading
// dimensions lda, ldb, ldc: op(A) is [m, k], op(B) is [k, n], C is [m, n]. It
// dispatches float32 to runtime/cpu/sgemm and float64 (the reference tests)
// to gonum's Dgemm; both block and parallelize the work.
func gemm[F Float](transA, transB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	tA, tB := blas.NoTrans, blas.NoTrans
	if transA {
		tA = blas.Trans
	}
	if transB {
		tB = blas.Trans
	}
	switch a := any(a).(type) {
	case []float32:
		// Our packed AVX-512/AVX2 kernels (runtime/cpu/sgemm), 10–25× gonum's
		// Sgemm on the shapes of a training step.
		sgemm.Sgemm(transA, transB, m, n, k, float32(alpha), a, lda, any(b).([]float32), ldb, float32(beta), any(c).([]float32), ldc)
	case []float64:
		impl.Dgemm(tA, tB, m, n, k, float64(alpha), a, lda, any(b).([]float64), ldb, float64(beta), any(c).([]float64), ldc)
	}
}

// matmul is gemm on dense matrices: A is [rowsA, colsA], B is [rowsB, colsB].
func matmul[F Float](c, a, b []F, rowsA, colsA, rowsB, colsB int, transA, transB bool, alpha, beta F) {
	m, k := rowsA, colsA
	if transA {
		m, k = colsA, rowsA
	}
	k2, n := rowsB, colsB
	if transB {
		k2, n = colsB, rowsB
	}
	if k != k2 {
		panic("cpu: matmul inner dimensions differ")
	}
	if k == 0 {
		// gonum rejects k == 0; C = β·C is still defined.
		for i := range c[:m*n] {
			if beta == 0 {
				c[i] = 0 // BLAS semantics: C is not read when β = 0
			} else {
				c[i] *= beta
			}
		}
		return
	}
	gemm(transA, transB, m, n, k, alpha, a, colsA, b, colsB, beta, c, n)
}

// gemmPanel is about how many float32 elements of a BF16 operand matmulBF16
// widens at a time (4 MiB): a [V, C] lm_head is converted a panel of rows
// at a time, never whole. A variable so that tests can force many panels.
var gemmPanel = 1 << 20

// matmulBF16 is MatMul with BF16 operands (A and B share a dtype) or a BF16
// C: C = α·op(A)·op(B) + β·C computed by the float32 GEMM on widened
// copies, each BF16 output element rounded once. op(A) is [m, k], op(B)
// [k, n], C [m, n]. op(B) is widened a block at a time (about gemmPanel
// elements), never whole: a block of C's columns when k ≤ n, so that C is
// written once and only the (smaller) A is packed again per block; a block
// of the inner dimension when k > n (the gradient through an lm_head, k =
// V), so that A is packed once and C, the smaller, is updated per block.
func matmulBF16(c, a, b *kdrt.Tensor, m, n, k int, transA, transB bool, alpha, beta float32) {
	if m == 0 || n == 0 {
		return
	}
	var f frame
	defer f.done()
	if k > n {
		matmulSplitK(&f, c, a, b, m, n, k, transA, transB, alpha, beta)
		return
	}
	av := f.in(a)
	nb := max(1, min(n, gemmPanel/max(k, m, 1)))
	nb = (nb + 15) / 16 * 16
	var bw, cw []float32
	if b.DType == kdrt.BF16 {
		bw = f.get(k * min(nb, n))
	}
	if c.DType == kdrt.BF16 {
		cw = f.get(m * min(nb, n))
	}
	ldb := b.Cols()
	for n0 := 0; n0 < n; n0 += nb {
		n1 := min(n0+nb, n)
		w := n1 - n0
		// op(B)[:, n0:n1]: rows n0…n1 of B when transposed, else columns.
		var bp []float32
		bld := ldb
		switch {
		case b.DType == kdrt.F32 && transB:
			bp = Float32s(b)[n0*ldb:]
		case b.DType == kdrt.F32:
			bp = Float32s(b)[n0:]
		case transB:
			bp, bld = bw[:w*ldb], ldb
			widen(bp, BF16Bits(b)[n0*ldb:n1*ldb])
		default:
			bp, bld = bw[:k*w], w
			widenColumns(bp, BF16Bits(b), ldb, n0, w, k)
		}
		var cp []float32
		cld := n
		if c.DType == kdrt.F32 {
			cp = Float32s(c)[n0:]
		} else {
			cp, cld = cw[:m*w], w
			if beta != 0 {
				widenColumns(cp, BF16Bits(c), n, n0, w, m)
			}
		}
		if k == 0 {
			for r := range m {
				for j := range w {
					if beta == 0 {
						cp[r*cld+j] = 0
					} else {
						cp[r*cld+j] *= beta
					}
				}
			}
		} else {
			gemm(transA, transB, m, w, k, alpha, av, a.Cols(), bp, bld, beta, cp, cld)
		}
		if c.DType == kdrt.BF16 {
			dst := BF16Bits(c)
			parallelFor(m, 2*w, func(lo, hi int) {
				for r := lo; r < hi; r++ {
					for j := range w {
						dst[r*n+n0+j] = half.F32ToBF16(cp[r*w+j])
					}
				}
			})
		}
	}
}

// matmulSplitK is matmulBF16 for k > n: C (widened whole when BF16, and
// rounded once at the end) accumulates op(A)[:, k0:k1]·op(B)[k0:k1, :] over
// blocks of the inner dimension.
func matmulSplitK(f *frame, c, a, b *kdrt.Tensor, m, n, k int, transA, transB bool, alpha, beta float32) {
	av := f.in(a)
	var cv []float32
	if c.DType == kdrt.F32 {
		cv = Float32s(c)
	} else {
		cv = f.out(c)
	}
	kb := max(16, gemmPanel/n)
	kb = (kb + 15) / 16 * 16
	var bw []float32
	if b.DType == kdrt.BF16 {
		bw = f.get(min(kb, k) * n)
	}
	lda, ldb := a.Cols(), b.Cols()
	for k0 := 0; k0 < k; k0 += kb {
		k1 := min(k0+kb, k)
		w := k1 - k0
		// op(A)[:, k0:k1]: columns of A, or rows of a transposed A.
		ap := av[k0:]
		if transA {
			ap = av[k0*lda:]
		}
		// op(B)[k0:k1, :]: rows of B, or columns of a transposed B.
		var bp []float32
		bld := ldb
		switch {
		case b.DType == kdrt.F32 && transB:
			bp = Float32s(b)[k0:]
		case b.DType == kdrt.F32:
			bp = Float32s(b)[k0*ldb:]
		case transB:
			bp, bld = bw[:n*w], w
			widenColumns(bp, BF16Bits(b), ldb, k0, w, n)
		default:
			bp, bld = bw[:w*ldb], ldb
			widen(bp, BF16Bits(b)[k0*ldb:k1*ldb])
		}
		bk := float32(1)
		if k0 == 0 {
			bk = beta
		}
		gemm(transA, transB, m, n, w, alpha, ap, lda, bp, bld, bk, cv, n)
	}
}

// widenColumns widens columns [c0, c0+w) of the rows × ld bf16 matrix src
// into dst [rows, w].
func widenColumns(dst []float32, src []uint16, ld, c0, w, rows int) {
	parallelFor(rows, 2*w, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			for j := range w {
				dst[r*w+j] = half.BF16ToF32(src[r*ld+c0+j])
			}
		}
	})
}
