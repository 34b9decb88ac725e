package runtime

// PeakMemory is implemented by backends that keep a high-water mark of the
// device memory their tensors hold (the CUDA backend's caching allocator
// does; the CPU backend, whose tensors are Go memory, does not). Callers
// that report memory test for it: be.(PeakMemory).
type PeakMemory interface {
	// ResetPeak sets the high-water mark to the bytes in use now.
	ResetPeak()
	// PeakBytes is the most bytes the backend's live tensors held at once
	// since the backend opened or the last ResetPeak, counted as the
	// allocator hands them out (rounded up to its size classes).
	PeakBytes() uint64
}
