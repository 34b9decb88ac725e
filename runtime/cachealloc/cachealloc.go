// Package cachealloc is the bookkeeping of a caching device allocator, after
// PyTorch's CUDA caching allocator: memory is taken from the driver in
// segments, tensors get blocks carved from them best-fit, a freed block
// returns to the cache (merged with its free neighbours) instead of to the
// driver, and the driver is called again only when no cached block fits.
// Once a training step has run, every later step of the same shapes (or of
// smaller ones) is served from the cache: no cuMemAlloc, no cuMemFree.
//
// It knows nothing of CUDA: the device's allocator is a Driver. The CUDA
// backend (cuda/memory.go) runs it over cuMemAlloc and cuMemFree; the memory
// planner (runtime/plan) runs the same code over a driver that hands out
// addresses without memory, so that a plan counts the bytes, the rounding
// and the segments the device would.
//
// Blocks come in two pools, as in PyTorch: requests up to SmallLimit are
// carved from SmallSegment segments, larger ones from segments of their own
// size rounded up to LargeRound (or from a larger cached block). The pools
// never share segments, so that small, short-lived scratch does not pin
// the large buffers' memory.
package cachealloc

import (
	"errors"
	"fmt"
	"sort"
)

// Sizes of the policy.
const (
	// Align is the block granularity: every request is rounded up to it.
	Align = 512
	// SmallLimit is the largest request served from the small pool.
	SmallLimit = 1 << 20
	// SmallSegment is the size of the small pool's segments.
	SmallSegment = 2 << 20
	// LargeRound is what the large pool's segments are rounded up to.
	LargeRound = 2 << 20
)

// Rounding says in words how requests become blocks and segments (for the
// memory plan's output).
const Rounding = "caching allocator: blocks rounded up to 512 B, carved best-fit from 2 MiB segments (requests ≤ 1 MiB) or from segments rounded up to 2 MiB"

// RoundSize is the bytes a request of n bytes takes: n rounded up to Align
// (Align for 0, so that every tensor has an address of its own).
func RoundSize(n uint64) uint64 {
	if n == 0 {
		n = 1
	}
	return roundUp(n, Align)
}

// SegmentSize is the size of the driver allocation made for a block of size
// bytes (already rounded) when no cached block fits it.
func SegmentSize(size uint64) uint64 {
	if size <= SmallLimit {
		return SmallSegment
	}
	return roundUp(size, LargeRound)
}

func roundUp(n, r uint64) uint64 {
	if n > ^uint64(0)-r {
		return ^uint64(0) / r * r // never fits; keeps the arithmetic from wrapping
	}
	return (n + r - 1) / r * r
}

// ErrOutOfMemory is what a Driver's Malloc wraps when the device is full.
var ErrOutOfMemory = errors.New("out of memory")

// Driver is the device's own allocator.
type Driver interface {
	// Malloc returns size bytes of device memory; an error that wraps
	// ErrOutOfMemory when the device has not that much free.
	Malloc(size uint64) (ptr uint64, err error)
	// Free returns a segment Malloc gave.
	Free(ptr uint64) error
	// Sync waits for queued device work: a cached block may still be read
	// by work queued before it was freed, so segments are released only
	// after it.
	Sync() error
}

// Options change the policy.
type Options struct {
	// Exclusive gives every block a driver allocation of its own, of
	// exactly its rounded size, never split or merged; a freed block serves
	// only requests of its own rounded size. The kernel emulator's
	// conformance tests use it, so that its guard bytes sit right after
	// every tensor and catch a kernel writing past one.
	Exclusive bool
}

// Block is one tensor's memory: Size bytes at Ptr (Size is the rounded
// request).
type Block struct {
	Ptr, Size  uint64
	seg        *segment
	prev, next *Block // neighbours in the segment, by address
	free       bool
}

type segment struct {
	ptr, size uint64
	small     bool
	first     *Block
}

// pool is a set of free blocks ordered by (size, address): the first block
// not smaller than a request is its best fit.
type pool []*Block

func less(a, b *Block) bool { return a.Size < b.Size || a.Size == b.Size && a.Ptr < b.Ptr }

func (p *pool) insert(b *Block) {
	i := sort.Search(len(*p), func(i int) bool { return !less((*p)[i], b) })
	*p = append(*p, nil)
	copy((*p)[i+1:], (*p)[i:])
	(*p)[i] = b
}

