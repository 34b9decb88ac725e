package cuda

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"unsafe"
)

// cuResult is the driver API's CUresult.
type cuResult int32

const cudaSuccess cuResult = 0

// Device attributes (CUdevice_attribute) that the probe reads.
const (
	attrComputeCapabilityMajor = 75
	attrComputeCapabilityMinor = 76
)

// DriverError is a failed driver API call: the call, the CUresult and the
// driver's name and description for it.
type DriverError struct {
	Call    string // "cuInit"
	Code    int    // the CUresult, e.g. 100
	Name    string // "CUDA_ERROR_NO_DEVICE"
	Message string // "no CUDA-capable device is detected"
}

func (e *DriverError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s: %s", e.Call, e.Name)
	}
	return fmt.Sprintf("%s: %s (%s)", e.Call, e.Name, e.Message)
}

// resultNames names the CUresults a probe can meet, for when cuGetErrorName
// itself is unusable.
var resultNames = map[cuResult]string{
	1: "CUDA_ERROR_INVALID_VALUE", 2: "CUDA_ERROR_OUT_OF_MEMORY", 3: "CUDA_ERROR_NOT_INITIALIZED",
	4: "CUDA_ERROR_DEINITIALIZED", 34: "CUDA_ERROR_STUB_LIBRARY", 46: "CUDA_ERROR_DEVICE_UNAVAILABLE",
	100: "CUDA_ERROR_NO_DEVICE", 101: "CUDA_ERROR_INVALID_DEVICE", 102: "CUDA_ERROR_DEVICE_NOT_LICENSED",
	802: "CUDA_ERROR_SYSTEM_NOT_READY", 803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
	804: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE", 999: "CUDA_ERROR_UNKNOWN",
}

// driverAPI holds libcuda and the driver calls bound so far. The full backend
// will add to it; the probe needs only these.
type driverAPI struct {
	lib *Library

	cuInit               func(flags uint32) cuResult
	cuDriverGetVersion   func(version *int32) cuResult
	cuDeviceGetCount     func(count *int32) cuResult
	cuDeviceGet          func(dev *int32, ordinal int32) cuResult
	cuDeviceGetName      func(name *byte, n int32, dev int32) cuResult
	cuDeviceTotalMem     func(bytes *uint64, dev int32) cuResult
	cuDeviceGetAttribute func(v *int32, attr int32, dev int32) cuResult
	cuGetErrorName       func(r cuResult, s **byte) cuResult
	cuGetErrorString     func(r cuResult, s **byte) cuResult
}

// bindDriver loads libcuda.so.1 and binds the probe's calls.
func bindDriver() (*driverAPI, error) {
	lib, err := Load(LibCUDA)
	if err != nil {
		return nil, err
	}
	d := &driverAPI{lib: lib}
	binds := []Binding{
		{&d.cuInit, "cuInit"},
		{&d.cuDriverGetVersion, "cuDriverGetVersion"},
		{&d.cuDeviceGetCount, "cuDeviceGetCount"},
		{&d.cuDeviceGet, "cuDeviceGet"},
		{&d.cuDeviceGetName, "cuDeviceGetName"},
		{&d.cuDeviceTotalMem, "cuDeviceTotalMem_v2"},
		{&d.cuDeviceGetAttribute, "cuDeviceGetAttribute"},
		{&d.cuGetErrorName, "cuGetErrorName"},
		{&d.cuGetErrorString, "cuGetErrorString"},
	}
	if err := lib.BindAll(binds); err != nil {
		return nil, fmt.Errorf("%v: the NVIDIA driver is too old or not a real driver", err)
	}
	return d, nil
}

// check turns a CUresult into nil or a *DriverError naming call.
func (d *driverAPI) check(call string, r cuResult) error {
	if r == cudaSuccess {
		return nil
	}
	e := &DriverError{Call: call, Code: int(r)}
	var s *byte
	if d.cuGetErrorName(r, &s) == cudaSuccess {
		e.Name = cString(s)
	}
	if e.Name == "" {
		e.Name = resultNames[r]
	}
	if e.Name == "" {
		e.Name = fmt.Sprintf("CUresult %d", int(r))
	}
	s = nil
	if d.cuGetErrorString(r, &s) == cudaSuccess {
		e.Message = cString(s)
	}
	return e
}

