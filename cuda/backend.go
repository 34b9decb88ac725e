package cuda

import (
	"fmt"
	goruntime "runtime"
	"sync"
	"unsafe"

	"github.com/kdnative/kdnative/kernels"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/half"
)

// Backend is the CUDA backend: one GPU (device 0 of those CUDA_VISIBLE_DEVICES
// shows), its primary context, a stream of its own (which cuBLAS shares), a
// caching allocator, pinned staging memory for uploads, cuBLAS for the
// matrix products and NVRTC-compiled kernels for everything else.
//
// Every method may be called from any goroutine: each takes the backend's
// lock, pins its goroutine to an OS thread and makes the context current on
// it for the duration (a CUDA context is current per thread, and goroutines
// move between threads). Work is queued in order on the one stream; device
// errors surface at the next Sync.
type Backend struct {
	mu            sync.Mutex
	api           *ctxAPI
	blas          *cublas
	nvrtc         *NVRTC
	driverVersion int
	dev           DeviceInfo
	devOrdinal    int32
	ctx           uintptr
	// stream is where every op is queued: kdnative's own, which cuBLAS
	// shares. It is a blocking stream (made without
	// CU_STREAM_NON_BLOCKING), so a download, a synchronous copy on the
	// legacy default stream, still waits for its work.
	stream uintptr
	sms    int

	alloc   allocator
	index   map[string]kernels.Program
	modules map[string]uintptr
	funcs   map[string]uintptr

	err error // the first error since the last Sync

	counts LaunchCounts // what was queued since ResetLaunches

	ctr   kdrt.Counters // device traffic since ResetCounters (counters.go)
	stage stager        // pinned staging arenas for uploads (staging.go)
	graph graphState    // CUDA graphs of steady-state steps (graphs.go)

	precision kdrt.Precision // cuBLAS's math mode follows it (SetPrecision)
}

var (
	openOnce    sync.Once
	openBackend *Backend
	openErr     error
)

// Open returns the process's CUDA backend, opening it on first use: it loads
// the driver, cuBLAS and NVRTC, retains device 0's primary context and
// compiles (or loads from the disk cache) every kernel, so that a missing
// library, a driver too old or a kernel that does not compile is an error
// here rather than in the middle of a run.
func Open() (*Backend, error) {
	openOnce.Do(func() { openBackend, openErr = open1() })
	return openBackend, openErr
}

func open1() (_ *Backend, err error) {
	version, devs, err := Probe()
	if err != nil {
		return nil, err
	}
	api, err := bindContextAPI(probeDriver)
	if err != nil {
		return nil, err
	}
	b := &Backend{
		api: api, driverVersion: version, dev: devs[0],
		index:   kernelIndex(),
		modules: map[string]uintptr{},
		funcs:   map[string]uintptr{},
	}
	var dev int32
	if err := api.check("cuDeviceGet", api.cuDeviceGet(&dev, 0)); err != nil {
		return nil, err
	}
	b.devOrdinal = dev
	if err := api.check("cuDevicePrimaryCtxRetain", api.cuDevicePrimaryCtxRetain(&b.ctx, dev)); err != nil {
		return nil, fmt.Errorf("%s: %w", b.dev, err)
	}
	defer func() {
		if err != nil {
			api.cuDevicePrimaryCtxRelease(dev)
		}
	}()
	var sms int32
	if err := api.check("cuDeviceGetAttribute(MULTIPROCESSOR_COUNT)", api.cuDeviceGetAttribute(&sms, attrMultiprocessorCount, dev)); err != nil {
		return nil, err
	}
	b.sms = int(sms)
	if b.nvrtc, err = LoadNVRTC(version); err != nil {
		return nil, fmt.Errorf("kernels cannot be compiled: %w", err)
	}
	release := b.enter()
	defer release()
	if b.blas, err = newCublas(version); err != nil {
		return nil, err
	}
	if err := api.check("cuStreamCreate", api.cuStreamCreate(&b.stream, 0)); err != nil {
		return nil, err
	}
	if err := b.blas.check("cublasSetStream_v2", b.blas.cublasSetStream(b.blas.handle, b.stream)); err != nil {
		return nil, err
	}
	b.instrument()
	b.graphWrap()
	for _, p := range kernels.Programs() {
		for _, k := range p.Kernels {
			if _, err := b.function(k); err != nil {
				return nil, fmt.Errorf("%s: %w", b.dev, err)
			}
		}
	}
	return b, nil
}