func (p *pool) remove(b *Block) {
	i := sort.Search(len(*p), func(i int) bool { return !less((*p)[i], b) })
	if i == len(*p) || (*p)[i] != b {
		panic(fmt.Sprintf("cachealloc: block %#x (%d bytes) is not in its pool", b.Ptr, b.Size))
	}
	*p = append((*p)[:i], (*p)[i+1:]...)
}

func (p pool) bestFit(size uint64) *Block {
	i := sort.Search(len(p), func(i int) bool { return p[i].Size >= size })
	if i == len(p) {
		return nil
	}
	return p[i]
}

// Stats are an allocator's counters. Byte counts are of blocks (rounded
// requests) and segments.
type Stats struct {
	// InUse is what live blocks hold; PeakInUse its high-water mark.
	InUse, PeakInUse uint64
	// Reserved is what the driver has given (every segment, in use or
	// cached); PeakReserved its high-water mark.
	Reserved, PeakReserved uint64
	// Cached is Reserved − InUse: free blocks kept for reuse.
	Cached uint64
	// LargestFree is the largest free block: the largest request the cache
	// serves without calling the driver.
	LargestFree uint64
	// Segments is the number of live driver allocations.
	Segments int
	// DriverAllocs and DriverFrees count the calls of the driver's Malloc
	// and Free since the allocator was made; Releases the times the cache
	// was given back.
	DriverAllocs, DriverFrees, Releases uint64
}

// Allocator is a caching allocator over a Driver. It is not safe for
// concurrent use: callers serialize (the CUDA backend holds its lock).
type Allocator struct {
	drv          Driver
	opt          Options
	small, large pool
	segs         map[uint64]*segment
	st           Stats
}

// New returns an allocator over drv.
func New(drv Driver, opt Options) *Allocator {
	return &Allocator{drv: drv, opt: opt, segs: map[uint64]*segment{}}
}

func (a *Allocator) poolOf(small bool) *pool {
	if small {
		return &a.small
	}
	return &a.large
}

// Alloc returns a block of RoundSize(n) bytes: the best-fitting cached
// block (split when larger), else a new segment from the driver. When the
// driver is out of memory it releases the cache and tries once more; the
// error then wraps ErrOutOfMemory.
func (a *Allocator) Alloc(n uint64) (*Block, error) {
	size := RoundSize(n)
	small := size <= SmallLimit
	p := a.poolOf(small)
	b := p.bestFit(size)
	if b != nil && a.opt.Exclusive && b.Size != size {
		b = nil
	}
	if b != nil {
		p.remove(b)
	} else {
		seg := SegmentSize(size)
		if a.opt.Exclusive {
			seg = size
		}
		ptr, err := a.malloc(seg)
		if err != nil {
			return nil, err
		}
		s := &segment{ptr: ptr, size: seg, small: small}
		b = &Block{Ptr: ptr, Size: seg, seg: s}
		s.first = b
		a.segs[ptr] = s
		a.st.Reserved += seg
		a.st.PeakReserved = max(a.st.PeakReserved, a.st.Reserved)
		a.st.Segments++
	}
	if b.Size > size { // every size is a multiple of Align: the rest is a block
		rest := &Block{Ptr: b.Ptr + size, Size: b.Size - size, seg: b.seg, prev: b, next: b.next, free: true}
		if b.next != nil {
			b.next.prev = rest
		}
		b.next = rest
		b.Size = size
		p.insert(rest)
	}
	b.free = false
	a.st.InUse += b.Size
	a.st.PeakInUse = max(a.st.PeakInUse, a.st.InUse)
	return b, nil
}

func (a *Allocator) malloc(size uint64) (uint64, error) {
	a.st.DriverAllocs++
	ptr, err := a.drv.Malloc(size)
	if errors.Is(err, ErrOutOfMemory) && a.st.Reserved > a.st.InUse {
		if a.ReleaseCache() > 0 {
			a.st.DriverAllocs++
			ptr, err = a.drv.Malloc(size)
		}
	}
	return ptr, err
}

// Free returns b to the cache, merged with the free blocks on either side
// of it in its segment.
func (a *Allocator) Free(b *Block) {
	if b.free {
		panic(fmt.Sprintf("cachealloc: block %#x (%d bytes) freed twice", b.Ptr, b.Size))
	}
	a.st.InUse -= b.Size
	b.free = true
	p := a.poolOf(b.seg.small)
	if !a.opt.Exclusive {
		if prev := b.prev; prev != nil && prev.free {
			p.remove(prev)
			prev.Size += b.Size
			prev.next = b.next
			if b.next != nil {
				b.next.prev = prev
			}
			b = prev
		}
		if next := b.next; next != nil && next.free {
			p.remove(next)
			b.Size += next.Size
			b.next = next.next
			if next.next != nil {
				next.next.prev = b
			}
		}
	}
	p.insert(b)
}

