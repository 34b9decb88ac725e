package sgemm

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// active is the micro-kernel Sgemm uses: the best one the CPU supports. Tests
// switch it to run every kernel, the portable one included, on one machine.
var active = func() *kernel {
	if len(hostKernels) > 0 {
		return hostKernels[0]
	}
	return genericKernel
}()

// KernelName reports which micro-kernel Sgemm runs on this CPU: "avx512",
// "avx2" or "generic".
func KernelName() string { return active.name }

// Sgemm computes C = α·op(A)·op(B) + β·C for row-major matrices. op(A) is m×k
// and op(B) is k×n, so C is m×n; op(X) is X, or Xᵀ when transX is set.
// Element (i, j) of a stored matrix X is x[i·ldx+j], as in gonum's blas32
// row-major convention: A is stored m×k (k×m when transA), B k×n (n×k when
// transB), and each leading dimension is at least the stored width.
//
// β == 0 means C is not read, so NaNs in C are overwritten. k == 0 or α == 0
// means C = β·C, and A and B are not read. Only the logical matrices are
// touched: each slice need only be (rows−1)·ld + cols long.
//
// Sgemm panics on negative sizes, short leading dimensions or short slices.
// Large products run on up to GOMAXPROCS goroutines.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic("sgemm: negative dimension")
	}
	rowsA, colsA := m, k
	if transA {
		rowsA, colsA = k, m
	}
	rowsB, colsB := k, n
	if transB {
		rowsB, colsB = n, k
	}
	if lda < max(1, colsA) {
		panic("sgemm: bad lda")
	}
	if ldb < max(1, colsB) {
		panic("sgemm: bad ldb")
	}
	if ldc < max(1, n) {
		panic("sgemm: bad ldc")
	}
	if m == 0 || n == 0 {
		return
	}
	if len(c) < (m-1)*ldc+n {
		panic("sgemm: short C")
	}
	if k == 0 || alpha == 0 {
		scale(m, n, beta, c, ldc)
		return
	}
	if len(a) < (rowsA-1)*lda+colsA {
		panic("sgemm: short A")
	}
	if len(b) < (rowsB-1)*ldb+colsB {
		panic("sgemm: short B")
	}
	// Cap each slice at its logical end, so that even a reslice past it
	// (which Go checks against cap, not len) panics instead of writing into
	// the caller's memory beyond the matrix.
	a = a[: (rowsA-1)*lda+colsA : (rowsA-1)*lda+colsA]
	b = b[: (rowsB-1)*ldb+colsB : (rowsB-1)*ldb+colsB]
	c = c[: (m-1)*ldc+n : (m-1)*ldc+n]

	t := taskPool.Get().(*task)
	*t = task{
		kern:   active,
		transA: transA, transB: transB,
		m: m, n: n, k: k,
		alpha: alpha, beta: beta,
		a: a, lda: lda,
		b: b, ldb: ldb,
		c: c, ldc: ldc,
		skinny: min(m, n) <= skinnyMax,
	}
	t.split(runtime.GOMAXPROCS(0))
	helpers := min(t.workers, t.chunks) - 1
	if helpers > 0 {
		dispatch(t, helpers)
	}
	t.run()
	t.wg.Wait()
	*t = task{} // drop the references to the caller's slices
	taskPool.Put(t)
}

// scale sets C = β·C, writing zeros without reading C when β == 0.
func scale(m, n int, beta float32, c []float32, ldc int) {
	if beta == 1 {
		return
	}
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}

// Below this many flops (2·m·n·k) a product runs on the calling goroutine
// alone: waking a helper costs microseconds, about what a 128³ product takes.
const parallelFlops = 1 << 22

// Work along the split dimension is cut into chunks of at least this many
// rows or columns. Each chunk repacks the other operand, so a chunk of w
// columns does 2·w flops per packed element of A; 512 keeps packing under a
// few percent of the time.
const minChunk = 512

