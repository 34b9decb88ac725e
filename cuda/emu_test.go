package cuda

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/kdnative/kdnative/kernels"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cachealloc"
	"github.com/kdnative/kdnative/runtime/half"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// The kernel emulator: on a machine without a GPU the tests that need one
// run the real kernels/*.cu, compiled by g++ against testdata/emu/prelude.h
// (which emulates the CUDA subset they use: a block's threads are fibers,
// barriers and warp shuffles are real synchronization points), behind an
// emulated driver and cuBLAS. The Backend's own Go code runs unchanged on
// top: argument marshalling, the allocator, the op wrappers. What it cannot
// show is what only hardware shows: speed, races between blocks, and the
// real libraries' behaviour; the GPU check (scripts/gpu-check.sh) is for
// that.
//
// It needs g++. KDNATIVE_REQUIRE_EMULATOR=1 (set by CI) turns a missing g++
// into a failure instead of a skip.

var (
	emuOnce sync.Once
	emuB    *Backend
	emuErr  error
)

// emulatedBackend returns the process's emulated backend, building the
// kernels on first use (cached on disk by content).
func emulatedBackend() (*Backend, error) {
	emuOnce.Do(func() { emuB, emuErr = newEmulated() })
	return emuB, emuErr
}

// emuLib is one program compiled for the CPU.
type emuLib struct {
	name   string
	find   func(name *byte) int32
	launch func(k int32, gx, gy, gz, bx, by, bz, shmem uint32, params *unsafe.Pointer, err *byte, errLen int32) int32
	nparam func(k int32) int32
}

// emuDevice is the emulated GPU: host memory behind device addresses, with
// a guard of canary bytes after every allocation, checked when it is freed
// and at every synchronization, so that a kernel writing past the end of a
// tensor is caught.
type emuDevice struct {
	libs     []*emuLib
	mem      map[uint64][]byte // address → allocation (with guard)
	size     map[uint64]uint64
	used     uint64
	total    uint64
	smemAttr map[uintptr]int32
	lastErr  string
	strings  map[string]*byte
	hostMem  map[unsafe.Pointer][]byte // pinned host allocations
	// Stream capture, as CUDA graphs do it: while capturing, the stream's
	// calls are recorded (with their arguments' values), not run; a
	// graph's launch runs them. A call that cannot be captured is an
	// error, as the driver makes it.
	capturing bool
	captured  []func() cuResult
	graphs    map[uintptr][]func() cuResult
	nextGraph uintptr
}

// errCaptureUnsupported is CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED.
const errCaptureUnsupported cuResult = 900

// queue runs a stream call, or records it while capturing.
func (d *emuDevice) queue(run func() cuResult) cuResult {
	if d.capturing {
		d.captured = append(d.captured, run)
		return cudaSuccess
	}
	return run()
}

// notCapturing refuses a call that cannot be captured.
func (d *emuDevice) notCapturing(call string) cuResult {
	if d.capturing {
		d.lastErr = call + " while the stream is being captured"
		return errCaptureUnsupported
	}
	return cudaSuccess
}

// pinned reports whether n bytes at p lie inside one pinned host
// allocation.
func (d *emuDevice) pinned(p unsafe.Pointer, n uint64) bool {
	for base, buf := range d.hostMem {
		off := uintptr(p) - uintptr(base)
		if uintptr(p) >= uintptr(base) && uint64(off)+n <= uint64(len(buf)) {
			return true
		}
	}
	return false
}

const emuGuard = 256

// emuFunc packs a program index and a kernel index into a CUfunction.
func emuFunc(lib, k int) uintptr { return uintptr(lib)<<32 | uintptr(k) + 1 }

func newEmulated() (*Backend, error) { return newEmulatedWith(kernels.Programs()) }

