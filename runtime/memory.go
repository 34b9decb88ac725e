package runtime

import (
	"fmt"
	"math"
	"math/bits"
)

// MemoryReporter is an optional interface of a Backend: how many bytes new
// tensors may still take. Callers use it through FreeMemory and CheckFree to
// refuse a plan that cannot fit (a batch, a key/value cache, a model) with
// the numbers, before allocating, instead of failing in the middle of it or
// being killed by the operating system.
type MemoryReporter interface {
	// FreeMemory returns the bytes available to new tensors and the total
	// memory of the device; ok is false when the backend cannot tell.
	FreeMemory() (free, total int64, ok bool)
}

// FreeMemory asks be for its free and total memory; ok is false when be
// does not implement MemoryReporter or cannot tell.
func FreeMemory(be Backend) (free, total int64, ok bool) {
	r, isReporter := be.(MemoryReporter)
	if !isReporter {
		return 0, 0, false
	}
	return r.FreeMemory()
}

// TensorBytes is the size of a tensor of dtype dt and the given shape, or an
// error when a dimension is negative or the size overflows int64.
func TensorBytes(dt DType, shape ...int) (int64, error) {
	n := uint64(dt.Size())
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %s has a negative dimension", ShapeString(shape))
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, fmt.Errorf("shape %s of %s: the size overflows", ShapeString(shape), dt)
		}
		n = lo
	}
	return int64(n), nil
}

// MulBytes returns the product of non-negative factors, saturating at
// math.MaxInt64 instead of overflowing (a size that large never fits, and
// the error can still print it as "more than 9.2 EB").
func MulBytes(factors ...int64) int64 {
	p := uint64(1)
	for _, f := range factors {
		if f < 0 {
			panic(fmt.Sprintf("runtime: MulBytes of a negative factor %d", f))
		}
		hi, lo := bits.Mul64(p, uint64(f))
		if hi != 0 || lo > math.MaxInt64 {
			return math.MaxInt64
		}
		p = lo
	}
	return int64(p)
}

// AddBytes returns a + b for non-negative sizes, saturating at math.MaxInt64.
func AddBytes(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// FormatBytes writes a size for people: "512 B", "1.5 GB" (powers of 1000,
// as disks and cloud instances are sold); a saturated size is "more than
// 9.2 EB".
func FormatBytes(n int64) string {
	if n == math.MaxInt64 {
		return "more than 9.2 EB"
	}
	if n < 1000 {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, unit := range []string{"kB", "MB", "GB", "TB", "PB"} {
		f /= 1000
		if f < 1000 {
			return fmt.Sprintf("%.1f %s", f, unit)
		}
	}
	return fmt.Sprintf("%.1f EB", f/1000)
}

// OutOfMemoryError says that a plan needs more memory than the backend has
// free. Its message gives both numbers and what to change.
type OutOfMemoryError struct {
	What        string // what needs the memory: "a batch of 8 × 512 tokens"
	Need        int64  // bytes needed
	Free, Total int64  // the backend's, when known (Total 0: unknown)
	Backend     string // the backend's name
	Hint        string // what to change, or ""
}

func (e *OutOfMemoryError) Error() string {
	msg := fmt.Sprintf("%s needs %s of memory, but the %s backend has %s free", e.What, FormatBytes(e.Need), e.Backend, FormatBytes(e.Free))
	if e.Total > 0 {
		msg += " of " + FormatBytes(e.Total)
	}
	if e.Hint != "" {
		msg += ": " + e.Hint
	}
	return msg
}

// CheckFree returns an *OutOfMemoryError when need bytes exceed what be has
// free, and nil when they fit or be cannot tell. what names the plan and
// hint says what to change (both go into the message).
func CheckFree(be Backend, what string, need int64, hint string) error {
	free, total, ok := FreeMemory(be)
	if !ok || need <= free {
		return nil
	}
	return &OutOfMemoryError{What: what, Need: need, Free: free, Total: total, Backend: be.Name(), Hint: hint}
}

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
