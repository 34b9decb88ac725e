package cuda

import (
	"fmt"
	"unsafe"
)

// Uploads go through pinned (page-locked) host memory: the host copies the
// values into a staging arena and queues an asynchronous copy from it on
// the backend's stream, and returns at once. A copy from pageable Go memory
// would make the driver wait for the stream first, draining the GPU at
// every batch's ids, targets and loss weights.
//
// A staged copy reads its arena when the stream reaches it, so the arena's
// bytes may be reused only after the host has waited for the stream: every
// synchronization (the driver calls instrument wraps) resets the arena to
// empty. Between two synchronizations the copies fill it in order; one that
// does not fit gets a new arena twice the size (the outgrown ones are
// freed at the next synchronization), so that after a warm-up step the
// arena holds a whole step's uploads and a steady state allocates nothing.

const (
	// stageMaxCopy is the largest upload staged; larger ones (weights,
	// once, at load) copy synchronously from pageable memory.
	stageMaxCopy = 4 << 20
	// stageMinArena is the first arena's size.
	stageMinArena = 256 << 10
	// stageMaxPending bounds the pinned memory held between two
	// synchronizations; past it the upload waits for the stream instead
	// of growing the arena (loading a model's many small tensors).
	stageMaxPending = 64 << 20
	// stageAlign keeps each staged copy 16-byte aligned.
	stageAlign = 16
)

// arena is one pinned host allocation.
type arena struct {
	p    unsafe.Pointer
	size uint64
}

// stager is the backend's staging arenas.
type stager struct {
	cur     arena
	off     uint64  // bytes of cur in use since the last synchronization
	old     []arena // outgrown arenas, still read by queued copies
	pending uint64  // bytes staged since the last synchronization, all arenas
	busy    bool    // inside drained (its frees are driver calls too)
}

// drained is called after the host has waited for the stream: every staged
// copy has been made, so the arenas are free again. The outgrown arenas
// are returned to the driver. Call with the backend entered.
func (s *stager) drained(b *Backend) {
	if s.busy {
		return
	}
	s.busy = true
	for _, a := range s.old {
		b.api.cuMemFreeHost(a.p)
	}
	s.busy = false
	s.old, s.off, s.pending = nil, 0, 0
}

// stagedCopy queues a copy of n bytes at src to the device address dst on
// the stream, through the staging arena; it returns before the copy is made
// (src may be reused at once). Call with the backend entered.
func (b *Backend) stagedCopy(dst uint64, src unsafe.Pointer, n uint64) error {
	s := &b.stage
	if n > stageMaxCopy || b.api.cuMemcpyHtoDAsync == nil || b.api.cuMemHostAlloc == nil {
		return b.api.check("cuMemcpyHtoD_v2", b.api.cuMemcpyHtoD(dst, src, n))
	}
	size := (n + stageAlign - 1) / stageAlign * stageAlign
	if s.off+size > s.cur.size {
		if s.pending+size > stageMaxPending && s.pending > 0 {
			// Wait for the stream rather than pin more memory.
			if err := b.api.check("cuStreamSynchronize", b.api.cuStreamSynchronize(b.stream)); err != nil {
				return err
			}
		}
		if s.off+size > s.cur.size { // a synchronization empties cur
			grow := max(2*s.cur.size, s.pending+size, stageMinArena)
			var p unsafe.Pointer
			if err := b.api.check("cuMemHostAlloc", b.api.cuMemHostAlloc(&p, grow, 0)); err != nil {
				return fmt.Errorf("pinned staging memory (%s): %w", mib(grow), err)
			}
			if s.cur.p != nil {
				s.old = append(s.old, s.cur)
			}
			s.cur, s.off = arena{p: p, size: grow}, 0
		}
	}
	at := unsafe.Add(s.cur.p, s.off)
	copy(unsafe.Slice((*byte)(at), n), unsafe.Slice((*byte)(src), n))
	if err := b.api.check("cuMemcpyHtoDAsync_v2", b.api.cuMemcpyHtoDAsync(dst, at, n, b.stream)); err != nil {
		return err
	}
	s.off += size
	s.pending += size
	return nil
}
