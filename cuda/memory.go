package cuda

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cachealloc"
)

// devMem is a CUDA tensor's storage: an address on the device and the block
// of the caching allocator it lives in. A Slice view shares its parent's
// block and does not own it.
type devMem struct {
	b     *Backend
	ptr   uint64
	block *cachealloc.Block // nil for views
	name  string            // the tensor's name when allocated, for the live-bytes table
}

func (m *devMem) Backend() kdrt.Backend { return m.b }

// allocator is the backend's caching allocator (runtime/cachealloc, the
// policy the memory planner runs too): segments from cuMemAlloc, tensors
// carved from them best-fit, freed blocks cached and merged with their free
// neighbours, the driver called again only when nothing cached fits. Like
// PyTorch's allocator, blocks are reused in stream order: with one stream a
// block freed after a launch is safe to hand to the next op at once. Its
// zero value is ready; the cachealloc.Allocator is made on first use.
type allocator struct {
	a   *cachealloc.Allocator
	opt cachealloc.Options
	// poison makes AllocUninit fill its blocks with 0xff bytes (NaN in F32
	// and BF16), so that a test on the kernel emulator catches an op that
	// reads memory nobody wrote.
	poison bool
	// live is the bytes held per tensor name, for out-of-memory errors.
	live map[string]liveBytes
}

type liveBytes struct{ count, bytes uint64 }

// cudaDriver is the device's allocator as cachealloc sees it. Its methods
// are called with the backend entered.
type cudaDriver struct{ api *ctxAPI }

func (d cudaDriver) Malloc(size uint64) (uint64, error) {
	var ptr uint64
	r := d.api.cuMemAlloc(&ptr, size)
	if r == errOutOfMemory {
		return 0, fmt.Errorf("cuMemAlloc_v2 of %s: %w", mib(size), cachealloc.ErrOutOfMemory)
	}
	return ptr, d.api.check("cuMemAlloc_v2", r)
}

func (d cudaDriver) Free(ptr uint64) error { return d.api.check("cuMemFree_v2", d.api.cuMemFree(ptr)) }

func (d cudaDriver) Sync() error { return d.api.check("cuCtxSynchronize", d.api.cuCtxSynchronize()) }

// cache returns the caching allocator, making it on first use. Call with
// the backend entered.
func (b *Backend) cache() *cachealloc.Allocator {
	if b.alloc.a == nil {
		b.alloc.a = cachealloc.New(cudaDriver{b.api}, b.alloc.opt)
		b.alloc.live = map[string]liveBytes{}
	}
	return b.alloc.a
}

// RoundSize is the bytes the allocator hands out for a request of n bytes
// (cachealloc.RoundSize: a multiple of 512).
func RoundSize(n uint64) uint64 { return cachealloc.RoundSize(n) }

// OutOfMemoryError is an allocation the GPU could not satisfy even after the
// cache was released.
type OutOfMemoryError struct {
	Tensor      string // "logits[8 151936] F32"
	Bytes       uint64
	Free, Total uint64 // the device's, after the cache was released
	InUse       uint64 // bytes kdnative's live tensors hold
	// Cached is what the allocator still holds for reuse (free blocks in
	// segments that also hold live ones), LargestFree the largest of them.
	Cached, LargestFree uint64
	// Held are the largest groups of live tensors, by name.
	Held []string
}

func (e *OutOfMemoryError) Error() string {
	msg := fmt.Sprintf("cuda: out of memory allocating %s (%s): the GPU has %s free of %s, kdnative's tensors hold %s",
		e.Tensor, mib(e.Bytes), mib(e.Free), mib(e.Total), mib(e.InUse))
	if len(e.Held) > 0 {
		msg += " (" + strings.Join(e.Held, ", ") + ")"
	}
	if e.Cached > 0 {
		msg += fmt.Sprintf(" and its cache %s more, in pieces of at most %s", mib(e.Cached), mib(e.LargestFree))
	}
	return msg + "; lower the batch size or sequence length, or the loss chunk budget (`kdnative bench --plan` shows what a step holds)"
}

// IsOutOfMemory marks the error as the device's out of memory (callers
// outside this package test for the method).
func (e *OutOfMemoryError) IsOutOfMemory() bool { return true }

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

const errOutOfMemory cuResult = 2

// allocBlock returns a block of at least n bytes from the caching
// allocator, which releases its cache and retries once when the driver is
// out of memory. Call with the backend entered.
func (b *Backend) allocBlock(what string, n uint64) (*cachealloc.Block, error) {
	a := b.cache()
	blk, err := a.Alloc(n)
	if err == nil {
		return blk, nil
	}
	if errors.Is(err, cachealloc.ErrOutOfMemory) {
		var free, total uint64
		b.api.cuMemGetInfo(&free, &total)
		s := a.Stats()
		return nil, &OutOfMemoryError{Tensor: what, Bytes: cachealloc.RoundSize(n), Free: free, Total: total, InUse: s.InUse,
			Cached: s.Cached, LargestFree: s.LargestFree, Held: b.largestHeld(4)}
	}
	return nil, fmt.Errorf("cuda: allocating %s (%s): %w", what, mib(cachealloc.RoundSize(n)), err)
}

