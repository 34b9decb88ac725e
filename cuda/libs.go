package cuda

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Lib names a shared library by its base name and the major versions of its
// soname, in order of preference: {Base: "libcublas", Majors: {13, 12}} is
// libcublas.so.13, then libcublas.so.12.
type Lib struct {
	Base   string
	Majors []int
	// Toolkit marks a library of the CUDA toolkit, whose major version is the
	// CUDA version it needs from the driver (see ForDriver); the driver's own
	// libcuda.so.1 is not one.
	Toolkit bool
	// Hint ends the error when the library is missing: how to install it.
	Hint string
}

// The libraries kdnative loads. Load the driver first; load cuBLASLt before
// cuBLAS, which links against it by soname.
var (
	LibCUDA = Lib{Base: "libcuda", Majors: []int{1},
		Hint: "install the NVIDIA driver"}
	LibCUBLAS = Lib{Base: "libcublas", Majors: []int{13, 12}, Toolkit: true,
		Hint: "install the CUDA toolkit, or pip install nvidia-cublas (CUDA 13) or nvidia-cublas-cu12"}
	LibCUBLASLt = Lib{Base: "libcublasLt", Majors: []int{13, 12}, Toolkit: true,
		Hint: "install the CUDA toolkit, or pip install nvidia-cublas (CUDA 13) or nvidia-cublas-cu12"}
	LibNVRTC = Lib{Base: "libnvrtc", Majors: []int{13, 12}, Toolkit: true,
		Hint: "install the CUDA toolkit, or pip install nvidia-cuda-nvrtc (CUDA 13) or nvidia-cuda-nvrtc-cu12"}
)

// Sonames lists the file names tried, in order (libcublas.so.13, libcublas.so.12).
func (l Lib) Sonames() []string {
	out := make([]string, len(l.Majors))
	for i, m := range l.Majors {
		out[i] = l.Base + ".so." + strconv.Itoa(m)
	}
	return out
}

// ForDriver keeps, for a toolkit library, the major versions that a driver of
// the given version (cuDriverGetVersion: 12040 is 12.4) can run: CUDA 13
// libraries need a CUDA 13 driver, while a CUDA 13 driver runs CUDA 12 ones.
// The result may have no majors left; Load then says so.
func (l Lib) ForDriver(driverVersion int) Lib {
	if !l.Toolkit || driverVersion <= 0 {
		return l
	}
	var keep []int
	for _, m := range l.Majors {
		if m <= driverVersion/1000 {
			keep = append(keep, m)
		}
	}
	l.Majors = keep
	return l
}

func (l Lib) String() string {
	return strings.Join(l.Sonames(), " or ")
}

// Library is a shared library that Load opened.
type Library struct {
	Lib
	Soname string // the name it answers to, e.g. libcublas.so.12
	Major  int    // the soname's major version
	Path   string // the file that was opened
	From   string // where it was found: "LD_LIBRARY_PATH", "CUDA_HOME", "system", "python wheel", …
	handle uintptr
}

// Bind points fptr, a pointer to a Go func variable whose signature matches
// the C function's, at the library's symbol. See purego.RegisterFunc for the
// type mapping; CUDA status enums are int32.
func (l *Library) Bind(fptr any, symbol string) error {
	addr, err := dlsym(l.handle, symbol)
	if err != nil {
		return fmt.Errorf("%s (%s) has no %s: %v", l.Soname, l.Path, symbol, err)
	}
	registerFunc(fptr, addr)
	return nil
}

// Binding names a C function and the Go func variable to point at it.
type Binding struct {
	Fptr   any    // a pointer to a func variable, as for Bind
	Symbol string // the C symbol, e.g. "cuMemAlloc_v2"
}

// BindAll binds each of bs in order and stops at the first symbol missing.
func (l *Library) BindAll(bs []Binding) error {
	for _, b := range bs {
		if err := l.Bind(b.Fptr, b.Symbol); err != nil {
			return err
		}
	}
	return nil
}

type loadResult struct {
	lib *Library
	err error
}

var (
	loadMu    sync.Mutex
	loadCache = map[string]loadResult{}
)