// ReleaseCache gives every segment that holds no live block back to the
// driver, after waiting for queued work, and returns the bytes released.
// Segments that still hold a live block stay (a block cannot move).
func (a *Allocator) ReleaseCache() uint64 {
	var idle []*segment
	for _, s := range a.segs {
		if b := s.first; b.free && b.next == nil {
			idle = append(idle, s)
		}
	}
	if len(idle) == 0 {
		return 0
	}
	a.drv.Sync()
	var n uint64
	for _, s := range idle {
		a.poolOf(s.small).remove(s.first)
		a.st.DriverFrees++
		a.drv.Free(s.ptr)
		delete(a.segs, s.ptr)
		a.st.Reserved -= s.size
		a.st.Segments--
		n += s.size
	}
	a.st.Releases++
	return n
}

// Stats returns the counters.
func (a *Allocator) Stats() Stats {
	s := a.st
	s.Cached = s.Reserved - s.InUse
	if n := len(a.large); n > 0 {
		s.LargestFree = a.large[n-1].Size
	}
	if n := len(a.small); n > 0 {
		s.LargestFree = max(s.LargestFree, a.small[n-1].Size)
	}
	return s
}

// ResetPeak sets the high-water marks to what is held now.
func (a *Allocator) ResetPeak() {
	a.st.PeakInUse, a.st.PeakReserved = a.st.InUse, a.st.Reserved
}

// Check verifies the allocator's invariants — the blocks of each segment
// tile it exactly, free blocks are in their pool and never adjacent, the
// counters add up — and returns the first violation. Tests call it.
func (a *Allocator) Check() error {
	var inUse, reserved uint64
	free := map[*Block]bool{}
	for _, p := range []pool{a.small, a.large} {
		for i, b := range p {
			if i > 0 && !less(p[i-1], b) {
				return fmt.Errorf("pool out of order at %d", i)
			}
			free[b] = true
		}
	}
	nfree := 0
	for ptr, s := range a.segs {
		if ptr != s.ptr || s.first == nil || s.first.Ptr != s.ptr || s.first.prev != nil {
			return fmt.Errorf("segment %#x: bad first block", ptr)
		}
		reserved += s.size
		end := s.ptr
		for b := s.first; b != nil; b = b.next {
			if b.Ptr != end || b.seg != s || b.Size == 0 || b.Size%Align != 0 {
				return fmt.Errorf("segment %#x: block %#x (%d bytes) does not follow at %#x", s.ptr, b.Ptr, b.Size, end)
			}
			if b.next != nil && b.next.prev != b {
				return fmt.Errorf("segment %#x: broken links at %#x", s.ptr, b.Ptr)
			}
			if b.free != free[b] {
				return fmt.Errorf("block %#x: free %v but in a pool %v", b.Ptr, b.free, free[b])
			}
			if b.free {
				nfree++
				if !a.opt.Exclusive && b.next != nil && b.next.free {
					return fmt.Errorf("segment %#x: adjacent free blocks at %#x", s.ptr, b.Ptr)
				}
			} else {
				inUse += b.Size
			}
			end = b.Ptr + b.Size
		}
		if end != s.ptr+s.size {
			return fmt.Errorf("segment %#x: blocks end at %#x, the segment at %#x", s.ptr, end, s.ptr+s.size)
		}
	}
	if nfree != len(free) {
		return fmt.Errorf("%d free blocks in segments, %d in pools", nfree, len(free))
	}
	if inUse != a.st.InUse || reserved != a.st.Reserved || len(a.segs) != a.st.Segments {
		return fmt.Errorf("counters: in use %d (blocks say %d), reserved %d (segments say %d), %d segments (%d)",
			a.st.InUse, inUse, a.st.Reserved, reserved, a.st.Segments, len(a.segs))
	}
	return nil
}

// Reporter is implemented by backends whose device memory comes from an
// Allocator (the CUDA backend): callers that report memory test for it.
type Reporter interface {
	// AllocatorStats returns the allocator's counters.
	AllocatorStats() Stats
}