// enter locks the backend and makes its context current on this goroutine's
// thread; call the returned function to leave.
func (b *Backend) enter() func() {
	b.mu.Lock()
	goruntime.LockOSThread()
	if err := b.api.check("cuCtxSetCurrent", b.api.cuCtxSetCurrent(b.ctx)); err != nil {
		b.recordLocked("context", err)
	}
	return func() {
		goruntime.UnlockOSThread()
		b.mu.Unlock()
	}
}

// Name implements runtime.Backend.
func (b *Backend) Name() string { return "cuda" }

// Describe implements runtime.Backend.
func (b *Backend) Describe() string {
	return fmt.Sprintf("cuda: %s, %d SMs, driver %s, cuBLAS %s, NVRTC %s", b.dev, b.sms, VersionString(b.driverVersion), b.blas.version, b.nvrtc.Version())
}

// Device is the GPU the backend runs on.
func (b *Backend) Device() DeviceInfo { return b.dev }

// fail records an error for Sync, naming the op.
func (b *Backend) fail(op string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.recordLocked(op, err)
}

func (b *Backend) recordLocked(op string, err error) {
	if b.err == nil {
		b.err = fmt.Errorf("cuda %s: %w", op, err)
	}
}

// mem returns t's device storage, panicking when t is not a CUDA tensor.
func (b *Backend) mem(t *kdrt.Tensor) *devMem {
	m, ok := t.Storage.(*devMem)
	if !ok || m == nil {
		panic(fmt.Sprintf("cuda: %v is not a CUDA tensor (storage %T)", t, t.Storage))
	}
	return m
}

// dptr is the device address of t's first element, 0 for a nil t.
func (b *Backend) dptr(t *kdrt.Tensor) uint64 {
	if t == nil {
		return 0
	}
	return b.mem(t).ptr
}

// scratch is a temporary of n elements, not zero-filled: the op writes
// every element before reading it. On failure it records the error and
// returns false. Free it after its last use.
func (b *Backend) scratch(op string, dt kdrt.DType, n int) (*kdrt.Tensor, bool) {
	t, err := b.AllocUninit(op+".scratch", dt, n)
	if err != nil {
		b.fail(op, err)
		return nil, false
	}
	return t, true
}

// tempInt32 is a scratch I32 tensor holding vals.
func (b *Backend) tempInt32(op string, vals []int32) (*kdrt.Tensor, bool) {
	t, ok := b.scratch(op, kdrt.I32, len(vals))
	if !ok {
		return nil, false
	}
	if err := b.UploadInt32(t, vals); err != nil {
		b.fail(op, err)
		b.Free(t)
		return nil, false
	}
	return t, true
}

// copyIn copies host bytes to a tensor's device memory, queued on the
// stream through pinned staging memory (staging.go): src may be reused as
// soon as it returns, and the host does not wait for the device.
func (b *Backend) copyIn(what string, dst *kdrt.Tensor, src unsafe.Pointer, n int) error {
	if n == 0 {
		return nil
	}
	ptr := b.dptr(dst)
	defer b.enter()()
	if err := b.stagedCopy(ptr, src, uint64(n)); err != nil {
		return fmt.Errorf("cuda: %s %v: %w", what, dst, err)
	}
	return nil
}