// Load finds and opens a library (dlopen with RTLD_NOW|RTLD_GLOBAL), trying in
// order: the LD_LIBRARY_PATH directories; $CUDA_HOME/lib64 and $CUDA_HOME/lib
// (and $CUDA_PATH's); /usr/local/cuda/lib64; the system library directories
// (/usr/lib/<triplet>, /usr/lib64, /usr/lib/wsl/lib); the dynamic loader's own
// search by soname; the lib folders of the nvidia-* Python wheels
// (site-packages/nvidia/*/lib, which includes CUDA 13's nvidia/cu13/lib). In
// each directory the exact sonames come first, then versioned files
// (libcublas.so.12.4.5.8), newest first. The result, success or error, is
// cached for the life of the process.
//
// A missing library is an error that names it, lists where it looked and ends
// with l.Hint; a library found but not loadable (wrong architecture, a missing
// dependency) is an error that gives the loader's message for each file tried.
func Load(l Lib) (*Library, error) {
	key := l.Base + fmt.Sprint(l.Majors)
	loadMu.Lock()
	defer loadMu.Unlock()
	if r, ok := loadCache[key]; ok {
		return r.lib, r.err
	}
	lib, err := load(l, defaultSearch())
	loadCache[key] = loadResult{lib, err}
	return lib, err
}

func load(l Lib, s searchEnv) (*Library, error) {
	if err := unsupported(); err != nil {
		return nil, err
	}
	if len(l.Majors) == 0 {
		return nil, fmt.Errorf("%s: no version this driver can run: %s", l.Base, l.Hint)
	}
	dirs := s.dirs()
	var failed []string
	for _, c := range candidates(l, dirs) {
		h, err := dlopen(c.path)
		if err != nil {
			// A bare soname that the loader cannot find is just "not there".
			msg := err.Error()
			if (!c.bare || !strings.Contains(msg, "cannot open shared object file")) && !slices.Contains(failed, msg) {
				failed = append(failed, msg)
			}
			continue
		}
		lib := &Library{Lib: l, Soname: c.soname, Major: c.major, Path: c.path, From: c.from, handle: h}
		if c.bare {
			lib.Path = loadedPath(l.Base, c.path)
		}
		return lib, nil
	}
	if len(failed) > 0 {
		return nil, fmt.Errorf("%s found but could not be loaded: %s", l, strings.Join(failed, "; "))
	}
	return nil, fmt.Errorf("%s not found (searched: %s): %s", l, s.describe(dirs), l.Hint)
}

// searchDir is one place Load looks. An empty dir is the dynamic loader's own
// search (dlopen by bare soname).
type searchDir struct {
	dir, from string
}

// searchEnv is what the search path is built from; tests substitute their own.
type searchEnv struct {
	getenv  func(string) string
	home    string
	triplet string // Debian multiarch directory, e.g. x86_64-linux-gnu
}

func defaultSearch() searchEnv {
	home, _ := os.UserHomeDir()
	t := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
	return searchEnv{getenv: os.Getenv, home: home, triplet: t}
}

func (s searchEnv) systemDirs() []string {
	var out []string
	if s.triplet != "" {
		out = append(out, "/usr/lib/"+s.triplet)
	}
	return append(out, "/usr/lib64", "/usr/lib/wsl/lib")
}

// dirs lists the search path in order, without duplicates. Directories that
// do not exist are kept (describe lists them); candidates skips them.
func (s searchEnv) dirs() []searchDir {
	var out []searchDir
	seen := map[string]bool{}
	add := func(dir, from string) {
		if dir == "" {
			return
		}
		dir = filepath.Clean(dir)
		if seen[dir] {
			return
		}
		seen[dir] = true
		out = append(out, searchDir{dir, from})
	}
	for _, d := range filepath.SplitList(s.getenv("LD_LIBRARY_PATH")) {
		add(d, "LD_LIBRARY_PATH")
	}
	for _, v := range []string{"CUDA_HOME", "CUDA_PATH"} {
		if root := s.getenv(v); root != "" {
			add(filepath.Join(root, "lib64"), v)
			add(filepath.Join(root, "lib"), v)
		}
	}
	add("/usr/local/cuda/lib64", "/usr/local/cuda")
	for _, d := range s.systemDirs() {
		add(d, "system")
	}
	out = append(out, searchDir{"", "dynamic loader"})
	for _, sp := range s.sitePackages() {
		libs, _ := filepath.Glob(filepath.Join(sp, "nvidia", "*", "lib"))
		for _, d := range libs {
			add(d, "python wheel")
		}
	}
	return out
}

