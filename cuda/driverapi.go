package cuda

import (
	"fmt"
	"unsafe"
)

// ctxAPI is the driver API the backend uses beyond the probe: contexts,
// memory, modules, launches and events. Handles (CUcontext, CUmodule,
// CUfunction, CUstream, CUevent) are opaque pointers, held as uintptr;
// device addresses (CUdeviceptr) are uint64.
type ctxAPI struct {
	*driverAPI

	cuDevicePrimaryCtxRetain  func(ctx *uintptr, dev int32) cuResult
	cuDevicePrimaryCtxRelease func(dev int32) cuResult
	cuCtxSetCurrent           func(ctx uintptr) cuResult
	cuCtxSynchronize          func() cuResult
	cuMemAlloc                func(dptr *uint64, bytes uint64) cuResult
	cuMemFree                 func(dptr uint64) cuResult
	cuMemGetInfo              func(free, total *uint64) cuResult
	cuMemcpyHtoD              func(dst uint64, src unsafe.Pointer, bytes uint64) cuResult
	cuMemcpyDtoH              func(dst unsafe.Pointer, src uint64, bytes uint64) cuResult
	cuMemcpyDtoDAsync         func(dst, src uint64, bytes uint64, stream uintptr) cuResult
	cuMemsetD8Async           func(dst uint64, v uint8, n uint64, stream uintptr) cuResult
	cuModuleLoadData          func(mod *uintptr, image unsafe.Pointer) cuResult
	cuModuleGetFunction       func(fn *uintptr, mod uintptr, name *byte) cuResult
	cuLaunchKernel            func(fn uintptr, gx, gy, gz, bx, by, bz, shmem uint32, stream uintptr, params *unsafe.Pointer, extra *unsafe.Pointer) cuResult
	cuFuncSetAttribute        func(fn uintptr, attr int32, value int32) cuResult
	cuEventCreate             func(ev *uintptr, flags uint32) cuResult
	cuEventRecord             func(ev uintptr, stream uintptr) cuResult
	cuEventSynchronize        func(ev uintptr) cuResult
	cuEventElapsedTime        func(ms *float32, start, end uintptr) cuResult
	cuEventDestroy            func(ev uintptr) cuResult
	cuStreamCreate            func(stream *uintptr, flags uint32) cuResult
	cuStreamSynchronize       func(stream uintptr) cuResult
	cuMemHostAlloc            func(p *unsafe.Pointer, bytes uint64, flags uint32) cuResult
	cuMemFreeHost             func(p unsafe.Pointer) cuResult
	cuMemcpyHtoDAsync         func(dst uint64, src unsafe.Pointer, bytes uint64, stream uintptr) cuResult

	// CUDA graphs (graphs.go); nil when the driver lacks them.
	cuStreamBeginCapture        func(stream uintptr, mode int32) cuResult
	cuStreamEndCapture          func(stream uintptr, graph *uintptr) cuResult
	cuGraphInstantiateWithFlags func(exec *uintptr, graph uintptr, flags uint64) cuResult
	cuGraphLaunch               func(exec uintptr, stream uintptr) cuResult
	cuGraphExecDestroy          func(exec uintptr) cuResult
	cuGraphDestroy              func(graph uintptr) cuResult
}

// More CUdevice_attribute values.
const (
	attrMaxSharedMemoryPerBlock      = 8
	attrMultiprocessorCount          = 16
	attrMaxSharedMemoryPerBlockOptin = 97
)

// cuFuncAttributeMaxDynamicSharedMemorySize is CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.
const cuFuncAttributeMaxDynamicSharedMemorySize = 8

// bindContextAPI binds the backend's driver calls. A driver that lacks one is
// too old for kdnative: the error names the call.
func bindContextAPI(d *driverAPI) (*ctxAPI, error) {
	a := &ctxAPI{driverAPI: d}
	binds := []Binding{
		{&a.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"},
		{&a.cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"},
		{&a.cuCtxSetCurrent, "cuCtxSetCurrent"},
		{&a.cuCtxSynchronize, "cuCtxSynchronize"},
		{&a.cuMemAlloc, "cuMemAlloc_v2"},
		{&a.cuMemFree, "cuMemFree_v2"},
		{&a.cuMemGetInfo, "cuMemGetInfo_v2"},
		{&a.cuMemcpyHtoD, "cuMemcpyHtoD_v2"},
		{&a.cuMemcpyDtoH, "cuMemcpyDtoH_v2"},
		{&a.cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2"},
		{&a.cuMemsetD8Async, "cuMemsetD8Async"},
		{&a.cuModuleLoadData, "cuModuleLoadData"},
		{&a.cuModuleGetFunction, "cuModuleGetFunction"},
		{&a.cuLaunchKernel, "cuLaunchKernel"},
		{&a.cuFuncSetAttribute, "cuFuncSetAttribute"},
		{&a.cuEventCreate, "cuEventCreate"},
		{&a.cuEventRecord, "cuEventRecord"},
		{&a.cuEventSynchronize, "cuEventSynchronize"},
		{&a.cuEventDestroy, "cuEventDestroy_v2"},
		{&a.cuStreamCreate, "cuStreamCreate"},
		{&a.cuStreamSynchronize, "cuStreamSynchronize"},
		{&a.cuMemHostAlloc, "cuMemHostAlloc"},
		{&a.cuMemFreeHost, "cuMemFreeHost"},
		{&a.cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2"},
	}
	// CUDA 12.8 added cuEventElapsedTime_v2, which cuda.h maps the name to
	// from 13.0; older drivers have only the first version.
	if d.lib.Bind(&a.cuEventElapsedTime, "cuEventElapsedTime_v2") != nil {
		binds = append(binds, Binding{&a.cuEventElapsedTime, "cuEventElapsedTime"})
	}
	if err := d.lib.BindAll(binds); err != nil {
		return nil, fmt.Errorf("%v: the NVIDIA driver is too old for kdnative", err)
	}
	// Graphs are optional (CUDA 11.4 and later): without all of them the
	// steps run without.
	graphs := []Binding{
		{&a.cuStreamBeginCapture, "cuStreamBeginCapture_v2"},
		{&a.cuStreamEndCapture, "cuStreamEndCapture"},
		{&a.cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags"},
		{&a.cuGraphLaunch, "cuGraphLaunch"},
		{&a.cuGraphExecDestroy, "cuGraphExecDestroy"},
		{&a.cuGraphDestroy, "cuGraphDestroy"},
	}
	if d.lib.BindAll(graphs) != nil {
		a.cuStreamBeginCapture, a.cuStreamEndCapture, a.cuGraphInstantiateWithFlags = nil, nil, nil
		a.cuGraphLaunch, a.cuGraphExecDestroy, a.cuGraphDestroy = nil, nil, nil
	}
	return a, nil
}

// cStr returns a NUL-terminated copy of s for a C call.
func cStr(s string) *byte {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return &b[0]
}
