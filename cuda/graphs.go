package cuda

import (
	"fmt"
	"os"
	goruntime "runtime"
	"slices"
	"unsafe"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// CUDA graphs for the steady-state step (runtime.StepGraphs). A caller
// marks a step with BeginGraph(key) and EndGraph. The first step of a key
// runs as usual (it allocates and compiles); the second is captured (the
// stream records its work instead of running it) and launched as one graph
// at EndGraph; after that each step's driver calls are only compared with
// the recording, in order, and the graph is launched at EndGraph: one
// launch for the thousands of a training step. The Go code of the step runs
// every time (it produces the calls); the driver sees one call.
//
// Everything a step's work depends on must be in device memory or in the
// calls' arguments: uploads go through the staging arena, whose addresses
// repeat from step to step (the arena is emptied by the step's read), and
// the host writes each step's values there before the graph reads them;
// AdamW's step-dependent scalars are uploaded too (opt_adamw).
//
// What cannot be captured falls back to running the step's work as usual,
// with nothing lost: a step that synchronizes or allocates in the middle
// (the recorded calls run first, then that call), a call that differs from
// the recording (other shapes, other tensors: each key keeps a few
// recordings, one per shape bucket, dropping the least recently run when
// full; a step captured after a miss whose calls a recording has already
// runs that recording instead), a driver without graphs or refusing
// the capture. After graphMaxMisses fallbacks in a row, or when graphMaxRecs
// recordings in a row were dropped without ever being replayed (the step's
// work keeps changing, as a decode batch's does when sequences come and go
// at every step), a key runs without graphs, and EndGraph returns a line
// saying why, once; after graphRetryAfter steps it tries graphs again (a
// long-running server's burst of short requests should not cost it graphs
// for good), unless the driver refused to capture.
// Graphs are on with KDNATIVE_CUDA_GRAPHS=1 and off otherwise, until a run
// on a real GPU has confirmed them (the emulator captures as the driver
// does, but cuBLAS under capture and the driver's own checks are only
// exercised on a card; scripts/gpu/run.sh turns them on).

const (
	graphIdle = iota
	graphCapture
	graphReplay
)

// graphMaxMisses is how many fallbacks in a row turn a key's graphs off.
const graphMaxMisses = 3

// graphRetryAfter is how many steps of a key run without graphs, once
// they went off, before it tries them again (unless the driver refused).
var graphRetryAfter = 1000

// graphMaxRecs is how many recordings (shape buckets) a key keeps.
const graphMaxRecs = 8

// cuStreamCaptureModeRelaxed lets the capture proceed whatever other
// threads do; the backend itself makes no unsafe call while capturing (it
// falls back first).
const cuStreamCaptureModeRelaxed = 2

// graphOp is one stream call of a step: what identifies it, and the call,
// to make it as usual.
type graphOp struct {
	sig []uint64
	run func() cuResult
}

// graphRec is one captured step.
type graphRec struct {
	ops         []graphOp
	graph, exec uintptr
	replays     int
	used        int64 // the step it last ran (graphState.tick), for eviction
}

// graphKey is a kind of step.
type graphKey struct {
	recs   []*graphRec
	seen   int
	misses int  // fallbacks in a row
	missed bool // the last step fell back: capture the next
	wasted int  // recordings dropped in a row without a replay
	off    bool
	offAt  int  // seen when the graphs went off
	final  bool // off for good: the driver refused to capture
	said   bool
}

// graphState is the backend's graphs.
type graphState struct {
	mode  int
	name  string
	key   *graphKey
	keys  map[string]*graphKey
	ops   []graphOp   // this step's calls so far
	cands []*graphRec // replay: the recordings that match them
	note  string      // why the key's graphs went off, for EndGraph
	// Launched and Replayed count the graphs launched and the steps that
	// were replayed (for tests).
	launched, replayed int
	tick               int64 // steps begun, for recordings' last use
}

// graphsAvailable reports whether the driver has the graph calls.
func (b *Backend) graphsAvailable() bool {
	a := b.api
	return a.cuStreamBeginCapture != nil && a.cuStreamEndCapture != nil && a.cuGraphInstantiateWithFlags != nil &&
		a.cuGraphLaunch != nil && a.cuGraphExecDestroy != nil && a.cuGraphDestroy != nil
}

// BeginGraph implements runtime.StepGraphs: the stream calls until EndGraph
// are one step of kind key ("train 8×1024").
func (b *Backend) BeginGraph(key string) {
	defer b.enter()()
	g := &b.graph
	if g.mode != graphIdle { // the last step was never ended: end it as usual
		b.graphFallback("a step was not ended")
	}
	g.mode, g.ops, g.cands = graphIdle, nil, nil
	if os.Getenv("KDNATIVE_CUDA_GRAPHS") != "1" || !b.graphsAvailable() || b.err != nil {
		return
	}
	if g.keys == nil {
		g.keys = map[string]*graphKey{}
	}
	k := g.keys[key]
	if k == nil {
		k = &graphKey{}
		g.keys[key] = k
	}
	g.key, g.name = k, key
	g.tick++
	k.seen++
	if k.off && !k.final && k.seen-k.offAt >= graphRetryAfter {
		// What turned the graphs off (a burst of changing steps, a few
		// steps that synchronized) may have passed: try again. The log
		// line was said once and is not repeated.
		k.off, k.misses, k.wasted, k.missed = false, 0, 0, true
	}
	if k.off || k.seen == 1 {
		return // the first step allocates and compiles
	}
	if len(k.recs) > 0 && !k.missed {
		g.mode, g.cands = graphReplay, append([]*graphRec(nil), k.recs...)
		return
	}
	if r := b.api.cuStreamBeginCapture(b.stream, cuStreamCaptureModeRelaxed); r != cudaSuccess {
		b.graphMiss(fmt.Sprintf("the driver refused to capture (%v)", b.api.check("cuStreamBeginCapture_v2", r)), true)
		k.final = true
		return
	}
	g.mode = graphCapture
}

// EndGraph implements runtime.StepGraphs: it launches the step's graph (or
// the step ran as usual) and returns a line for the log when the key's
// graphs have just been turned off, else "".
func (b *Backend) EndGraph() string {
	defer b.enter()()
	g := &b.graph
	switch g.mode {
	case graphCapture:
		var graph, exec uintptr
		r := b.api.cuStreamEndCapture(b.stream, &graph)
		k := g.key
		if same := k.find(g.ops); r == cudaSuccess && graph != 0 && same != nil {
			// A step after a miss is captured whatever its shape; where a
			// recording of the same calls exists already, that one runs
			// (the capture ran nothing) and the copy is dropped, so the
			// key keeps one recording per kind of step.
			b.api.cuGraphDestroy(graph)
			k.misses, k.missed, k.wasted = 0, false, 0
			same.replays++
			same.used = g.tick
			b.graphLaunch(same)
			break
		}
		if r == cudaSuccess && graph != 0 {
			if r = b.api.cuGraphInstantiateWithFlags(&exec, graph, 0); r != cudaSuccess {
				b.api.cuGraphDestroy(graph)
			}
		}
		if r != cudaSuccess || graph == 0 {
			g.mode = graphIdle // the capture ran nothing: run the calls
			b.graphRun(g.ops)
			b.graphMiss(fmt.Sprintf("the capture failed (%v)", b.api.check("cuStreamEndCapture/cuGraphInstantiateWithFlags", r)), false)
			break
		}
		k.misses, k.missed = 0, false
		if len(k.recs) == graphMaxRecs {
			// The least recently run recording makes room.
			at := 0
			for i, r := range k.recs {
				if r.used < k.recs[at].used {
					at = i
				}
			}
			old := k.recs[at]
			b.api.cuGraphExecDestroy(old.exec)
			b.api.cuGraphDestroy(old.graph)
			k.recs = append(k.recs[:at], k.recs[at+1:]...)
			if old.replays == 0 {
				k.wasted++
			}
		}
		rec := &graphRec{ops: g.ops, graph: graph, exec: exec, used: g.tick}
		k.recs = append(k.recs, rec)
		b.graphLaunch(rec)
		if k.wasted >= graphMaxRecs {
			// Each step differs from the recordings (a decode batch whose
			// sequences keep changing): capturing costs more than it gives.
			g.mode = graphIdle
			b.graphMiss(fmt.Sprintf("its work changes from step to step (%d recordings in a row were never replayed)", k.wasted), true)
		}
	case graphReplay:
		var rec *graphRec
		for _, c := range g.cands {
			if len(c.ops) == len(g.ops) {
				rec = c
				break
			}
		}
		g.mode = graphIdle
		if rec == nil {
			b.graphRun(g.ops)
			b.graphMiss("a step ended before the recorded one", false)
			break
		}
		g.key.misses, g.key.wasted = 0, 0
		rec.replays++
		rec.used = g.tick
		g.replayed++
		for _, op := range rec.ops { // the graph moves the uploads' bytes
			if op.sig[0] == sigUpload {
				b.ctr.Uploads++
				b.ctr.HostToDevice += int64(op.sig[3])
			}
		}
		b.graphLaunch(rec)
	}
	g.mode, g.ops, g.cands = graphIdle, nil, nil
	note := g.note
	g.note = ""
	return note
}

// graphLaunch launches a captured step on the stream.
func (b *Backend) graphLaunch(rec *graphRec) {
	b.graph.launched++
	if err := b.api.check("cuGraphLaunch", b.api.cuGraphLaunch(rec.exec, b.stream)); err != nil {
		b.recordLocked("graph of the "+b.graph.name+" step", err)
	}
}

// graphRun makes calls as usual (after a capture that ran nothing, or the
// matched calls of a replay that diverged).
func (b *Backend) graphRun(ops []graphOp) {
	for _, op := range ops {
		if r := op.run(); r != cudaSuccess {
			b.recordLocked("a step's work, run without its graph", b.api.check("a queued call", r))
		}
	}
}

// graphMiss ends the step's graph: the calls so far have run (or will), and
// the rest run as usual. Too many in a row turn the key's graphs off.
func (b *Backend) graphMiss(why string, off bool) {
	g := &b.graph
	g.mode = graphIdle
	k := g.key
	if k == nil {
		return
	}
	k.misses++
	k.missed = true
	if (off || k.misses >= graphMaxMisses) && !k.off {
		k.off, k.offAt = true, k.seen
		// The recordings go (a graph still running is freed by the
		// driver when it completes).
		for _, r := range k.recs {
			b.api.cuGraphExecDestroy(r.exec)
			b.api.cuGraphDestroy(r.graph)
		}
		k.recs = nil
		if !k.said {
			k.said = true
			g.note = fmt.Sprintf("cuda graphs: the %s step runs without a graph: %s", g.name, why)
		}
	}
}

// graphFallback is called before a call that cannot be part of a graph (a
// synchronization, an allocation): the step's calls so far are made as
// usual and the step goes on without a graph.
func (b *Backend) graphFallback(why string) {
	g := &b.graph
	switch g.mode {
	case graphCapture:
		var graph uintptr
		b.api.cuStreamEndCapture(b.stream, &graph) // ends it; what it holds never ran
		if graph != 0 {
			b.api.cuGraphDestroy(graph)
		}
	case graphReplay:
	default:
		return
	}
	g.mode = graphIdle
	b.graphRun(g.ops)
	b.graphMiss(why, false)
}

// graphCall is a stream call made while a step may be graphed: captured
// (made, and recorded), matched against the recording (not made), or, on a
// mismatch or a failure, made as usual after the step's earlier calls.
func (b *Backend) graphCall(sig []uint64, run func() cuResult) cuResult {
	g := &b.graph
	switch g.mode {
	case graphCapture:
		r := run()
		if r != cudaSuccess {
			// The capture is in error: run everything as usual, this call
			// included.
			b.graphFallback(fmt.Sprintf("a call failed while capturing (%v)", b.api.check("a captured call", r)))
			return run()
		}
		g.ops = append(g.ops, graphOp{sig: sig, run: run})
		return r
	case graphReplay:
		pos := len(g.ops)
		cands := make([]*graphRec, 0, len(g.cands))
		for _, c := range g.cands {
			if pos < len(c.ops) && sameSig(c.ops[pos].sig, sig) {
				cands = append(cands, c)
			}
		}
		g.cands = cands
		if len(cands) == 0 {
			b.graphFallback("the step's calls changed (new shapes or tensors)")
			return run()
		}
		g.ops = append(g.ops, graphOp{sig: sig, run: run})
		return cudaSuccess
	}
	return run()
}

// find returns the key's recording of exactly the calls ops, or nil.
func (k *graphKey) find(ops []graphOp) *graphRec {
	for _, r := range k.recs {
		if len(r.ops) == len(ops) && slices.EqualFunc(r.ops, ops, func(a, b graphOp) bool { return sameSig(a.sig, b.sig) }) {
			return r
		}
	}
	return nil
}

func sameSig(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Signature tags of the graphed calls.
const (
	sigLaunch = iota + 1
	sigMemset
	sigCopy
	sigUpload
	sigGemm
	sigGemmBatched
)

// graphWrap puts the graph layer around b's stream calls (after instrument,
// so that a call made as usual is counted once, and a replayed one not).
// Every call is made with the backend entered.
func (b *Backend) graphWrap() {
	if !b.graphsAvailable() {
		return
	}
	a := b.api
	launch := a.cuLaunchKernel
	a.cuLaunchKernel = func(fn uintptr, gx, gy, gz, bx, by, bz, shmem uint32, s uintptr, params *unsafe.Pointer, extra *unsafe.Pointer) cuResult {
		if b.graph.mode == graphIdle || extra != nil {
			if b.graph.mode != graphIdle {
				b.graphFallback("a launch with extra parameters")
			}
			return launch(fn, gx, gy, gz, bx, by, bz, shmem, s, params, extra)
		}
		// launch (backend.go) gives 8-byte slots ending with a nil entry.
		var slots []uint64
		for p := unsafe.Slice(params, 1<<16); p[len(slots)] != nil; {
			slots = append(slots, *(*uint64)(p[len(slots)]))
		}
		sig := append([]uint64{sigLaunch, uint64(fn), uint64(gx), uint64(gy), uint64(gz), uint64(bx), uint64(by), uint64(bz), uint64(shmem), uint64(s)}, slots...)
		return b.graphCall(sig, func() cuResult {
			ps := make([]unsafe.Pointer, len(slots)+1)
			for i := range slots {
				ps[i] = unsafe.Pointer(&slots[i])
			}
			r := launch(fn, gx, gy, gz, bx, by, bz, shmem, s, &ps[0], nil)
			goruntime.KeepAlive(slots)
			return r
		})
	}
	memset := a.cuMemsetD8Async
	a.cuMemsetD8Async = func(dst uint64, v uint8, n uint64, s uintptr) cuResult {
		return b.graphCall([]uint64{sigMemset, dst, uint64(v), n, uint64(s)}, func() cuResult { return memset(dst, v, n, s) })
	}
	dtod := a.cuMemcpyDtoDAsync
	a.cuMemcpyDtoDAsync = func(dst, src uint64, n uint64, s uintptr) cuResult {
		return b.graphCall([]uint64{sigCopy, dst, src, n, uint64(s)}, func() cuResult { return dtod(dst, src, n, s) })
	}
	htod := a.cuMemcpyHtoDAsync
	a.cuMemcpyHtoDAsync = func(dst uint64, src unsafe.Pointer, n uint64, s uintptr) cuResult {
		// The staging address, not the bytes: the graph reads them when
		// it runs, and the host wrote this step's there.
		return b.graphCall([]uint64{sigUpload, dst, uint64(uintptr(src)), n, uint64(s)}, func() cuResult { return htod(dst, src, n, s) })
	}
	// Calls that wait for the device or allocate end the step's graph
	// first.
	fallback := func(why string) {
		if b.graph.mode != graphIdle {
			b.graphFallback(why)
		}
	}
	ctxSync := a.cuCtxSynchronize
	a.cuCtxSynchronize = func() cuResult { fallback("it synchronizes"); return ctxSync() }
	streamSync := a.cuStreamSynchronize
	a.cuStreamSynchronize = func(s uintptr) cuResult { fallback("it synchronizes"); return streamSync(s) }
	evSync, evRecord := a.cuEventSynchronize, a.cuEventRecord
	a.cuEventSynchronize = func(ev uintptr) cuResult { fallback("it waits for an event"); return evSync(ev) }
	a.cuEventRecord = func(ev, s uintptr) cuResult { fallback("it records an event"); return evRecord(ev, s) }
	dtoh := a.cuMemcpyDtoH
	a.cuMemcpyDtoH = func(dst unsafe.Pointer, src uint64, n uint64) cuResult {
		fallback("it reads from the device")
		return dtoh(dst, src, n)
	}
	htodSync := a.cuMemcpyHtoD
	a.cuMemcpyHtoD = func(dst uint64, src unsafe.Pointer, n uint64) cuResult {
		fallback("it uploads synchronously")
		return htodSync(dst, src, n)
	}
	alloc, free := a.cuMemAlloc, a.cuMemFree
	a.cuMemAlloc = func(p *uint64, n uint64) cuResult { fallback("it allocates device memory"); return alloc(p, n) }
	a.cuMemFree = func(p uint64) cuResult { fallback("it frees device memory"); return free(p) }
	hostAlloc, hostFree := a.cuMemHostAlloc, a.cuMemFreeHost
	a.cuMemHostAlloc = func(p *unsafe.Pointer, n uint64, flags uint32) cuResult {
		fallback("it allocates pinned memory")
		return hostAlloc(p, n, flags)
	}
	a.cuMemFreeHost = func(p unsafe.Pointer) cuResult { fallback("it frees pinned memory"); return hostFree(p) }
	if l := b.blas; l != nil {
		gemm, batched := l.cublasGemmEx, l.cublasGemmStridedBatchedEx
		status := func(s cublasStatus) cuResult { return cuResult(s) }
		l.cublasGemmEx = func(h uintptr, ta, tb int32, m, n, k int32, alpha unsafe.Pointer, x uint64, xt int32, ldx int32,
			y uint64, yt int32, ldy int32, beta unsafe.Pointer, z uint64, zt int32, ldz int32, compute int32, algo int32) cublasStatus {
			if b.graph.mode == graphIdle {
				return gemm(h, ta, tb, m, n, k, alpha, x, xt, ldx, y, yt, ldy, beta, z, zt, ldz, compute, algo)
			}
			al, be := *(*float32)(alpha), *(*float32)(beta)
			sig := []uint64{sigGemm, uint64(h), uint64(ta), uint64(tb), uint64(m), uint64(n), uint64(k), uint64(f32bits(al)),
				x, uint64(xt), uint64(ldx), y, uint64(yt), uint64(ldy), uint64(f32bits(be)), z, uint64(zt), uint64(ldz), uint64(compute), uint64(uint32(algo))}
			return cublasStatus(b.graphCall(sig, func() cuResult {
				return status(gemm(h, ta, tb, m, n, k, unsafe.Pointer(&al), x, xt, ldx, y, yt, ldy, unsafe.Pointer(&be), z, zt, ldz, compute, algo))
			}))
		}
		l.cublasGemmStridedBatchedEx = func(h uintptr, ta, tb int32, m, n, k int32, alpha unsafe.Pointer,
			x uint64, xt int32, ldx int32, sx int64, y uint64, yt int32, ldy int32, sy int64,
			beta unsafe.Pointer, z uint64, zt int32, ldz int32, sz int64, count int32, compute int32, algo int32) cublasStatus {
			if b.graph.mode == graphIdle {
				return batched(h, ta, tb, m, n, k, alpha, x, xt, ldx, sx, y, yt, ldy, sy, beta, z, zt, ldz, sz, count, compute, algo)
			}
			al, be := *(*float32)(alpha), *(*float32)(beta)
			sig := []uint64{sigGemmBatched, uint64(h), uint64(ta), uint64(tb), uint64(m), uint64(n), uint64(k), uint64(f32bits(al)),
				x, uint64(xt), uint64(ldx), uint64(sx), y, uint64(yt), uint64(ldy), uint64(sy), uint64(f32bits(be)),
				z, uint64(zt), uint64(ldz), uint64(sz), uint64(count), uint64(compute), uint64(uint32(algo))}
			return cublasStatus(b.graphCall(sig, func() cuResult {
				return status(batched(h, ta, tb, m, n, k, unsafe.Pointer(&al), x, xt, ldx, sx, y, yt, ldy, sy,
					unsafe.Pointer(&be), z, zt, ldz, sz, count, compute, algo))
			}))
		}
	}
}

func f32bits(v float32) uint32 { return *(*uint32)(unsafe.Pointer(&v)) }

var _ kdrt.StepGraphs = (*Backend)(nil)