// sitePackages finds Python site-packages folders by globbing the usual
// places (virtualenv, conda, user, pyenv, system), without running Python.
func (s searchEnv) sitePackages() []string {
	var roots []string
	for _, v := range []string{"VIRTUAL_ENV", "CONDA_PREFIX"} {
		if r := s.getenv(v); r != "" {
			roots = append(roots, r)
		}
	}
	if s.home != "" {
		roots = append(roots, filepath.Join(s.home, ".local"), filepath.Join(s.home, ".pyenv", "versions", "*"))
	}
	roots = append(roots, "/usr/local", "/usr", "/opt/conda")
	var patterns []string
	for _, r := range roots {
		patterns = append(patterns,
			filepath.Join(r, "lib", "python3*", "site-packages"),
			filepath.Join(r, "lib", "python3*", "dist-packages"),
			filepath.Join(r, "lib64", "python3*", "site-packages"))
	}
	patterns = append(patterns, "/usr/lib/python3/dist-packages")
	var out []string
	seen := map[string]bool{}
	for _, p := range patterns {
		matches, _ := filepath.Glob(p)
		for _, m := range matches {
			if !seen[m] && isDir(m) {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	return out
}

// describe renders the search path for an error message, compactly.
func (s searchEnv) describe(dirs []searchDir) string {
	var parts, wheels []string
	if s.getenv("LD_LIBRARY_PATH") == "" {
		parts = append(parts, "LD_LIBRARY_PATH (unset)")
	}
	if s.getenv("CUDA_HOME") == "" && s.getenv("CUDA_PATH") == "" {
		parts = append(parts, "CUDA_HOME (unset)")
	}
	for _, d := range dirs {
		switch {
		case d.dir == "":
			parts = append(parts, "the dynamic loader's path")
		case d.from == "python wheel":
			wheels = append(wheels, d.dir)
		default:
			parts = append(parts, d.dir)
		}
	}
	if len(wheels) == 0 {
		parts = append(parts, "nvidia-* Python wheels (none found)")
	} else {
		parts = append(parts, wheels...)
	}
	return strings.Join(parts, ", ")
}

type candidate struct {
	path, soname, from string
	major              int
	bare               bool // dlopen by soname, the loader searches
}

// candidates lists the files to try, in search order: per directory, the exact
// sonames in l's order, then versioned files of each major, newest first.
func candidates(l Lib, dirs []searchDir) []candidate {
	var out []candidate
	seen := map[string]bool{}
	for _, d := range dirs {
		if d.dir == "" {
			for i, so := range l.Sonames() {
				out = append(out, candidate{path: so, soname: so, from: d.from, major: l.Majors[i], bare: true})
			}
			continue
		}
		if !isDir(d.dir) {
			continue
		}
		for i, so := range l.Sonames() {
			p := filepath.Join(d.dir, so)
			if isFile(p) && !seen[p] {
				seen[p] = true
				out = append(out, candidate{path: p, soname: so, from: d.from, major: l.Majors[i]})
			}
		}
		for i, so := range l.Sonames() {
			matches, _ := filepath.Glob(filepath.Join(d.dir, so+".*"))
			slices.SortFunc(matches, func(a, b string) int { return compareVersions(b, a) })
			for _, p := range matches {
				if isFile(p) && !seen[p] {
					seen[p] = true
					out = append(out, candidate{path: p, soname: so, from: d.from, major: l.Majors[i]})
				}
			}
		}
	}
	return out
}

// compareVersions orders file names by the dotted numbers after ".so.":
// libx.so.12.10.1 > libx.so.12.9.
func compareVersions(a, b string) int {
	va := strings.Split(a[strings.LastIndex(a, ".so.")+4:], ".")
	vb := strings.Split(b[strings.LastIndex(b, ".so.")+4:], ".")
	for i := 0; i < len(va) && i < len(vb); i++ {
		x, errx := strconv.Atoi(va[i])
		y, erry := strconv.Atoi(vb[i])
		if errx != nil || erry != nil {
			if c := strings.Compare(va[i], vb[i]); c != 0 {
				return c
			}
			continue
		}
		if x != y {
			return x - y
		}
	}
	return len(va) - len(vb)
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