// A task is one Sgemm call. C is cut along its larger dimension into chunks
// that the calling goroutine and its helpers claim one at a time, so a worker
// slowed by a noisy neighbour simply takes fewer chunks.
type task struct {
	kern           *kernel
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int

	skinny  bool // C has at most skinnyMax rows or columns: see fewRows
	splitN  bool // chunks are column ranges of C (else row ranges)
	chunk   int  // chunk width, a multiple of the kernel's nr (or mr)
	chunks  int
	workers int
	next    atomic.Int64 // next chunk to claim
	wg      sync.WaitGroup
}

var taskPool = sync.Pool{New: func() any { return new(task) }}

// split chooses the split dimension, chunk size and worker count.
func (t *task) split(procs int) {
	// Splitting the larger dimension means the operand every chunk repacks
	// is the smaller one.
	t.splitN = t.n >= t.m
	dim, align := t.m, t.kern.mr
	if t.splitN {
		dim, align = t.n, t.kern.nr
	}
	units := ceilDiv(dim, align)
	t.workers = max(1, min(procs, units))
	if t.skinny {
		// Memory-bound: worth splitting once the long operand is big
		// enough for two cores' bandwidth to matter.
		if t.k*dim < skinnyParallel {
			t.workers = 1
		}
	} else if 2*t.m*t.n*t.k < parallelFlops {
		t.workers = 1
	}
	// Up to 4 chunks per worker for load balance, as long as chunks stay
	// wide enough that repacking stays cheap; always a multiple of the
	// worker count so an even machine splits evenly.
	per := 1
	for q := 4; q > 1; q-- {
		if dim/(t.workers*q) >= minChunk {
			per = q
			break
		}
	}
	t.chunk = ceilDiv(units, t.workers*per) * align
	t.chunks = ceilDiv(dim, t.chunk)
}

// run claims and computes chunks until none are left.
func (t *task) run() {
	buf := getBuffers(t.kern)
	for {
		i := int(t.next.Add(1)) - 1
		if i >= t.chunks {
			break
		}
		lo := i * t.chunk
		switch {
		case t.skinny && t.splitN:
			t.fewRows(buf, lo, min(lo+t.chunk, t.n))
		case t.skinny:
			t.fewCols(buf, lo, min(lo+t.chunk, t.m))
		case t.splitN:
			t.block(buf, 0, t.m, lo, min(lo+t.chunk, t.n))
		default:
			t.block(buf, lo, min(lo+t.chunk, t.m), 0, t.n)
		}
	}
	// The skinny path may have pointed these at the caller's matrices;
	// a pooled buffer must not keep those alive.
	clear(buf.rows[:])
	clear(buf.accs[:])
	bufPool.Put(buf)
}

// block computes rows [i0, i1) × columns [j0, j1) of C over the whole k,
// in the GotoBLAS loop order: for each nc-column block of op(B) and each
// kc-row slice of it, pack that kc×nc block once, then stream every mc×kc
// block of op(A) against it.
func (t *task) block(buf *buffers, i0, i1, j0, j1 int) {
	kr := t.kern
	// Balanced block sizes: k = 600 with kc = 256 gives 3×200, not
	// 256+256+88, so no block is left with too little work to amortize
	// its C loads and stores.
	kc := balance(t.k, kr.kc, 1)
	mc := balance(i1-i0, kr.mc, kr.mr)
	nc := balance(j1-j0, kr.nc, kr.nr)
	for jc := j0; jc < j1; jc += nc {
		ncc := min(nc, j1-jc)
		for pc := 0; pc < t.k; pc += kc {
			kcc := min(kc, t.k-pc)
			// β applies once; later kc slices accumulate onto C.
			beta := t.beta
			if pc > 0 {
				beta = 1
			}
			packB(buf.b, t.b, t.ldb, t.transB, pc, kcc, jc, ncc, kr.nr)
			for ic := i0; ic < i1; ic += mc {
				mcc := min(mc, i1-ic)
				packA(buf.a, t.a, t.lda, t.transA, ic, mcc, pc, kcc, kr.mr)
				t.macro(buf, ic, mcc, jc, ncc, kcc, beta)
			}
		}
	}
}