// newEmulatedWith is an emulated backend running the programs progs (the
// tests of the emulator itself give it test-only kernels).
func newEmulatedWith(progs []kernels.Program) (*Backend, error) {
	libs, err := buildEmulator(progs)
	if err != nil {
		return nil, err
	}
	index := map[string]kernels.Program{}
	for _, p := range progs {
		for _, k := range p.Kernels {
			index[k] = p
		}
	}
	d := &emuDevice{libs: libs, mem: map[uint64][]byte{}, size: map[uint64]uint64{}, total: 4 << 30,
		smemAttr: map[uintptr]int32{}, strings: map[string]*byte{}, hostMem: map[unsafe.Pointer][]byte{},
		graphs: map[uintptr][]func() cuResult{}}
	dev := DeviceInfo{Name: "kdnative kernel emulator (g++, CPU)", TotalMem: d.total, Major: 9, Minor: 0}
	api := &ctxAPI{driverAPI: &driverAPI{}}
	d.bindDriver(api)
	b := &Backend{
		api: api, blas: d.cublas(), nvrtc: &NVRTC{}, driverVersion: 13000, dev: dev, sms: 4,
		alloc:   allocator{opt: cachealloc.Options{Exclusive: true}, poison: true},
		index:   index,
		modules: map[string]uintptr{},
		funcs:   map[string]uintptr{},
	}
	for i, l := range libs {
		b.modules[l.name] = uintptr(i)
	}
	// As open1 does: a stream of its own, the counters around the calls.
	if err := api.check("cuStreamCreate", api.cuStreamCreate(&b.stream, 0)); err != nil {
		return nil, err
	}
	b.instrument()
	b.graphWrap()
	return b, nil
}

func (d *emuDevice) cstr(s string) *byte {
	if p, ok := d.strings[s]; ok {
		return p
	}
	p := cStr(s)
	d.strings[s] = p
	return p
}

