package runtime

import (
	"fmt"
	"os"
)

// Counters are what a backend asked of its device since the last
// ResetCounters: the host round-trips, launches and copies that decide how
// long a small step takes on a GPU, whatever its arithmetic.
type Counters struct {
	// Syncs counts host synchronizations: every wait for the device
	// (a context, stream or event synchronize) and every copy the host
	// waits for (a download; an upload from pageable memory, which the
	// driver may make synchronous).
	Syncs int64
	// Launches counts kernel launches and matrix products (each cuBLAS call
	// once, though it may run more than one kernel).
	Launches int64
	// Memsets counts memory fills (zeroing a tensor, a new tensor's fill).
	Memsets int64
	// Copies counts device-to-device copies.
	Copies int64
	// HostToDevice and DeviceToHost are the bytes copied each way;
	// Uploads and Downloads the copies.
	HostToDevice, DeviceToHost int64
	Uploads, Downloads         int64
	// AllocCalls counts the allocator calls that reach the driver
	// (device and pinned host memory, allocated or freed); a caching
	// allocator serves a steady state from its cache with none.
	AllocCalls int64
}

// Sub is c − d, counter by counter: what happened between two readings.
func (c Counters) Sub(d Counters) Counters {
	return Counters{
		Syncs: c.Syncs - d.Syncs, Launches: c.Launches - d.Launches, Memsets: c.Memsets - d.Memsets,
		Copies: c.Copies - d.Copies, HostToDevice: c.HostToDevice - d.HostToDevice,
		DeviceToHost: c.DeviceToHost - d.DeviceToHost, Uploads: c.Uploads - d.Uploads,
		Downloads: c.Downloads - d.Downloads, AllocCalls: c.AllocCalls - d.AllocCalls,
	}
}

// String is one line for logs.
func (c Counters) String() string {
	return fmt.Sprintf("%d host syncs, %d launches, %d memsets, %d copies, %d uploads (%s), %d downloads (%s), %d allocator calls",
		c.Syncs, c.Launches, c.Memsets, c.Copies, c.Uploads, FormatBytes(c.HostToDevice), c.Downloads, FormatBytes(c.DeviceToHost), c.AllocCalls)
}

// Counting is implemented by backends that count their device traffic (the
// CUDA backend does; the CPU backend, which has no device, does not).
// Callers that report it test for it: be.(Counting).
type Counting interface {
	// Counters returns the counts since the backend opened or the last
	// ResetCounters.
	Counters() Counters
	// ResetCounters sets every count to zero.
	ResetCounters()
}

// AsyncErrors is implemented by backends whose ops run asynchronously (the
// CUDA backend): Err returns the first device error recorded since the
// last Sync without waiting for queued work, so that a caller can check
// what has failed so far without a host round-trip. Errors of work still
// queued surface later, at the next Sync or download.
type AsyncErrors interface {
	Err() error
}

// Check returns the errors be has recorded so far: without waiting when be
// implements AsyncErrors, else by Sync (on the CPU, where every op has
// finished when it returns, that costs nothing).
func Check(be Backend) error {
	if a, ok := be.(AsyncErrors); ok {
		return a.Err()
	}
	return be.Sync()
}

// StepGraphs is implemented by backends that can record a step's work once
// and replay it (the CUDA backend, with CUDA graphs): the caller brackets
// each steady-state step with BeginGraph and EndGraph, and the backend
// launches the whole step at once where it can, and runs it as usual where
// it cannot (a step that waits for the device or allocates in the middle,
// or whose work differs from the recording). Results are the same either
// way.
type StepGraphs interface {
	// BeginGraph starts a step of kind key (one per shape bucket and kind
	// of step, e.g. "train 8×1024").
	BeginGraph(key string)
	// EndGraph ends it, launching its work; it returns a line for the log
	// when the key's graphs have just been turned off (saying why), else "".
	EndGraph() string
}

// BeginGraph starts a step of kind key on be when be records steps
// (StepGraphs) and returns what ends it: call it after the step's last
// launch and before its read; later calls (a deferred one on an error path)
// do nothing. The line EndGraph gives when the key's graphs go off is passed
// to log (nil: written to standard error). On other backends it does
// nothing.
func BeginGraph(be Backend, key string, log func(line string)) (end func()) {
	sg, ok := be.(StepGraphs)
	if !ok {
		return func() {}
	}
	sg.BeginGraph(key)
	done := false
	return func() {
		if done {
			return
		}
		done = true
		if note := sg.EndGraph(); note != "" {
			if log != nil {
				log(note)
			} else {
				fmt.Fprintln(os.Stderr, "kdnative:", note)
			}
		}
	}
}