// readBytes copies t's raw bytes to the host; it waits for queued work. It
// returns the first recorded error of earlier ops, if any, since the bytes
// would then be meaningless.
func (b *Backend) readBytes(op string, t *kdrt.Tensor, dst []byte) error {
	if len(dst) != t.Bytes() {
		return fmt.Errorf("cuda %s: reading %v into %d bytes", op, t, len(dst))
	}
	if len(dst) == 0 {
		return nil
	}
	ptr := b.dptr(t)
	defer b.enter()()
	if err := b.api.check("cuMemcpyDtoH_v2", b.api.cuMemcpyDtoH(unsafe.Pointer(&dst[0]), ptr, uint64(len(dst)))); err != nil {
		b.recordLocked(op, err)
	}
	return b.err
}

// Upload implements runtime.Backend.
func (b *Backend) Upload(dst *kdrt.Tensor, src []float32) error {
	if len(src) != dst.Numel() {
		return fmt.Errorf("cuda: upload to %v: %d values for %d elements", dst, len(src), dst.Numel())
	}
	switch dst.DType {
	case kdrt.F32:
		if len(src) == 0 {
			return nil
		}
		err := b.copyIn("upload to", dst, unsafe.Pointer(&src[0]), 4*len(src))
		goruntime.KeepAlive(src)
		return err
	case kdrt.BF16:
		buf := make([]byte, 2*len(src))
		half.EncodeBF16(buf, src)
		if len(buf) == 0 {
			return nil
		}
		return b.copyIn("upload to", dst, unsafe.Pointer(&buf[0]), len(buf))
	}
	return fmt.Errorf("cuda: upload of float values to %v", dst)
}

// UploadInt32 implements runtime.Backend.
func (b *Backend) UploadInt32(dst *kdrt.Tensor, src []int32) error {
	if dst.DType != kdrt.I32 || len(src) != dst.Numel() {
		return fmt.Errorf("cuda: upload of %d int32 values to %v", len(src), dst)
	}
	if len(src) == 0 {
		return nil
	}
	err := b.copyIn("upload to", dst, unsafe.Pointer(&src[0]), 4*len(src))
	goruntime.KeepAlive(src)
	return err
}

// Download implements runtime.Backend.
func (b *Backend) Download(src *kdrt.Tensor, dst []float32) error {
	if len(dst) != src.Numel() {
		return fmt.Errorf("cuda: download of %v into %d values", src, len(dst))
	}
	switch src.DType {
	case kdrt.F32:
		if len(dst) == 0 {
			return nil
		}
		return b.readBytes("download", src, unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)))
	case kdrt.BF16:
		buf := make([]byte, 2*len(dst))
		if err := b.readBytes("download", src, buf); err != nil {
			return err
		}
		half.DecodeBF16(dst, buf)
		return nil
	}
	return fmt.Errorf("cuda: download of %v as float values", src)
}

// DownloadInt32 implements runtime.Backend.
func (b *Backend) DownloadInt32(src *kdrt.Tensor, dst []int32) error {
	if src.DType != kdrt.I32 || len(dst) != src.Numel() {
		return fmt.Errorf("cuda: download of %v into %d int32 values", src, len(dst))
	}
	if len(dst) == 0 {
		return nil
	}
	return b.readBytes("download", src, unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)))
}

// Slice implements runtime.Backend.
func (b *Backend) Slice(t *kdrt.Tensor, start, end int) *kdrt.Tensor {
	C, rows := t.Cols(), t.Rows()
	if len(t.Shape) == 1 { // a vector [N] is N rows of one element
		C, rows = 1, t.Shape[0]
	}
	if start < 0 || end > rows || start > end {
		panic(fmt.Sprintf("cuda: slice rows [%d, %d) of %v", start, end, t))
	}
	m := b.mem(t)
	shape := []int{end - start, C}
	if len(t.Shape) == 1 {
		shape = []int{end - start}
	}
	v := &devMem{b: b, ptr: m.ptr + uint64(start*C*t.DType.Size())}
	return &kdrt.Tensor{Shape: shape, DType: t.DType, Storage: v, Name: fmt.Sprintf("%s[%d:%d]", t.Name, start, end)}
}

