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

// LaunchCounts counts what a backend has queued on its stream since the
// last ResetLaunches: the unit of launch overhead, and what fusing kernels
// reduces.
type LaunchCounts struct {
	Kernels int // cuLaunchKernel calls
	GEMMs   int // cuBLAS calls (each one or more kernels)
	Memsets int // cuMemsetD8Async (Zero)
	Copies  int // device-to-device copies (Copy)
	// ByKernel counts the launches of each kernel by name.
	ByKernel map[string]int
}

// Total is every queued operation.
func (c LaunchCounts) Total() int { return c.Kernels + c.GEMMs + c.Memsets + c.Copies }

// Launches returns the counts since the last ResetLaunches.
func (b *Backend) Launches() LaunchCounts {
	defer b.enter()()
	c := b.counts
	c.ByKernel = make(map[string]int, len(b.counts.ByKernel))
	for k, v := range b.counts.ByKernel {
		c.ByKernel[k] = v
	}
	return c
}

// ResetLaunches sets the counts to zero.
func (b *Backend) ResetLaunches() {
	defer b.enter()()
	b.counts = LaunchCounts{}
}

// countKernel records a kernel launch; the caller holds the lock.
func (b *Backend) countKernel(name string) {
	b.counts.Kernels++
	if b.counts.ByKernel == nil {
		b.counts.ByKernel = map[string]int{}
	}
	b.counts.ByKernel[name]++
}

// checkBlock refuses a block of more than 256 threads for a kernel declared
// without __launch_bounds__, or more than its bounds: the compiler sized its
// registers for fewer, and the launch would fail (or, worse, work on one GPU
// and not another).
func (b *Backend) checkBlock(kernel string, block dim3) error {
	n := int(block.X) * int(block.Y) * int(block.Z)
	if n <= 256 {
		return nil
	}
	bound := b.index[kernel].Bounds[kernel]
	if bound == 0 {
		return fmt.Errorf("kernel %s launched with %d threads has no __launch_bounds__ (needed above 256)", kernel, n)
	}
	if n > bound {
		return fmt.Errorf("kernel %s launched with %d threads, above its __launch_bounds__(%d)", kernel, n, bound)
	}
	return nil
}