func (d *emuDevice) bindDriver(a *ctxAPI) {
	ok := func() cuResult { return cudaSuccess }
	a.cuGetErrorName = func(r cuResult, s **byte) cuResult {
		name := resultNames[r]
		if r == 719 {
			name = "CUDA_ERROR_LAUNCH_FAILED"
		}
		if name == "" {
			name = fmt.Sprintf("CUresult %d", r)
		}
		*s = d.cstr(name)
		return cudaSuccess
	}
	a.cuGetErrorString = func(r cuResult, s **byte) cuResult {
		*s = d.cstr("emulator: " + d.lastErr)
		return cudaSuccess
	}
	a.cuCtxSetCurrent = func(uintptr) cuResult { return ok() }
	a.cuCtxSynchronize = func() cuResult {
		if r := d.notCapturing("cuCtxSynchronize"); r != cudaSuccess {
			return r
		}
		return d.checkGuards()
	}
	a.cuMemAlloc = func(p *uint64, n uint64) cuResult {
		if r := d.notCapturing("cuMemAlloc"); r != cudaSuccess {
			return r
		}
		if d.used+n > d.total {
			d.lastErr = "out of memory"
			return errOutOfMemory
		}
		buf := make([]byte, n+emuGuard)
		for i := range emuGuard {
			buf[n+uint64(i)] = 0xa5
		}
		addr := uint64(uintptr(unsafe.Pointer(&buf[0])))
		d.mem[addr], d.size[addr] = buf, n
		d.used += n
		*p = addr
		return cudaSuccess
	}
	a.cuMemFree = func(p uint64) cuResult {
		if r := d.notCapturing("cuMemFree"); r != cudaSuccess {
			return r
		}
		if r := d.checkGuard(p); r != cudaSuccess {
			return r
		}
		d.used -= d.size[p]
		delete(d.mem, p)
		delete(d.size, p)
		return cudaSuccess
	}
	a.cuMemGetInfo = func(free, total *uint64) cuResult {
		*free, *total = d.total-d.used, d.total
		return cudaSuccess
	}
	a.cuMemcpyHtoD = func(dst uint64, src unsafe.Pointer, n uint64) cuResult {
		if r := d.notCapturing("cuMemcpyHtoD"); r != cudaSuccess {
			return r
		}
		copy(d.bytes(dst, n), unsafe.Slice((*byte)(src), n))
		return cudaSuccess
	}
	a.cuMemcpyDtoH = func(dst unsafe.Pointer, src uint64, n uint64) cuResult {
		if r := d.notCapturing("cuMemcpyDtoH"); r != cudaSuccess {
			return r
		}
		copy(unsafe.Slice((*byte)(dst), n), d.bytes(src, n))
		return d.checkGuards()
	}
	a.cuMemcpyDtoDAsync = func(dst, src uint64, n uint64, _ uintptr) cuResult {
		return d.queue(func() cuResult {
			copy(d.bytes(dst, n), d.bytes(src, n))
			return cudaSuccess
		})
	}
	a.cuMemsetD8Async = func(dst uint64, v uint8, n uint64, _ uintptr) cuResult {
		return d.queue(func() cuResult {
			b := d.bytes(dst, n)
			for i := range b {
				b[i] = v
			}
			return cudaSuccess
		})
	}
	a.cuModuleGetFunction = func(fn *uintptr, mod uintptr, name *byte) cuResult {
		k := d.libs[mod].find(name)
		if k < 0 {
			d.lastErr = "no kernel " + cString(name)
			return 500 // CUDA_ERROR_NOT_FOUND
		}
		*fn = emuFunc(int(mod), int(k))
		return cudaSuccess
	}
	a.cuFuncSetAttribute = func(fn uintptr, attr int32, v int32) cuResult {
		if attr != cuFuncAttributeMaxDynamicSharedMemorySize || v > 227<<10 {
			d.lastErr = fmt.Sprintf("function attribute %d = %d", attr, v)
			return 1
		}
		d.smemAttr[fn] = v
		return cudaSuccess
	}
	a.cuLaunchKernel = func(fn uintptr, gx, gy, gz, bx, by, bz, shmem uint32, _ uintptr, params *unsafe.Pointer, _ *unsafe.Pointer) cuResult {
		lib, k := d.libs[fn>>32], int32(fn&0xffffffff)-1
		limit := max(int32(48<<10), d.smemAttr[fn])
		if int32(shmem) > limit {
			d.lastErr = fmt.Sprintf("%d bytes of dynamic shared memory, above the %d allowed", shmem, limit)
			return 1
		}
		// The launch's parameter array must hold exactly the kernel's
		// parameters: launch ends it with a nil entry.
		n := lib.nparam(k)
		ps := unsafe.Slice(params, n+1)
		for i := range n {
			if ps[i] == nil {
				d.lastErr = fmt.Sprintf("kernel takes %d parameters, launch gave %d", n, i)
				return 1
			}
		}
		if ps[n] != nil {
			d.lastErr = fmt.Sprintf("kernel takes %d parameters, launch gave more", n)
			return 1
		}
		// The parameters' values are taken now (launch's 8-byte slots),
		// as the driver takes them.
		slots := make([]uint64, n)
		for i := range n {
			slots[i] = *(*uint64)(ps[i])
		}
		return d.queue(func() cuResult {
			pv := make([]unsafe.Pointer, n+1)
			for i := range slots {
				pv[i] = unsafe.Pointer(&slots[i])
			}
			var msg [512]byte
			r := lib.launch(k, gx, gy, gz, bx, by, bz, shmem, &pv[0], &msg[0], int32(len(msg)))
			if r != 0 {
				d.lastErr = cString(&msg[0])
				return cuResult(r)
			}
			return d.checkGuards()
		})
	}
	// The emulator runs every op when it is queued, so a stream is only a
	// handle, and an asynchronous copy is made at once; pinned host memory
	// is Go memory kept alive in hostMem until freed.
	a.cuStreamCreate = func(s *uintptr, _ uint32) cuResult { *s = 0x5157; return cudaSuccess }
	a.cuStreamSynchronize = func(uintptr) cuResult {
		if r := d.notCapturing("cuStreamSynchronize"); r != cudaSuccess {
			return r
		}
		return d.checkGuards()
	}
	a.cuStreamBeginCapture = func(_ uintptr, _ int32) cuResult {
		if r := d.notCapturing("cuStreamBeginCapture"); r != cudaSuccess {
			return r
		}
		d.capturing, d.captured = true, nil
		return cudaSuccess
	}
	a.cuStreamEndCapture = func(_ uintptr, g *uintptr) cuResult {
		if !d.capturing {
			d.lastErr = "cuStreamEndCapture without a capture"
			return 1
		}
		d.capturing = false
		d.nextGraph++
		d.graphs[d.nextGraph] = d.captured
		*g, d.captured = d.nextGraph, nil
		return cudaSuccess
	}
	a.cuGraphInstantiateWithFlags = func(exec *uintptr, g uintptr, _ uint64) cuResult {
		ops, ok := d.graphs[g]
		if !ok {
			return 1
		}
		d.nextGraph++
		d.graphs[d.nextGraph] = ops
		*exec = d.nextGraph
		return cudaSuccess
	}
	a.cuGraphLaunch = func(exec uintptr, _ uintptr) cuResult {
		ops, ok := d.graphs[exec]
		if !ok || d.capturing {
			d.lastErr = "cuGraphLaunch of no graph, or while capturing"
			return 1
		}
		for _, op := range ops {
			if r := op(); r != cudaSuccess {
				return r
			}
		}
		return d.checkGuards()
	}
	a.cuGraphExecDestroy = func(exec uintptr) cuResult { delete(d.graphs, exec); return cudaSuccess }
	a.cuGraphDestroy = func(g uintptr) cuResult { delete(d.graphs, g); return cudaSuccess }
	a.cuMemHostAlloc = func(p *unsafe.Pointer, n uint64, _ uint32) cuResult {
		if r := d.notCapturing("cuMemHostAlloc"); r != cudaSuccess {
			return r
		}
		buf := make([]byte, max(n, 1))
		*p = unsafe.Pointer(&buf[0])
		d.hostMem[*p] = buf
		return cudaSuccess
	}
	a.cuMemFreeHost = func(p unsafe.Pointer) cuResult {
		if _, ok := d.hostMem[p]; !ok {
			d.lastErr = "cuMemFreeHost of memory cuMemHostAlloc did not give"
			return 1
		}
		delete(d.hostMem, p)
		return cudaSuccess
	}
	a.cuMemcpyHtoDAsync = func(dst uint64, src unsafe.Pointer, n uint64, _ uintptr) cuResult {
		if !d.pinned(src, n) {
			d.lastErr = "an asynchronous upload from memory that is not pinned"
			return 1
		}
		// The bytes are read when the copy runs (a graph's launch).
		return d.queue(func() cuResult {
			copy(d.bytes(dst, n), unsafe.Slice((*byte)(src), n))
			return cudaSuccess
		})
	}
	a.cuEventCreate = func(ev *uintptr, _ uint32) cuResult { *ev = 1; return cudaSuccess }
	a.cuEventRecord = func(uintptr, uintptr) cuResult { return d.notCapturing("cuEventRecord") }
	a.cuEventSynchronize = func(uintptr) cuResult { return d.notCapturing("cuEventSynchronize") }
	a.cuEventElapsedTime = func(ms *float32, _, _ uintptr) cuResult { *ms = 1; return cudaSuccess }
	a.cuEventDestroy = func(uintptr) cuResult { return cudaSuccess }
}