// Zero implements runtime.Backend.
func (b *Backend) Zero(t *kdrt.Tensor) {
	if t.Bytes() == 0 {
		return
	}
	ptr := b.dptr(t)
	defer b.enter()()
	b.counts.Memsets++
	if err := b.api.check("cuMemsetD8Async", b.api.cuMemsetD8Async(ptr, 0, uint64(t.Bytes()), b.stream)); err != nil {
		b.recordLocked("zero "+t.String(), err)
	}
}

// Copy implements runtime.Backend.
func (b *Backend) Copy(dst, src *kdrt.Tensor) {
	if dst.Numel() != src.Numel() || dst.DType != src.DType {
		panic(fmt.Sprintf("cuda: copy %v from %v: sizes or dtypes differ", dst, src))
	}
	if dst.Bytes() == 0 {
		return
	}
	d, s := b.dptr(dst), b.dptr(src)
	defer b.enter()()
	b.counts.Copies++
	if err := b.api.check("cuMemcpyDtoDAsync_v2", b.api.cuMemcpyDtoDAsync(d, s, uint64(dst.Bytes()), b.stream)); err != nil {
		b.recordLocked("copy "+dst.String(), err)
	}
}

// Sync implements runtime.Backend.
func (b *Backend) Sync() error {
	defer b.enter()()
	if err := b.api.check("cuCtxSynchronize", b.api.cuCtxSynchronize()); err != nil {
		b.recordLocked("sync", err)
	}
	err := b.err
	b.err = nil
	return err
}

// launch queues a kernel on the stream. args are the kernel's parameters in
// order: uint64 device addresses (from dptr), int32, uint32, int64, float32
// or float64; anything else is a programming error and panics.
func (b *Backend) launch(op, kernel string, grid, block dim3, shmem int, args ...any) {
	// Each parameter gets an 8-byte slot in one heap array; the driver reads
	// as many bytes from a slot as the kernel's parameter has (little endian).
	slots := make([]uint64, len(args))
	params := make([]unsafe.Pointer, len(args)+1) // +1: never empty
	for i, a := range args {
		switch v := a.(type) {
		case uint64:
			slots[i] = v
		case int32:
			slots[i] = uint64(uint32(v))
		case uint32:
			slots[i] = uint64(v)
		case int64:
			slots[i] = uint64(v)
		case float32:
			*(*float32)(unsafe.Pointer(&slots[i])) = v
		case float64:
			*(*float64)(unsafe.Pointer(&slots[i])) = v
		default:
			panic(fmt.Sprintf("cuda %s: kernel %s argument %d has type %T (want uint64, int32, uint32, int64, float32 or float64)", op, kernel, i, a))
		}
		params[i] = unsafe.Pointer(&slots[i])
	}
	defer b.enter()()
	if b.err != nil {
		return // the stream is already in error; Sync will say so
	}
	f, err := b.function(kernel)
	if err != nil {
		b.recordLocked(op, err)
		return
	}
	if grid.X == 0 || grid.Y == 0 || grid.Z == 0 {
		return // nothing to do
	}
	if err := b.checkBlock(kernel, block); err != nil {
		b.recordLocked(op, err)
		return
	}
	if shmem > 48<<10 {
		if err := b.api.check("cuFuncSetAttribute", b.api.cuFuncSetAttribute(f, cuFuncAttributeMaxDynamicSharedMemorySize, int32(shmem))); err != nil {
			b.recordLocked(op+" ("+kernel+")", err)
			return
		}
	}
	b.countKernel(kernel)
	r := b.api.cuLaunchKernel(f, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, uint32(shmem), b.stream, &params[0], nil)
	goruntime.KeepAlive(slots)
	goruntime.KeepAlive(params)
	if err := b.api.check("cuLaunchKernel("+kernel+")", r); err != nil {
		b.recordLocked(op, err)
	}
}
