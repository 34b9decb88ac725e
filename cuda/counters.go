package cuda

import (
	"unsafe"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// The backend's traffic counters (runtime.Counting) are kept by wrapping
// the driver and cuBLAS calls once, when the backend is made: every call
// that waits for the device, copies, fills or allocates counts itself
// wherever it is made from (the allocator included), so no call site can
// forget to.

// instrument wraps b's driver and cuBLAS calls with the counters. Every
// call is made with the backend entered, so the counts need no lock of
// their own.
func (b *Backend) instrument() {
	a, c := b.api, &b.ctr
	drained := func(r cuResult) cuResult {
		b.stage.drained(b)
		return r
	}
	ctxSync := a.cuCtxSynchronize
	a.cuCtxSynchronize = func() cuResult { c.Syncs++; return drained(ctxSync()) }
	if streamSync := a.cuStreamSynchronize; streamSync != nil {
		a.cuStreamSynchronize = func(s uintptr) cuResult { c.Syncs++; return drained(streamSync(s)) }
	}
	if evSync := a.cuEventSynchronize; evSync != nil {
		// An event's wait covers only the work before it: nothing is
		// drained for the staging buffers.
		a.cuEventSynchronize = func(ev uintptr) cuResult { c.Syncs++; return evSync(ev) }
	}
	dtoh := a.cuMemcpyDtoH
	a.cuMemcpyDtoH = func(dst unsafe.Pointer, src uint64, n uint64) cuResult {
		c.Syncs++
		c.Downloads++
		c.DeviceToHost += int64(n)
		return drained(dtoh(dst, src, n))
	}
	htod := a.cuMemcpyHtoD
	a.cuMemcpyHtoD = func(dst uint64, src unsafe.Pointer, n uint64) cuResult {
		// From pageable memory the driver first waits for the stream.
		c.Syncs++
		c.Uploads++
		c.HostToDevice += int64(n)
		return drained(htod(dst, src, n))
	}
	if htodAsync := a.cuMemcpyHtoDAsync; htodAsync != nil {
		a.cuMemcpyHtoDAsync = func(dst uint64, src unsafe.Pointer, n uint64, s uintptr) cuResult {
			c.Uploads++
			c.HostToDevice += int64(n)
			return htodAsync(dst, src, n, s)
		}
	}
	dtod := a.cuMemcpyDtoDAsync
	a.cuMemcpyDtoDAsync = func(dst, src uint64, n uint64, s uintptr) cuResult { c.Copies++; return dtod(dst, src, n, s) }
	memset := a.cuMemsetD8Async
	a.cuMemsetD8Async = func(dst uint64, v uint8, n uint64, s uintptr) cuResult { c.Memsets++; return memset(dst, v, n, s) }
	launch := a.cuLaunchKernel
	a.cuLaunchKernel = func(fn uintptr, gx, gy, gz, bx, by, bz, shmem uint32, s uintptr, params *unsafe.Pointer, extra *unsafe.Pointer) cuResult {
		c.Launches++
		return launch(fn, gx, gy, gz, bx, by, bz, shmem, s, params, extra)
	}
	if graphLaunch := a.cuGraphLaunch; graphLaunch != nil {
		a.cuGraphLaunch = func(exec, s uintptr) cuResult { c.Launches++; return graphLaunch(exec, s) }
	}
	alloc, free := a.cuMemAlloc, a.cuMemFree
	a.cuMemAlloc = func(p *uint64, n uint64) cuResult { c.AllocCalls++; return alloc(p, n) }
	a.cuMemFree = func(p uint64) cuResult { c.AllocCalls++; return free(p) }
	if hostAlloc, hostFree := a.cuMemHostAlloc, a.cuMemFreeHost; hostAlloc != nil && hostFree != nil {
		a.cuMemHostAlloc = func(p *unsafe.Pointer, n uint64, flags uint32) cuResult {
			c.AllocCalls++
			return hostAlloc(p, n, flags)
		}
		a.cuMemFreeHost = func(p unsafe.Pointer) cuResult { c.AllocCalls++; return hostFree(p) }
	}
	if l := b.blas; l != nil {
		gemm, batched := l.cublasGemmEx, l.cublasGemmStridedBatchedEx
		l.cublasGemmEx = func(h uintptr, ta, tb int32, m, n, k int32, alpha unsafe.Pointer, x uint64, xt int32, ldx int32,
			y uint64, yt int32, ldy int32, beta unsafe.Pointer, z uint64, zt int32, ldz int32, compute int32, algo int32) cublasStatus {
			c.Launches++
			return gemm(h, ta, tb, m, n, k, alpha, x, xt, ldx, y, yt, ldy, beta, z, zt, ldz, compute, algo)
		}
		l.cublasGemmStridedBatchedEx = func(h uintptr, ta, tb int32, m, n, k int32, alpha unsafe.Pointer,
			x uint64, xt int32, ldx int32, sx int64, y uint64, yt int32, ldy int32, sy int64,
			beta unsafe.Pointer, z uint64, zt int32, ldz int32, sz int64, count int32, compute int32, algo int32) cublasStatus {
			c.Launches++
			return batched(h, ta, tb, m, n, k, alpha, x, xt, ldx, sx, y, yt, ldy, sy, beta, z, zt, ldz, sz, count, compute, algo)
		}
	}
}

// Counters implements runtime.Counting: the backend's traffic since it
// opened or the last ResetCounters.
func (b *Backend) Counters() kdrt.Counters {
	defer b.enter()()
	return b.ctr
}

// ResetCounters implements runtime.Counting.
func (b *Backend) ResetCounters() {
	defer b.enter()()
	b.ctr = kdrt.Counters{}
}

// Err implements runtime.AsyncErrors: the first error recorded since the
// last Sync, without waiting for the stream.
func (b *Backend) Err() error {
	defer b.enter()()
	return b.err
}

var (
	_ kdrt.Counting    = (*Backend)(nil)
	_ kdrt.AsyncErrors = (*Backend)(nil)
)
