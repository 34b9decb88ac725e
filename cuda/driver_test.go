package cuda

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/kdnative/kdnative/runtime"
)

// TestProbe runs anywhere: without a driver Probe must name libcuda.so.1 and
// say how to get it; with one it logs what it found.
func TestProbe(t *testing.T) {
	version, devs, err := Probe()
	switch {
	case err == nil:
		t.Logf("driver %s at %s", VersionString(version), DriverPath())
		for _, d := range devs {
			t.Logf("GPU %d: %v", d.Index, d)
		}
		if len(devs) == 0 {
			t.Error("Probe succeeded with no devices")
		}
	case DriverPath() != "":
		t.Logf("driver %s at %s, but: %v", VersionString(version), DriverPath(), err)
	default:
		if !strings.Contains(err.Error(), "libcuda.so.1") {
			t.Errorf("Probe without a driver: %v; want an error naming libcuda.so.1", err)
		}
		if unsupported() == nil && !strings.Contains(err.Error(), "install the NVIDIA driver") {
			t.Errorf("Probe without a driver: %v; want a hint", err)
		}
		t.Logf("no driver here: %v", err)
	}
	// Cached: a second call gives the same answer.
	v2, d2, err2 := Probe()
	if v2 != version || !slices.Equal(d2, devs) || !errors.Is(err2, err) {
		t.Errorf("second Probe differs: %d %v %v", v2, d2, err2)
	}
}

// TestRegistered checks that the CUDA backend is registered and that
// opening it through the registry does what the machine allows: on a machine
// where Probe finds a driver and a GPU it opens (kernels compiled or loaded
// from the cache, cuBLAS bound), and elsewhere it fails with the probe's own
// error, which names what is missing.
func TestRegistered(t *testing.T) {
	if !slices.Contains(runtime.Names(), "cuda") {
		t.Fatalf("cuda not registered: %v", runtime.Names())
	}
	be, _, err := runtime.Open("cuda")
	_, devs, perr := Probe()
	if perr == nil {
		// A GPU is here: the backend must open on it. A failure names the
		// library or the kernel that stopped it (cuBLAS, NVRTC, a compile).
		if err != nil {
			t.Fatalf("Probe found %v, but runtime.Open(\"cuda\") failed: %v", devs, err)
		}
		if be.Name() != "cuda" || !strings.Contains(be.Describe(), devs[0].Name) {
			t.Errorf("opened %q (%s); want the cuda backend on %s", be.Name(), be.Describe(), devs[0].Name)
		}
		t.Log(be.Describe())
		return
	}
	if err == nil {
		t.Fatalf("runtime.Open(\"cuda\") succeeded although Probe failed: %v", perr)
	}
	if !errors.Is(err, perr) || !strings.Contains(err.Error(), `device "cuda"`) {
		t.Errorf("Open without a GPU: %v; want the probe's error (%v) under device \"cuda\"", err, perr)
	}
	t.Logf("no GPU here, as Open says: %v", err)
}

func TestDeviceInfoString(t *testing.T) {
	d := DeviceInfo{Name: "NVIDIA H100 80GB HBM3", TotalMem: 85029158912, Major: 9, Minor: 0}
	if got, want := d.String(), "NVIDIA H100 80GB HBM3, 79.2 GiB, sm_90"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := summary(12040, []DeviceInfo{d}); got != "driver 12.4, NVIDIA H100 80GB HBM3, sm_90" {
		t.Errorf("summary = %q", got)
	}
	if got := VersionString(13010); got != "13.1" {
		t.Errorf("VersionString(13010) = %q", got)
	}
}

// fakeDriver is a driverAPI whose calls are Go functions: it checks the
// probe's logic and error reporting without a GPU.
func fakeDriver(initResult cuResult, names bool) *driverAPI {
	gpus := []struct {
		name         string
		mem          uint64
		major, minor int32
	}{
		{"NVIDIA H100 80GB HBM3", 85029158912, 9, 0},
		{"NVIDIA A100-SXM4-40GB", 42505273344, 8, 0},
	}
	cstr := func(s string) *byte { return &append([]byte(s), 0)[0] }
	return &driverAPI{
		lib:                &Library{Path: "/fake/libcuda.so.1"},
		cuInit:             func(uint32) cuResult { return initResult },
		cuDriverGetVersion: func(v *int32) cuResult { *v = 12040; return 0 },
		cuDeviceGetCount:   func(n *int32) cuResult { *n = int32(len(gpus)); return 0 },
		cuDeviceGet: func(dev *int32, i int32) cuResult {
			if int(i) >= len(gpus) {
				return 101
			}
			*dev = i
			return 0
		},
		cuDeviceGetName: func(name *byte, n int32, dev int32) cuResult {
			copy(unsafe.Slice(name, n), append([]byte(gpus[dev].name), 0))
			return 0
		},
		cuDeviceTotalMem: func(b *uint64, dev int32) cuResult { *b = gpus[dev].mem; return 0 },
		cuDeviceGetAttribute: func(v *int32, attr int32, dev int32) cuResult {
			switch attr {
			case attrComputeCapabilityMajor:
				*v = gpus[dev].major
			case attrComputeCapabilityMinor:
				*v = gpus[dev].minor
			default:
				return 1
			}
			return 0
		},
		cuGetErrorName: func(r cuResult, s **byte) cuResult {
			if !names || r != 100 {
				return 1
			}
			*s = cstr("CUDA_ERROR_NO_DEVICE")
			return 0
		},
		cuGetErrorString: func(r cuResult, s **byte) cuResult {
			if !names || r != 100 {
				return 1
			}
			*s = cstr("no CUDA-capable device is detected")
			return 0
		},
	}
}

func TestProbeFakeDriver(t *testing.T) {
	version, devs, err := fakeDriver(0, true).probe()
	if err != nil {
		t.Fatal(err)
	}
	want := []DeviceInfo{
		{0, "NVIDIA H100 80GB HBM3", 85029158912, 9, 0},
		{1, "NVIDIA A100-SXM4-40GB", 42505273344, 8, 0},
	}
	if version != 12040 || !slices.Equal(devs, want) {
		t.Errorf("probe = %d, %v; want 12040, %v", version, devs, want)
	}

	version, _, err = fakeDriver(100, true).probe()
	var de *DriverError
	if version != 12040 || !errors.As(err, &de) || de.Call != "cuInit" || de.Code != 100 {
		t.Fatalf("probe with cuInit failing: %d, %v", version, err)
	}
	if got, want := err.Error(), "driver 12.4 (/fake/libcuda.so.1): cuInit: CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)"; got != want {
		t.Errorf("error %q, want %q", got, want)
	}

	// When cuGetErrorName cannot help, the table and then the number do.
	if _, _, err := fakeDriver(34, false).probe(); err == nil || !strings.HasSuffix(err.Error(), "cuInit: CUDA_ERROR_STUB_LIBRARY") {
		t.Errorf("stub library: %v", err)
	}
	if _, _, err := fakeDriver(7777, false).probe(); err == nil || !strings.HasSuffix(err.Error(), "cuInit: CUresult 7777") {
		t.Errorf("unknown CUresult: %v", err)
	}
}
