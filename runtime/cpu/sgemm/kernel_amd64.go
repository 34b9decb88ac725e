package sgemm

import "golang.org/x/sys/cpu"

//go:generate go run gen_kernels.go

// hostKernels are the assembly kernels this CPU can run, fastest first.
// x/sys/cpu reports AVX2 and AVX-512 only when the OS also saves their
// registers (XCR0), so a kernel listed here is safe to call.
var hostKernels = func() []*kernel {
	var ks []*kernel
	if cpu.X86.HasAVX512F {
		ks = append(ks, avx512Kernel)
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, avx2Kernel)
	}
	return ks
}()

var avx2Kernel = &kernel{
	name: "avx2",
	mr:   6, nr: 16,
	kc: 256, mc: 96, nc: 1536,
	fn: func(k int, a, b, c []float32, ldc int, alpha, beta float32) {
		// These checks make an out-of-range tile a Go panic instead of
		// a stray write from assembly.
		_ = a[6*k-1]
		_ = b[16*k-1]
		_ = c[5*ldc+15]
		gemm6x16(k, &a[0], &b[0], &c[0], ldc, alpha, beta)
	},
}

var avx512Kernel = &kernel{
	name: "avx512",
	mr:   12, nr: 32,
	kc: 256, mc: 96, nc: 1536,
	fn: func(k int, a, b, c []float32, ldc int, alpha, beta float32) {
		_ = a[12*k-1]
		_ = b[32*k-1]
		_ = c[11*ldc+31]
		gemm12x32(k, &a[0], &b[0], &c[0], ldc, alpha, beta)
	},
}

// gemm6x16 is the kernel contract (see kernel) for a 6×16 tile with AVX2+FMA.
// k ≥ 1.
//
//go:noescape
func gemm6x16(k int, a, b, c *float32, ldc int, alpha, beta float32)

// gemm12x32 is the kernel contract for a 12×32 tile with AVX-512F. k ≥ 1.
//
//go:noescape
func gemm12x32(k int, a, b, c *float32, ldc int, alpha, beta float32)