// bytes is the host view of n device bytes at addr, which must lie inside
// one allocation (a Slice view points into the middle of one).
func (d *emuDevice) bytes(addr, n uint64) []byte {
	r := d.region(addr)
	if n > uint64(len(r)) {
		panic(fmt.Sprintf("emulator: %d bytes at %#x run past the end of their allocation", n, addr))
	}
	return r[:n]
}

// region is the host view of the device memory from addr to the end of its
// allocation.
func (d *emuDevice) region(addr uint64) []byte {
	for base, buf := range d.mem {
		if addr >= base && addr < base+d.size[base] {
			return buf[addr-base : d.size[base]]
		}
	}
	panic(fmt.Sprintf("emulator: %#x is not device memory", addr))
}

// checkGuard reports a write past the end of an allocation, once: the guard
// is restored so that later ops are judged on their own.
func (d *emuDevice) checkGuard(base uint64) cuResult {
	buf, n := d.mem[base], d.size[base]
	for i := n; i < n+emuGuard; i++ {
		if buf[i] != 0xa5 {
			d.lastErr = fmt.Sprintf("a kernel wrote past the end of the %d-byte allocation at %#x (byte %d after it)", n, base, i-n)
			for j := n; j < n+emuGuard; j++ {
				buf[j] = 0xa5
			}
			return 719
		}
	}
	return cudaSuccess
}

func (d *emuDevice) checkGuards() cuResult {
	for base := range d.mem {
		if r := d.checkGuard(base); r != cudaSuccess {
			return r
		}
	}
	return cudaSuccess
}