// probe asks the driver for its version and devices. The version is filled in
// whenever the driver answers, even when a later call fails.
func (d *driverAPI) probe() (int, []DeviceInfo, error) {
	var v int32
	if err := d.check("cuDriverGetVersion", d.cuDriverGetVersion(&v)); err != nil {
		return 0, nil, err
	}
	version := int(v)
	if err := d.check("cuInit", d.cuInit(0)); err != nil {
		return version, nil, fmt.Errorf("driver %s (%s): %w", VersionString(version), d.lib.Path, err)
	}
	var n int32
	if err := d.check("cuDeviceGetCount", d.cuDeviceGetCount(&n)); err != nil {
		return version, nil, err
	}
	if n == 0 {
		return version, nil, fmt.Errorf("driver %s loaded but found no GPU", VersionString(version))
	}
	devs := make([]DeviceInfo, 0, n)
	for i := range n {
		var dev int32
		if err := d.check("cuDeviceGet", d.cuDeviceGet(&dev, i)); err != nil {
			return version, nil, err
		}
		var name [256]byte
		if err := d.check("cuDeviceGetName", d.cuDeviceGetName(&name[0], int32(len(name)), dev)); err != nil {
			return version, nil, err
		}
		var mem uint64
		if err := d.check("cuDeviceTotalMem_v2", d.cuDeviceTotalMem(&mem, dev)); err != nil {
			return version, nil, err
		}
		var major, minor int32
		if err := d.check("cuDeviceGetAttribute(COMPUTE_CAPABILITY_MAJOR)",
			d.cuDeviceGetAttribute(&major, attrComputeCapabilityMajor, dev)); err != nil {
			return version, nil, err
		}
		if err := d.check("cuDeviceGetAttribute(COMPUTE_CAPABILITY_MINOR)",
			d.cuDeviceGetAttribute(&minor, attrComputeCapabilityMinor, dev)); err != nil {
			return version, nil, err
		}
		devs = append(devs, DeviceInfo{
			Index:    int(i),
			Name:     cString(&name[0]),
			TotalMem: mem,
			Major:    int(major),
			Minor:    int(minor),
		})
	}
	return version, devs, nil
}

// cString copies a NUL-terminated C string.
func cString(p *byte) string {
	if p == nil {
		return ""
	}
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}

// DeviceInfo describes one GPU as the driver reports it.
type DeviceInfo struct {
	Index    int
	Name     string // "NVIDIA H100 80GB HBM3"
	TotalMem uint64 // bytes
	// Major and Minor are the compute capability (9 and 0 for sm_90).
	Major, Minor int
}

// Arch is the compute capability as NVRTC's architecture name, e.g. "sm_90".
func (d DeviceInfo) Arch() string { return fmt.Sprintf("sm_%d%d", d.Major, d.Minor) }

// String is one line: "NVIDIA H100 80GB HBM3, 79.1 GiB, sm_90".
func (d DeviceInfo) String() string {
	return fmt.Sprintf("%s, %.1f GiB, %s", d.Name, float64(d.TotalMem)/(1<<30), d.Arch())
}

// VersionString renders a CUDA version number as the driver gives it
// (12040) in the usual form ("12.4").
func VersionString(v int) string {
	return fmt.Sprintf("%d.%d", v/1000, v%1000/10)
}

var (
	probeOnce    sync.Once
	probeDriver  *driverAPI
	probeVersion int
	probeDevices []DeviceInfo
	probeErr     error
)

// Probe loads the driver (libcuda.so.1), initializes it and lists the GPUs:
// the driver's CUDA version (cuDriverGetVersion: 12040 is 12.4; see
// VersionString) and each device's name, memory and compute capability. It
// needs no context and allocates nothing on the GPU. The result is computed
// once per process. The version is set whenever the driver loaded, even when
// err says it found no usable GPU.
func Probe() (driverVersion int, devices []DeviceInfo, err error) {
	probeOnce.Do(func() {
		probeDriver, probeErr = bindDriver()
		if probeErr != nil {
			return
		}
		probeVersion, probeDevices, probeErr = probeDriver.probe()
	})
	return probeVersion, slices.Clone(probeDevices), probeErr
}

// DriverPath is the file libcuda was loaded from, or "" when it was not
// found. It calls Probe.
func DriverPath() string {
	Probe()
	if probeDriver == nil {
		return ""
	}
	return probeDriver.lib.Path
}

// summary is the probe in a few words: "driver 12.4, NVIDIA H100 80GB HBM3,
// sm_90", one entry per GPU.
func summary(version int, devs []DeviceInfo) string {
	parts := []string{"driver " + VersionString(version)}
	for _, d := range devs {
		parts = append(parts, d.Name+", "+d.Arch())
	}
	return strings.Join(parts, ", ")
}
