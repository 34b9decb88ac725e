package cuda

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// nvrtcResult is NVRTC's status enum.
type nvrtcResult int32

// NVRTC is a loaded NVRTC library: compiles CUDA C++ to a cubin for one GPU
// architecture.
type NVRTC struct {
	lib          *Library
	Major, Minor int

	nvrtcVersion           func(major, minor *int32) nvrtcResult
	nvrtcGetErrorString    func(r nvrtcResult) *byte
	nvrtcCreateProgram     func(prog *uintptr, src *byte, name *byte, numHeaders int32, headers, includeNames **byte) nvrtcResult
	nvrtcDestroyProgram    func(prog *uintptr) nvrtcResult
	nvrtcCompileProgram    func(prog uintptr, numOptions int32, options **byte) nvrtcResult
	nvrtcGetProgramLogSize func(prog uintptr, size *uint64) nvrtcResult
	nvrtcGetProgramLog     func(prog uintptr, log *byte) nvrtcResult
	nvrtcGetCUBINSize      func(prog uintptr, size *uint64) nvrtcResult
	nvrtcGetCUBIN          func(prog uintptr, cubin *byte) nvrtcResult
}

var (
	nvrtcMu    sync.Mutex
	nvrtcCache = map[string]nvrtcLoad{}
)

type nvrtcLoad struct {
	n   *NVRTC
	err error
}

// LoadNVRTC loads libnvrtc for a driver of the given CUDA version (see
// Lib.ForDriver; 0 accepts any). NVRTC opens its builtins library
// (libnvrtc-builtins.so.MAJOR.MINOR) by soname at compile time; the pip
// wheels do not put it on the loader's path, so it is opened here first,
// from NVRTC's own folder. The result is cached per version.
func LoadNVRTC(driverVersion int) (*NVRTC, error) {
	lib := LibNVRTC.ForDriver(driverVersion)
	key := fmt.Sprint(lib.Majors)
	nvrtcMu.Lock()
	defer nvrtcMu.Unlock()
	if r, ok := nvrtcCache[key]; ok {
		return r.n, r.err
	}
	n, err := loadNVRTC(lib)
	nvrtcCache[key] = nvrtcLoad{n, err}
	return n, err
}

func loadNVRTC(l Lib) (*NVRTC, error) {
	lib, err := Load(l)
	if err != nil {
		return nil, err
	}
	n := &NVRTC{lib: lib}
	binds := []Binding{
		{&n.nvrtcVersion, "nvrtcVersion"},
		{&n.nvrtcGetErrorString, "nvrtcGetErrorString"},
		{&n.nvrtcCreateProgram, "nvrtcCreateProgram"},
		{&n.nvrtcDestroyProgram, "nvrtcDestroyProgram"},
		{&n.nvrtcCompileProgram, "nvrtcCompileProgram"},
		{&n.nvrtcGetProgramLogSize, "nvrtcGetProgramLogSize"},
		{&n.nvrtcGetProgramLog, "nvrtcGetProgramLog"},
		{&n.nvrtcGetCUBINSize, "nvrtcGetCUBINSize"},
		{&n.nvrtcGetCUBIN, "nvrtcGetCUBIN"},
	}
	if err := lib.BindAll(binds); err != nil {
		return nil, err
	}
	var major, minor int32
	if r := n.nvrtcVersion(&major, &minor); r != 0 {
		return nil, fmt.Errorf("nvrtcVersion (%s): %s", lib.Path, n.errString(r))
	}
	n.Major, n.Minor = int(major), int(minor)
	preloadBuiltins(lib.Path, n.Major, n.Minor)
	return n, nil
}

// preloadBuiltins opens libnvrtc-builtins.so.MAJOR.MINOR from NVRTC's folder
// when it is there, so that NVRTC's own dlopen by soname finds it loaded.
// Failure is not an error here: NVRTC's compile error then names the file.
func preloadBuiltins(nvrtcPath string, major, minor int) {
	dir := filepath.Dir(nvrtcPath)
	p := filepath.Join(dir, fmt.Sprintf("libnvrtc-builtins.so.%d.%d", major, minor))
	if _, err := os.Stat(p); err == nil {
		dlopen(p)
	}
}

// Version is NVRTC's version, e.g. "13.0".
func (n *NVRTC) Version() string { return fmt.Sprintf("%d.%d", n.Major, n.Minor) }

// Path is the file NVRTC was loaded from.
func (n *NVRTC) Path() string { return n.lib.Path }

func (n *NVRTC) errString(r nvrtcResult) string {
	if s := cString(n.nvrtcGetErrorString(r)); s != "" {
		return s
	}
	return fmt.Sprintf("nvrtcResult %d", int(r))
}

// CompileError is a program NVRTC refused, with its log.
type CompileError struct {
	Program, Arch string
	Status        string
	Log           string
}

func (e *CompileError) Error() string {
	return fmt.Sprintf("nvrtc: compiling %s for %s: %s\n%s", e.Program, e.Arch, e.Status, strings.TrimSpace(e.Log))
}

// Compile compiles a program's source to a cubin for arch (e.g. "sm_90").
// It returns the cubin and NVRTC's log (warnings); a failed compile is a
// *CompileError carrying the log.
func (n *NVRTC) Compile(name, src, arch string, opts []string) (cubin []byte, log string, err error) {
	var prog uintptr
	if r := n.nvrtcCreateProgram(&prog, cStr(src), cStr(name), 0, nil, nil); r != 0 {
		return nil, "", fmt.Errorf("nvrtcCreateProgram(%s): %s", name, n.errString(r))
	}
	defer n.nvrtcDestroyProgram(&prog)
	all := append([]string{"--gpu-architecture=" + arch}, opts...)
	cargs := make([]*byte, len(all))
	for i, o := range all {
		cargs[i] = cStr(o)
	}
	r := n.nvrtcCompileProgram(prog, int32(len(cargs)), &cargs[0])
	log = n.programLog(prog)
	if r != 0 {
		return nil, log, &CompileError{Program: name, Arch: arch, Status: n.errString(r), Log: log}
	}
	var size uint64
	if r := n.nvrtcGetCUBINSize(prog, &size); r != 0 {
		return nil, log, fmt.Errorf("nvrtcGetCUBINSize(%s): %s", name, n.errString(r))
	}
	if size == 0 {
		return nil, log, fmt.Errorf("nvrtc: %s for %s gave no cubin (is %s a real architecture?)", name, arch, arch)
	}
	cubin = make([]byte, size)
	if r := n.nvrtcGetCUBIN(prog, &cubin[0]); r != 0 {
		return nil, log, fmt.Errorf("nvrtcGetCUBIN(%s): %s", name, n.errString(r))
	}
	return cubin, log, nil
}

func (n *NVRTC) programLog(prog uintptr) string {
	var size uint64
	if n.nvrtcGetProgramLogSize(prog, &size) != 0 || size <= 1 {
		return ""
	}
	buf := make([]byte, size)
	if n.nvrtcGetProgramLog(prog, &buf[0]) != 0 {
		return ""
	}
	return strings.TrimRight(string(buf), "\x00")
}