// cublas emulates the two GEMMs with cuBLAS's column-major semantics, on
// gonum's BLAS (not the CPU backend's own GEMM, so the mapping is checked
// against an independent implementation). A column-major X with leading
// dimension ld is the row-major Xᵀ with stride ld, and C = op(A)·op(B)
// column-major is Cᵀ = op(B)ᵀ·op(A)ᵀ row-major.
func (d *emuDevice) cublas() *cublas {
	c := &cublas{version: "emulated"}
	c.cublasGetStatusStr = func(s cublasStatus) *byte {
		if s == 15 {
			return d.cstr("CUBLAS_STATUS_NOT_SUPPORTED")
		}
		return d.cstr("CUBLAS_STATUS_INVALID_VALUE")
	}
	// The math mode: under CUBLAS_TF32_TENSOR_OP_MATH an F32 product rounds
	// its inputs to TF32 (10 mantissa bits, to nearest, ties away: PTX's
	// cvt.rna.tf32.f32) and accumulates in FP32.
	mode := int32(cublasDefaultMath)
	c.cublasSetMathMode = func(_ uintptr, m int32) cublasStatus {
		if m != cublasDefaultMath && m != cublasPedanticMath && m != cublasTF32Math {
			return 7
		}
		mode = m
		return 0
	}
	tf32 := func(g blas32.General) blas32.General {
		r := blas32.General{Rows: g.Rows, Cols: g.Cols, Stride: g.Stride, Data: make([]float32, len(g.Data))}
		for i, v := range g.Data {
			u := math.Float32bits(v)
			if u&0x7f800000 != 0x7f800000 { // finite: add half of the dropped 13 bits, then drop them
				u = (u + 0x1000) &^ 0x1fff
			}
			r.Data[i] = math.Float32frombits(u)
		}
		return r
	}
	// matrix is the row-major view of a column-major operand: rows × cols of
	// the transpose, converted to float32 when it is BF16.
	matrix := func(ptr uint64, t int32, rows, cols, ld int) (blas32.General, func()) {
		n := (rows-1)*ld + cols
		buf := d.region(ptr)
		g := blas32.General{Rows: rows, Cols: cols, Stride: ld}
		if t == cudaR16BF {
			g.Data = make([]float32, n)
			for i := range g.Data {
				g.Data[i] = half.BF16ToF32(binary.LittleEndian.Uint16(buf[2*i:]))
			}
			return g, func() {
				for i, v := range g.Data {
					binary.LittleEndian.PutUint16(buf[2*i:], half.F32ToBF16(v))
				}
			}
		}
		g.Data = unsafe.Slice((*float32)(unsafe.Pointer(&buf[0])), len(buf)/4)[:n]
		return g, func() {}
	}
	trans := func(op int32) blas.Transpose {
		if op == cublasOpT {
			return blas.Trans
		}
		return blas.NoTrans
	}
	gemm := func(transa, transb int32, m, n, k int32, alpha unsafe.Pointer, a uint64, at int32, lda int32,
		b uint64, bt int32, ldb int32, beta unsafe.Pointer, cc uint64, ct int32, ldc int32) cublasStatus {
		if (transa == cublasOpN && lda < max(1, m)) || (transa == cublasOpT && lda < max(1, k)) ||
			(transb == cublasOpN && ldb < max(1, k)) || (transb == cublasOpT && ldb < max(1, n)) || ldc < max(1, m) {
			return 7 // CUBLAS_STATUS_INVALID_VALUE
		}
		// cuBLAS's FP32-compute combinations: A and B of one type, C of
		// theirs or F32.
		if at != bt || (ct != at && ct != cudaR32F) {
			return 15 // CUBLAS_STATUS_NOT_SUPPORTED
		}
		al, be := *(*float32)(alpha), *(*float32)(beta)
		// op(A) is m×k: A column-major is m×k (N) or k×m (T); its row-major
		// view swaps those. Likewise op(B) is k×n.
		ar, ac := int(k), int(m)
		if transa == cublasOpT {
			ar, ac = ac, ar
		}
		br, bc := int(n), int(k)
		if transb == cublasOpT {
			br, bc = bc, br
		}
		A, _ := matrix(a, at, ar, ac, int(lda))
		B, _ := matrix(b, bt, br, bc, int(ldb))
		if mode == cublasTF32Math && at == cudaR32F {
			A, B = tf32(A), tf32(B)
		}
		C, store := matrix(cc, ct, int(n), int(m), int(ldc))
		if be == 0 {
			for i := range C.Rows {
				clear(C.Data[i*C.Stride : i*C.Stride+C.Cols])
			}
		}
		blas32.Gemm(trans(transb), trans(transa), al, B, A, be, C)
		store()
		return 0
	}
	c.cublasGemmEx = func(_ uintptr, transa, transb int32, m, n, k int32, alpha unsafe.Pointer, a uint64, at int32, lda int32,
		b uint64, bt int32, ldb int32, beta unsafe.Pointer, cc uint64, ct int32, ldc int32, compute int32, algo int32) cublasStatus {
		if compute != cublasCompute32F {
			return 7
		}
		al, be := *(*float32)(alpha), *(*float32)(beta) // taken now, as cuBLAS takes host scalars
		return cublasStatus(d.queue(func() cuResult {
			return cuResult(gemm(transa, transb, m, n, k, unsafe.Pointer(&al), a, at, lda, b, bt, ldb, unsafe.Pointer(&be), cc, ct, ldc))
		}))
	}
	c.cublasGemmStridedBatchedEx = func(_ uintptr, transa, transb int32, m, n, k int32, alpha unsafe.Pointer,
		a uint64, at int32, lda int32, sa int64, b uint64, bt int32, ldb int32, sb int64,
		beta unsafe.Pointer, cc uint64, ct int32, ldc int32, sc int64, count int32, compute int32, algo int32) cublasStatus {
		size := func(t int32) int64 {
			if t == cudaR16BF {
				return 2
			}
			return 4
		}
		al, be := *(*float32)(alpha), *(*float32)(beta)
		return cublasStatus(d.queue(func() cuResult {
			for i := range int64(count) {
				if s := gemm(transa, transb, m, n, k, unsafe.Pointer(&al), a+uint64(i*sa*size(at)), at, lda, b+uint64(i*sb*size(bt)), bt, ldb,
					unsafe.Pointer(&be), cc+uint64(i*sc*size(ct)), ct, ldc); s != 0 {
					return cuResult(s)
				}
			}
			return 0
		}))
	}
	return c
}

