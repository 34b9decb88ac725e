package sgemm

import "golang.org/x/sys/cpu"

// hasTranspose8 gates the assembly transpose; every CPU with an assembly
// kernel has AVX, but the generic kernel may run on one without it.
var hasTranspose8 = cpu.X86.HasAVX

// transpose8 sets dst[p·dstStride + r] = src[r·srcStride + p] for r < 8 and
// p < n; n is a multiple of 8.
//
//go:noescape
func transpose8(dst *float32, dstStride int, src *float32, srcStride int, n int)

// interleave8 is transpose8 on slices, or false where it cannot run.
func interleave8(dst []float32, stride int, src []float32, ld, n int) bool {
	if !hasTranspose8 || n < 8 {
		return false
	}
	n &^= 7
	// Bounds checks up front, so the assembly cannot stray.
	_ = src[7*ld+n-1]
	_ = dst[(n-1)*stride+7]
	transpose8(&dst[0], stride, &src[0], ld, n)
	return true
}
