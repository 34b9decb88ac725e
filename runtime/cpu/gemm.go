package cpu

import (
	"github.com/kdnative/kdnative/runtime/cpu/sgemm"
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