var (
	emuExportRe = regexp.MustCompile(`(?m)^\s*KD_EXPORT(?:_BOUNDED)?\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,`)
	emuSmemRe   = regexp.MustCompile(`extern\s+__shared__\s+([A-Za-z_][A-Za-z0-9_]*)\s+([A-Za-z_][A-Za-z0-9_]*)\s*\[\s*\]\s*;`)
)

// emuSource is one program as a C++ translation unit for g++: the prelude,
// the program with its dynamic shared memory rewritten, and a table of its
// kernels.
func emuSource(p kernels.Program, prelude string) string {
	var sb strings.Builder
	sb.WriteString(prelude)
	sb.WriteString("\n#line 1 \"common.cuh\"\n")
	sb.WriteString(emuSmemRe.ReplaceAllString(p.Source, "KD_EMU_DYN_SMEM($1, $2);"))
	exported := map[string]bool{}
	for _, m := range emuExportRe.FindAllStringSubmatch(p.Source[strings.Index(p.Source, "#line 1"):], -1) {
		exported[m[1]+"_f32"], exported[m[1]+"_bf16"] = true, true
	}
	ref := func(k string) string {
		if exported[k] {
			return "&kd_" + k + "::" + k
		}
		return "&::" + k
	}
	sb.WriteString("\n#define KD_EMU_API extern \"C\" __attribute__((visibility(\"default\")))\n")
	sb.WriteString("static const char* kd_emu_names[] = {")
	for _, k := range p.Kernels {
		fmt.Fprintf(&sb, "%q, ", k)
	}
	sb.WriteString("};\n")
	fmt.Fprintf(&sb, "KD_EMU_API int kd_emu_find(const char* n) { for (int i = 0; i < %d; i++) if (!strcmp(n, kd_emu_names[i])) return i; return -1; }\n", len(p.Kernels))
	sb.WriteString("KD_EMU_API int kd_emu_nparams(int k) { switch (k) {\n")
	for i, k := range p.Kernels {
		fmt.Fprintf(&sb, "case %d: return kdemu::nparams(%s);\n", i, ref(k))
	}
	sb.WriteString("} return -1; }\n")
	sb.WriteString("KD_EMU_API int kd_emu_launch(int k, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shmem, void** params, char* err, int errLen) { switch (k) {\n")
	for i, k := range p.Kernels {
		fmt.Fprintf(&sb, "case %d: return kdemu::run(%s, gx, gy, gz, bx, by, bz, shmem, params, err, errLen);\n", i, ref(k))
	}
	sb.WriteString("} snprintf(err, errLen, \"no kernel %d\", k); return 500; }\n")
	return sb.String()
}

