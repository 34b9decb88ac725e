package cuda

import (
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// dim3 is a CUDA grid or block size.
type dim3 struct{ X, Y, Z uint32 }

// d1 is a one-dimensional grid or block of n.
func d1(n int) dim3 { return dim3{uint32(n), 1, 1} }

// blocks is the number of blocks of per threads that cover n items.
func blocks(n, per int) int {
	if n <= 0 {
		return 1
	}
	return (n + per - 1) / per
}

// kernelFor is the exported name of a kernel defined with KD_EXPORT for a
// storage dtype: base_f32 or base_bf16. Other dtypes panic: the kernels
// store F32 or BF16.
func kernelFor(base string, dt kdrt.DType) string {
	switch dt {
	case kdrt.F32:
		return base + "_f32"
	case kdrt.BF16:
		return base + "_bf16"
	}
	panic(fmt.Sprintf("cuda: %s: dtype %s not supported (the kernels store F32 or BF16)", base, dt))
}
