package cachealloc

import "fmt"

// Virtual is a Driver without memory behind it: it hands out addresses
// (aligned to LargeRound, never reused) and keeps count. With Capacity > 0
// it refuses to hold more than Capacity bytes at once, as a full device
// does. The memory planner and the tests run the allocator over it.
type Virtual struct {
	Capacity uint64
	next     uint64
	held     uint64
	sizes    map[uint64]uint64
}

// Malloc implements Driver.
func (v *Virtual) Malloc(size uint64) (uint64, error) {
	if v.Capacity > 0 && size > v.Capacity-v.held {
		return 0, fmt.Errorf("virtual device: %d bytes asked, %d of %d free: %w", size, v.Capacity-v.held, v.Capacity, ErrOutOfMemory)
	}
	if v.sizes == nil {
		v.sizes = map[uint64]uint64{}
		v.next = LargeRound // 0 stays the null address
	}
	if size > 1<<62 || v.next > 1<<62 {
		return 0, fmt.Errorf("virtual device: %d bytes asked after %d: more than any device holds: %w", size, v.next, ErrOutOfMemory)
	}
	ptr := v.next
	v.next = roundUp(v.next+size, LargeRound)
	v.sizes[ptr] = size
	v.held += size
	return ptr, nil
}

// Free implements Driver.
func (v *Virtual) Free(ptr uint64) error {
	n, ok := v.sizes[ptr]
	if !ok {
		return fmt.Errorf("virtual device: %#x is not an allocation", ptr)
	}
	delete(v.sizes, ptr)
	v.held -= n
	return nil
}

// Sync implements Driver.
func (v *Virtual) Sync() error { return nil }

// Held is the bytes the driver has given out and not got back.
func (v *Virtual) Held() uint64 { return v.held }