// buildEmulator compiles each program into a shared library (cached under
// the user cache directory by the hash of its source and the compiler's
// version) and binds it.
func buildEmulator(progs []kernels.Program) ([]*emuLib, error) {
	gxx, err := exec.LookPath("g++")
	if err != nil {
		return nil, fmt.Errorf("g++ not found, so the kernels cannot be emulated on the CPU: %v", err)
	}
	ver, err := exec.Command(gxx, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("g++ --version: %v", err)
	}
	prelude, err := os.ReadFile(filepath.Join("testdata", "emu", "prelude.h"))
	if err != nil {
		return nil, err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "kdnative", "emu")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	libs := make([]*emuLib, len(progs))
	errs := make([]error, len(progs))
	var wg sync.WaitGroup
	for i, p := range progs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := emuSource(p, string(prelude))
			h := sha256.Sum256(append([]byte(src), ver...))
			so := filepath.Join(dir, strings.TrimSuffix(p.Name, ".cu")+"-"+hex.EncodeToString(h[:8])+".so")
			if _, err := os.Stat(so); err != nil {
				cpp := so + ".cpp"
				if err := os.WriteFile(cpp, []byte(src), 0o644); err != nil {
					errs[i] = err
					return
				}
				tmp := so + fmt.Sprintf(".tmp%d", os.Getpid())
				cmd := exec.Command(gxx, "-std=c++17", "-O2", "-g0", "-fPIC", "-shared", "-fvisibility=hidden", "-o", tmp, cpp)
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Run(); err != nil {
					errs[i] = fmt.Errorf("g++ %s: %v\n%s", p.Name, err, out.String())
					return
				}
				if err := os.Rename(tmp, so); err != nil {
					errs[i] = err
					return
				}
			}
			h2, err := dlopen(so)
			if err != nil {
				errs[i] = fmt.Errorf("loading %s: %v", so, err)
				return
			}
			lib := &Library{Lib: Lib{Base: p.Name}, Soname: so, Path: so, handle: h2}
			l := &emuLib{name: p.Name}
			if err := lib.BindAll([]Binding{{&l.find, "kd_emu_find"}, {&l.launch, "kd_emu_launch"}, {&l.nparam, "kd_emu_nparams"}}); err != nil {
				errs[i] = err
				return
			}
			libs[i] = l
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return libs, nil
}

// TestEmulatorCatchesBugs: the emulator is only worth its tests if it fails
// kernels that are wrong. A launch with too few arguments, a write past the
// end of a tensor must each be an error from Sync, not a pass.
func TestEmulatorCatchesBugs(t *testing.T) {
	b, err := emulatedBackend()
	if err != nil {
		if os.Getenv("KDNATIVE_REQUIRE_EMULATOR") == "1" {
			t.Fatalf("the kernel emulator is required here: %v", err)
		}
		t.Skipf("no kernel emulator: %v", err)
	}
	x, err := b.Alloc("x", kdrt.F32, 128) // 512 bytes: one whole size class
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free(x)
	// ew_scale_f32(T* x, i64 n, float s) given only two arguments.
	b.launch("test", "ew_scale_f32", d1(1), d1(32), 0, b.dptr(x), int64(128))
	if err := b.Sync(); err == nil || !strings.Contains(err.Error(), "parameters") {
		t.Errorf("a launch with a missing argument: Sync gave %v", err)
	}
	// ew_scale over 129 elements of a 128-element tensor writes one past it.
	b.launch("test", "ew_scale_f32", d1(1), d1(160), 0, b.dptr(x), int64(129), float32(2))
	if err := b.Sync(); err == nil || !strings.Contains(err.Error(), "past the end") {
		t.Errorf("a kernel writing past the end of a tensor: Sync gave %v", err)
	}
}
