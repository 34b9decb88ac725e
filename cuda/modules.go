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
	dir := KernelCacheDir()
	var path string
	if dir != "" {
		path = filepath.Join(dir, cacheKey(p, n, arch))
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return b, nil
		}
	}
	cubin, _, err := n.Compile(p.Name, p.Source, arch, compileOptions)
	if err != nil {
		return nil, err
	}
	if path != "" {
		writeCache(path, cubin)
	}
	return cubin, nil
}

func writeCache(path string, b []byte) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return
	}
	_, werr := f.Write(b)
	cerr := f.Close()
	if werr != nil || cerr != nil || os.Rename(f.Name(), path) != nil {
		os.Remove(f.Name())
	}
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
		if b.nvrtcErr != nil {
			return 0, b.nvrtcErr
		}
		cubin, err := CompileProgram(b.nvrtc, p, b.dev.Arch())
		if err != nil {
			return 0, err
		}
		err = b.api.check("cuModuleLoadData("+p.Name+")", b.api.cuModuleLoadData(&mod, unsafe.Pointer(&cubin[0])))
		if err != nil && evictCached(b.nvrtc, p, b.dev.Arch()) {
			// A cached cubin the driver refuses (damaged, or made by an NVRTC
			// build the driver cannot load): compile afresh once.
			if cubin, err = CompileProgram(b.nvrtc, p, b.dev.Arch()); err != nil {
				return 0, err
			}
			err = b.api.check("cuModuleLoadData("+p.Name+")", b.api.cuModuleLoadData(&mod, unsafe.Pointer(&cubin[0])))
			evictCached(b.nvrtc, p, b.dev.Arch()) // it failed or loaded: either way, only a good one stays
			if err == nil {
				writeCache(filepath.Join(KernelCacheDir(), cacheKey(p, b.nvrtc, b.dev.Arch())), cubin)
			}
		}
		if err != nil {
			var de *DriverError
			if errors.As(err, &de) {
				switch cuResult(de.Code) {
				case errNoBinaryForGPU, errUnsupportedPTX, errInvalidImage, errJITCompilerNotFound, errUnsupportedDevSideSync:
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
