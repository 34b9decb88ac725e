package cuda

import (
	"errors"
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// devMem is a CUDA tensor's storage: an address on the device and the block
// of the caching allocator it lives in. A Slice view shares its parent's
// block and does not own it.
type devMem struct {
	b     *Backend
	ptr   uint64
	block *block // nil for views
}

func (m *devMem) Backend() kdrt.Backend { return m.b }

// block is one cuMemAlloc'd region, reused across tensors.
type block struct {
	ptr  uint64
	size uint64
}

// Size classes of the caching allocator: small requests round up to 512
// bytes, large ones to 2 MiB, so that a freed block serves the next request
// of the same class. Like PyTorch's allocator, freed blocks return to the
// cache, not to the driver, and are reused in stream order: with one stream
// a block freed after a launch is safe to hand to the next op at once.
const (
	smallRound = 512
	largeRound = 2 << 20
	smallLimit = 1 << 20
)

func roundSize(n uint64) uint64 {
	if n == 0 {
		n = 1
	}
	r := uint64(smallRound)
	if n > smallLimit {
		r = largeRound
	}
	return (n + r - 1) / r * r
}

// allocator keeps free blocks by size class.
type allocator struct {
	free          map[uint64][]*block
	inUse, cached uint64
	peakInUse     uint64
}

// OutOfMemoryError is an allocation the GPU could not satisfy even after the
// cache was released.
type OutOfMemoryError struct {
	Tensor      string // "logits[8 151936] F32"
	Bytes       uint64
	Free, Total uint64 // the device's, after the cache was released
	InUse       uint64 // bytes kdnative's live tensors hold
}

func (e *OutOfMemoryError) Error() string {
	return fmt.Sprintf("cuda: out of memory allocating %s (%s): the GPU has %s free of %s, kdnative's tensors hold %s; lower the batch size or sequence length, or the loss chunk budget",
		e.Tensor, mib(e.Bytes), mib(e.Free), mib(e.Total), mib(e.InUse))
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

const errOutOfMemory cuResult = 2

// allocBlock returns a block of at least n bytes: a cached one of n's class,
// else a new one; when the driver is out of memory it releases the cache and
// tries once more. Call with the backend entered.
func (b *Backend) allocBlock(what string, n uint64) (*block, error) {
	size := roundSize(n)
	a := &b.alloc
	if l := a.free[size]; len(l) > 0 {
		blk := l[len(l)-1]
		a.free[size] = l[:len(l)-1]
		a.cached -= size
		a.use(size)
		return blk, nil
	}
	var ptr uint64
	r := b.api.cuMemAlloc(&ptr, size)
	if r == errOutOfMemory && a.cached > 0 {
		b.releaseCache()
		r = b.api.cuMemAlloc(&ptr, size)
	}
	if r != cudaSuccess {
		err := b.api.check("cuMemAlloc_v2", r)
		if r == errOutOfMemory {
			var free, total uint64
			b.api.cuMemGetInfo(&free, &total)
			return nil, &OutOfMemoryError{Tensor: what, Bytes: size, Free: free, Total: total, InUse: a.inUse}
		}
		return nil, fmt.Errorf("cuda: allocating %s (%s): %w", what, mib(size), err)
	}
	a.use(size)
	return &block{ptr: ptr, size: size}, nil
}

func (a *allocator) use(size uint64) {
	a.inUse += size
	a.peakInUse = max(a.peakInUse, a.inUse)
}

// freeBlock returns a block to the cache.
func (b *Backend) freeBlock(blk *block) {
	a := &b.alloc
	a.inUse -= blk.size
	a.cached += blk.size
	a.free[blk.size] = append(a.free[blk.size], blk)
}

// releaseCache gives every cached block back to the driver. It synchronizes
// first: a cached block may still be read by queued work.
func (b *Backend) releaseCache() {
	b.api.cuCtxSynchronize()
	for size, l := range b.alloc.free {
		for _, blk := range l {
			b.api.cuMemFree(blk.ptr)
		}
		delete(b.alloc.free, size)
	}
	b.alloc.cached = 0
}

// FreeMemory implements runtime.MemoryReporter: the device's free memory
// (cuMemGetInfo) plus what kdnative's cache holds, which new tensors reuse.
func (b *Backend) FreeMemory() (free, total int64, ok bool) {
	defer b.enter()()
	var f, tot uint64
	if b.api.check("cuMemGetInfo_v2", b.api.cuMemGetInfo(&f, &tot)) != nil {
		return 0, 0, false
	}
	return int64(f + b.alloc.cached), int64(tot), true
}

// MemoryStats are the caching allocator's counters, in bytes.
type MemoryStats struct {
	InUse, PeakInUse, Cached uint64
}

// Memory reports the allocator's counters.
func (b *Backend) Memory() MemoryStats {
	defer b.enter()()
	return MemoryStats{InUse: b.alloc.inUse, PeakInUse: b.alloc.peakInUse, Cached: b.alloc.cached}
}

// ResetPeak sets the peak to the current use.
func (b *Backend) ResetPeak() {
	defer b.enter()()
	b.alloc.peakInUse = b.alloc.inUse
}

// PeakBytes is the allocator's high-water mark (runtime.PeakMemory).
func (b *Backend) PeakBytes() uint64 { return b.Memory().PeakInUse }

var _ kdrt.PeakMemory = (*Backend)(nil)

// IsOutOfMemory reports whether err is a GPU out-of-memory error.
func IsOutOfMemory(err error) bool {
	var e *OutOfMemoryError
	return errors.As(err, &e)
}