// macro runs the micro-kernel over the packed mc×kc block of A and kc×nc
// block of B, updating C[ic:ic+mc, jc:jc+nc]. The outer loop walks B panels
// so that one kc×nr panel of B stays in L1 while the A panels stream by.
func (t *task) macro(buf *buffers, ic, mc, jc, nc, kc int, beta float32) {
	kr := t.kern
	mr, nr := kr.mr, kr.nr
	for jr := 0; jr < nc; jr += nr {
		nrr := min(nr, nc-jr)
		bp := buf.b[jr*kc : jr*kc+nr*kc]
		for ir := 0; ir < mc; ir += mr {
			mrr := min(mr, mc-ir)
			ap := buf.a[ir*kc : ir*kc+mr*kc]
			off := (ic+ir)*t.ldc + jc + jr
			if mrr == mr && nrr == nr {
				kr.fn(kc, ap, bp, t.c[off:], t.ldc, t.alpha, beta)
				continue
			}
			// An edge tile: the kernel always writes a full mr×nr
			// tile, which may not fit inside C, so compute it into
			// scratch and copy out the part that does.
			tile := buf.tile[:mr*nr]
			kr.fn(kc, ap, bp, tile, nr, 1, 0)
			for r := 0; r < mrr; r++ {
				crow := t.c[off+r*t.ldc : off+r*t.ldc+nrr]
				trow := tile[r*nr : r*nr+nrr]
				if beta == 0 {
					for j, v := range trow {
						crow[j] = t.alpha * v
					}
				} else {
					for j, v := range trow {
						crow[j] = t.alpha*v + beta*crow[j]
					}
				}
			}
		}
	}
}

// buffers are one worker's packing space, sized for the largest blocks of
// the kernel in use.
type buffers struct {
	a, b, tile []float32

	// The skinny path's gathered vectors and accumulators, grown on
	// demand, and slice headers into them (or into A and B), kept here so
	// that nothing allocates per call.
	vec        []float32
	rows, accs [skinnyMax][]float32
}

var bufPool sync.Pool

func getBuffers(kr *kernel) *buffers {
	buf, _ := bufPool.Get().(*buffers)
	if buf == nil {
		buf = new(buffers)
	}
	grow(&buf.a, roundUp(kr.mc, kr.mr)*kr.kc)
	grow(&buf.b, roundUp(kr.nc, kr.nr)*kr.kc)
	grow(&buf.tile, kr.mr*kr.nr)
	return buf
}

func grow(s *[]float32, n int) {
	if cap(*s) < n {
		*s = make([]float32, n)
	}
	*s = (*s)[:cap(*s)]
}

// balance splits total into the fewest blocks of at most size, of nearly
// equal length rounded up to a multiple of align.
func balance(total, size, align int) int {
	blocks := ceilDiv(total, size)
	return min(roundUp(ceilDiv(total, blocks), align), roundUp(size, align))
}

func ceilDiv(a, b int) int  { return (a + b - 1) / b }
func roundUp(a, to int) int { return ceilDiv(a, to) * to }

// The helper goroutines live for the life of the process and take tasks from
// a channel, so a call allocates neither goroutines nor closures.
var helpers struct {
	mu      sync.Mutex
	started int
	tasks   chan *task
}

// dispatch hands t to n helpers, starting helpers as needed.
func dispatch(t *task, n int) {
	helpers.mu.Lock()
	if helpers.tasks == nil {
		helpers.tasks = make(chan *task, 256)
	}
	for helpers.started < n {
		helpers.started++
		go helper(helpers.tasks)
	}
	tasks := helpers.tasks
	helpers.mu.Unlock()
	t.wg.Add(n)
	for range n {
		tasks <- t
	}
}

func helper(tasks <-chan *task) {
	for t := range tasks {
		t.run()
		t.wg.Done()
	}
}
