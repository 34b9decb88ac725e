// Package sgemm is a float32 matrix product, C = α·op(A)·op(B) + β·C, for
// row-major matrices, in pure Go and Go assembly (no cgo).
//
// It follows the BLIS/GotoBLAS design. The product is cut into blocks of kc
// columns of op(A) and kc rows of op(B); each block of op(B) (kc×nc) and of
// op(A) (mc×kc) is copied ("packed") into a contiguous buffer laid out in the
// exact order a register-blocked micro-kernel reads it, and the micro-kernel
// then computes an mr×nr tile of C with every accumulator in a register.
// Packing is also where transposes are handled, so all four combinations of
// transA and transB run the same kernel at nearly the same speed.
//
// Micro-kernels, chosen once at init from the CPU's features:
//
//	avx512  12×32, zmm registers, FMA      (amd64 with AVX-512F)
//	avx2     6×16, ymm registers, FMA      (amd64 with AVX2 and FMA)
//	generic  4×4,  pure Go                 (every other CPU and GOARCH)
//
// Work is split over GOMAXPROCS goroutines along the larger of m and n; each
// worker packs into buffers taken from a sync.Pool, so steady-state calls do
// not allocate.
package sgemm