// largestHeld describes the n largest groups of live tensors by name.
func (b *Backend) largestHeld(n int) []string {
	type group struct {
		name string
		liveBytes
	}
	var gs []group
	for name, l := range b.alloc.live {
		if l.count > 0 {
			gs = append(gs, group{name, l})
		}
	}
	slices.SortFunc(gs, func(x, y group) int {
		if x.bytes != y.bytes {
			if x.bytes > y.bytes {
				return -1
			}
			return 1
		}
		return strings.Compare(x.name, y.name)
	})
	var out []string
	for _, g := range gs[:min(n, len(gs))] {
		out = append(out, fmt.Sprintf("%s ×%d %s", g.name, g.count, mib(g.bytes)))
	}
	return out
}

// freeBlock returns a block to the cache. Call with the backend entered.
func (b *Backend) freeBlock(blk *cachealloc.Block) { b.cache().Free(blk) }

// Alloc implements runtime.Backend: a zero-filled tensor (one memset on the
// stream). It stores F32, BF16 and I32 tensors.
func (b *Backend) Alloc(name string, dt kdrt.DType, shape ...int) (*kdrt.Tensor, error) {
	return b.allocTensor(name, dt, shape, true)
}

// AllocUninit implements runtime.UninitAllocator: Alloc without the memset,
// for a tensor every element of which is written before it is read.
func (b *Backend) AllocUninit(name string, dt kdrt.DType, shape ...int) (*kdrt.Tensor, error) {
	return b.allocTensor(name, dt, shape, false)
}

var _ kdrt.UninitAllocator = (*Backend)(nil)

func (b *Backend) allocTensor(name string, dt kdrt.DType, shape []int, zero bool) (*kdrt.Tensor, error) {
	t := &kdrt.Tensor{Shape: append([]int(nil), shape...), DType: dt, Name: name}
	for _, d := range shape {
		if d < 0 {
			return nil, fmt.Errorf("cuda: alloc %v: negative dimension", t)
		}
	}
	if dt != kdrt.F32 && dt != kdrt.BF16 && dt != kdrt.I32 {
		return nil, fmt.Errorf("cuda: alloc %v: dtype %s not supported (F32, BF16 or I32)", t, dt)
	}
	nbytes, err := kdrt.TensorBytes(dt, shape...) // Bytes would wrap around
	if err != nil {
		return nil, fmt.Errorf("cuda: alloc %v: %w", t, err)
	}
	defer b.enter()()
	blk, err := b.allocBlock(t.String(), uint64(nbytes))
	if err != nil {
		return nil, err
	}
	fill := -1
	switch {
	case zero:
		fill = 0
	case b.alloc.poison:
		fill = 0xff
	}
	if nbytes > 0 && fill >= 0 {
		if zero {
			b.counts.Memsets++
		}
		if err := b.api.check("cuMemsetD8Async", b.api.cuMemsetD8Async(blk.Ptr, uint8(fill), uint64(nbytes), b.stream)); err != nil {
			b.freeBlock(blk)
			return nil, fmt.Errorf("cuda: alloc %v: %w", t, err)
		}
	}
	l := b.alloc.live[name]
	l.count++
	l.bytes += blk.Size
	b.alloc.live[name] = l
	t.Storage = &devMem{b: b, ptr: blk.Ptr, block: blk, name: name}
	return t, nil
}

// Free implements runtime.Backend: the memory returns to the cache. Freeing a
// Slice view frees nothing.
func (b *Backend) Free(t *kdrt.Tensor) {
	if t == nil || t.Storage == nil {
		return
	}
	m := b.mem(t)
	t.Storage = nil
	if m.block == nil {
		return
	}
	defer b.enter()()
	l := b.alloc.live[m.name]
	l.count--
	l.bytes -= m.block.Size
	b.alloc.live[m.name] = l
	b.freeBlock(m.block)
	m.block = nil
}

// FreeMemory implements runtime.MemoryReporter: the device's free memory
// (cuMemGetInfo) plus what kdnative's cache holds, which new tensors reuse.
func (b *Backend) FreeMemory() (free, total int64, ok bool) {
	defer b.enter()()
	var f, tot uint64
	if b.api.check("cuMemGetInfo_v2", b.api.cuMemGetInfo(&f, &tot)) != nil {
		return 0, 0, false
	}
	return int64(f + b.cache().Stats().Cached), int64(tot), true
}

// MemoryStats are the caching allocator's counters, in bytes and calls.
type MemoryStats = cachealloc.Stats

// Memory reports the allocator's counters: what tensors hold (InUse) against
// what the allocator took from the driver (Reserved), the largest cached
// block, and the driver's cuMemAlloc/cuMemFree calls so far.
func (b *Backend) Memory() MemoryStats {
	defer b.enter()()
	return b.cache().Stats()
}

// AllocatorStats implements cachealloc.Reporter.
func (b *Backend) AllocatorStats() cachealloc.Stats { return b.Memory() }

// ResetPeak sets the peak to the current use.
func (b *Backend) ResetPeak() {
	defer b.enter()()
	b.cache().ResetPeak()
}

// PeakBytes is the allocator's high-water mark of the bytes its live blocks
// hold (runtime.PeakMemory).
func (b *Backend) PeakBytes() uint64 { return b.Memory().PeakInUse }

var (
	_ kdrt.PeakMemory     = (*Backend)(nil)
	_ cachealloc.Reporter = (*Backend)(nil)
)

// IsOutOfMemory reports whether err is a GPU out-of-memory error.
func IsOutOfMemory(err error) bool {
	var e *OutOfMemoryError
	return errors.As(err, &e)
}
