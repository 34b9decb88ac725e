package cuda

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/kdnative/kdnative/internal/atomicfile"
	"github.com/kdnative/kdnative/kernels"
)

// compileOptions are the NVRTC options every program is compiled with. No
// fast math: the kernels must match the CPU reference to 1e-5.
var compileOptions = []string{"-std=c++17", "-default-device"}

// KernelCacheDir is where compiled kernels are kept: $KDNATIVE_KERNEL_CACHE,
// else the user cache directory's kdnative/kernels (~/.cache/kdnative/kernels).
// It returns "" when neither is known; kernels are then compiled every run.
func KernelCacheDir() string {
	if d := os.Getenv("KDNATIVE_KERNEL_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "kdnative", "kernels")
}

// cacheKey names a program's cubin by everything that determines it: the
// source, the options, the NVRTC version and the architecture.
func cacheKey(p kernels.Program, n *NVRTC, arch string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00", p.Name, p.Source, strings.Join(compileOptions, " "), n.Version())
	return fmt.Sprintf("%s-%s-nvrtc%s-%s.cubin", strings.TrimSuffix(p.Name, ".cu"), arch, n.Version(), hex.EncodeToString(h.Sum(nil))[:16])
}

// CompileProgram returns p's cubin for arch, from the disk cache when it is
// there, else compiled by NVRTC and written to the cache (atomically: a
// temporary file renamed into place, so that concurrent runs never read half
// a cubin). A cache that cannot be written is not an error.
func CompileProgram(n *NVRTC, p kernels.Program, arch string) ([]byte, error) {
	if b := cachedCubin(n, p, arch); b != nil {
		return b, nil
	}
	cubin, _, err := n.Compile(p.Name, p.Source, arch, compileOptions)
	if err != nil {
		return nil, err
	}
	storeCubin(n, p, arch, cubin)
	return cubin, nil
}

// cachedCubin is p's cubin from the disk cache, or nil.
func cachedCubin(n *NVRTC, p kernels.Program, arch string) []byte {
	dir := KernelCacheDir()
	if dir == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(dir, cacheKey(p, n, arch)))
	if err != nil || len(b) == 0 {
		return nil
	}
	return b
}

// storeCubin writes p's cubin to the disk cache, if there is one.
func storeCubin(n *NVRTC, p kernels.Program, arch string, cubin []byte) {
	if dir := KernelCacheDir(); dir != "" {
		writeCache(filepath.Join(dir, cacheKey(p, n, arch)), cubin)
	}
}

// writeCache writes a cubin through internal/atomicfile. Several processes
// may compile the same program at once: each writes its own temporary file
// and renames it over path, so a reader finds no file or a whole cubin
// (they are the same bytes; the last rename wins), and the sync keeps a
// crash from leaving a cubin cut short. A failure is not reported: at worst
// the program is compiled again next time.
func writeCache(path string, b []byte) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return
	}
	atomicfile.WriteFile(path, b)
}

// evictCached removes p's cached cubin, reporting whether there was one.
func evictCached(n *NVRTC, p kernels.Program, arch string) bool {
	dir := KernelCacheDir()
	if dir == "" {
		return false
	}
	return os.Remove(filepath.Join(dir, cacheKey(p, n, arch))) == nil
}

// kernelIndex maps each kernel name to the program that defines it.
func kernelIndex() map[string]kernels.Program {
	idx := map[string]kernels.Program{}
	for _, p := range kernels.Programs() {
		for _, k := range p.Kernels {
			idx[k] = p
		}
	}
	return idx
}

// CUresults that mean the driver cannot run what NVRTC made.
const (
	errInvalidPTX             cuResult = 218
	errNoBinaryForGPU         cuResult = 209
	errUnsupportedPTX         cuResult = 222
	errJITCompilerNotFound    cuResult = 221
	errInvalidImage           cuResult = 200
	errUnsupportedDevSideSync cuResult = 225
)

// function returns the loaded kernel, compiling and loading its program on
// first use. Call with the backend entered.
func (b *Backend) function(name string) (uintptr, error) {
	if f, ok := b.funcs[name]; ok {
		return f, nil
	}
	p, ok := b.index[name]
	if !ok {
		return 0, fmt.Errorf("no kernel named %s in kernels/*.cu", name)
	}
	mod, ok := b.modules[p.Name]
	if !ok {
		// From the cache when it is there; a fresh compile goes into the cache
		// only once the driver has loaded it. A cached cubin the driver
		// refuses (damaged, or made by an NVRTC build this driver cannot
		// load) is dropped and compiled afresh once.
		arch := b.dev.Arch()
		cubin := cachedCubin(b.nvrtc, p, arch)
		fromCache := cubin != nil
		var err error
		for {
			if cubin == nil {
				c, _, err := b.nvrtc.Compile(p.Name, p.Source, arch, compileOptions)
				if err != nil {
					return 0, err
				}
				cubin = c
			}
			err = b.api.check("cuModuleLoadData("+p.Name+")", b.api.cuModuleLoadData(&mod, unsafe.Pointer(&cubin[0])))
			if err == nil {
				if !fromCache {
					storeCubin(b.nvrtc, p, arch, cubin)
				}
				break
			}
			if !fromCache {
				break
			}
			evictCached(b.nvrtc, p, arch)
			cubin, fromCache = nil, false
		}
		if err != nil {
			var de *DriverError
			if errors.As(err, &de) {
				switch cuResult(de.Code) {
				case errNoBinaryForGPU, errUnsupportedPTX, errInvalidPTX, errInvalidImage, errJITCompilerNotFound, errUnsupportedDevSideSync:
					return 0, fmt.Errorf("%w: the kernels were compiled by NVRTC %s for %s and driver %s cannot load them; update the NVIDIA driver, or use an NVRTC no newer than the driver",
						err, b.nvrtc.Version(), b.dev.Arch(), VersionString(b.driverVersion))
				}
			}
			return 0, err
		}
		b.modules[p.Name] = mod
	}
	var f uintptr
	if err := b.api.check("cuModuleGetFunction("+name+")", b.api.cuModuleGetFunction(&f, mod, cStr(name))); err != nil {
		return 0, err
	}
	b.funcs[name] = f
	return f, nil
}
