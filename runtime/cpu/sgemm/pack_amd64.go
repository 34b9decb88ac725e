package sgemm

import "golang.org/x/sys/cpu"

// useTranspose8 gates the assembly transpose: every CPU with an assembly
// kernel has AVX, but the generic kernel may run on one without it. Tests
// turn it off to run the pure-Go packing.
var useTranspose8 = cpu.X86.HasAVX

// transpose8 sets dst[p·dstStride + r] = src[r·srcStride + p] for r < 8 and
// p < n; n is a multiple of 8.
//
//go:noescape
func transpose8(dst *float32, dstStride int, src *float32, srcStride int, n int)

// interleave8 is the bulk of interleave for eight rows: it does columns
// p < n rounded down to a multiple of 8 with transpose8 and returns how many
// it did (0 where the CPU lacks AVX).
func interleave8(dst []float32, stride int, src []float32, ld, n int) int {
	n &^= 7
	if !useTranspose8 || n == 0 {
		return 0
	}
	// Bounds checks up front, so the assembly cannot stray.
	_ = src[7*ld+n-1]
	_ = dst[(n-1)*stride+7]
	transpose8(&dst[0], stride, &src[0], ld, n)
	return n
}
