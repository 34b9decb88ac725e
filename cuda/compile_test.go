package cuda

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/kdnative/kdnative/kernels"
)

// requireNVRTC is set by CI (.ci/run): there the compile check must fail,
// not skip, when NVRTC cannot be loaded.
func requireNVRTC() bool { return os.Getenv("KDNATIVE_REQUIRE_NVRTC") == "1" }

// nvrtcOrSkip loads NVRTC, or skips the test saying why (fails it in CI).
func nvrtcOrSkip(t *testing.T) *NVRTC {
	t.Helper()
	n, err := LoadNVRTC(0)
	if err != nil {
		if requireNVRTC() {
			t.Fatalf("NVRTC is required here (KDNATIVE_REQUIRE_NVRTC=1) but did not load: %v", err)
		}
		t.Skipf("NVRTC not installed, so the kernels cannot be compiled here (pip install nvidia-cuda-nvrtc): %v", err)
	}
	return n
}

// TestKernelsCompile compiles every kernel program through our own NVRTC
// binding for the architectures kdnative supports in practice (A100: sm_80,
// H100/H200: sm_90), without a GPU. A kernel that does not compile, or that
// warns, fails here. It logs ptxas's resource use of every kernel (go test
// -v -run TestKernelsCompile shows the table): registers, static shared
// memory, and local-memory spills.
func TestKernelsCompile(t *testing.T) {
	n := nvrtcOrSkip(t)
	t.Logf("NVRTC %s from %s", n.Version(), n.Path())
	progs := kernels.Programs()
	if len(progs) == 0 {
		t.Fatal("no kernel programs embedded")
	}
	for _, arch := range []string{"sm_80", "sm_90"} {
		for _, p := range progs {
			t.Run(arch+"/"+p.Name, func(t *testing.T) {
				opts := append(append([]string{}, compileOptions...), "--ptxas-options=-v")
				cubin, log, err := n.Compile(p.Name, p.Source, arch, opts)
				if err != nil {
					t.Fatal(err)
				}
				usage := ptxasUsage(log)
				var sb strings.Builder
				fmt.Fprintf(&sb, "ptxas resource use, %s %s:\n", p.Name, arch)
				for _, k := range p.Kernels {
					u, ok := usage[k]
					if !ok {
						t.Errorf("%s: ptxas reported nothing for kernel %s:\n%s", p.Name, k, log)
						continue
					}
					fmt.Fprintf(&sb, "  %-34s %3d registers %6d B smem %4d B spilled\n", k, u.Registers, u.SharedBytes, u.SpillBytes)
					if bound := p.Bounds[k]; bound > 0 && u.Registers*bound > 65536 {
						t.Errorf("%s: %d registers × __launch_bounds__(%d) exceed an SM's 65536", k, u.Registers, bound)
					}
				}
				if p.Name == "attention_mma.cu" {
					// Their tiles are dynamic shared memory, sized by the launcher.
					for _, hd := range []int{64, 80, 96, 128} {
						for _, k := range []struct {
							name  string
							bytes int
						}{{"fwd", attnMMAFwdSmem(hd)}, {"bwd_dq", attnMMADQSmem(hd)}, {"bwd_dkv", attnMMADKVSmem(hd)}} {
							fmt.Fprintf(&sb, "  attn_mma_%s_%d: %d B dynamic smem\n", k.name, hd, k.bytes)
							// 99 KiB is the most a block may opt into on sm_86/sm_89.
							if k.bytes > 99<<10 {
								t.Errorf("attn_mma_%s_%d asks for %d B of shared memory, above the 99 KiB every sm_80+ GPU allows", k.name, hd, k.bytes)
							}
						}
					}
				}
				t.Log(sb.String())
				if strings.Contains(log, "warning") {
					t.Errorf("%s for %s compiles with warnings:\n%s", p.Name, arch, log)
				}
				// An ELF cubin, and every kernel the source declares is in it
				// under its extern "C" name.
				if len(cubin) < 4 || string(cubin[:4]) != "\x7fELF" {
					t.Fatalf("%s: NVRTC returned %d bytes that are not an ELF cubin", p.Name, len(cubin))
				}
				for _, k := range p.Kernels {
					if !strings.Contains(string(cubin), "\x00"+k+"\x00") {
						t.Errorf("%s: kernel %s is not in the cubin's symbols", p.Name, k)
					}
				}
			})
		}
	}
}

// ptxasInfo is one kernel's resource use as ptxas -v reports it.
type ptxasInfo struct {
	Registers, SharedBytes, SpillBytes int
}

var (
	ptxasEntryRe = regexp.MustCompile(`Compiling entry function '([A-Za-z0-9_]+)'`)
	ptxasSpillRe = regexp.MustCompile(`(\d+) bytes spill stores`)
	ptxasUsedRe  = regexp.MustCompile(`Used (\d+) registers`)
	ptxasSmemRe  = regexp.MustCompile(`(\d+) bytes smem`)
)

// ptxasUsage parses NVRTC's log of a compile with --ptxas-options=-v: per
// entry function, the lines after "Compiling entry function 'NAME'".
func ptxasUsage(log string) map[string]ptxasInfo {
	out := map[string]ptxasInfo{}
	cur := ""
	for _, line := range strings.Split(log, "\n") {
		if m := ptxasEntryRe.FindStringSubmatch(line); m != nil {
			cur = m[1]
			out[cur] = ptxasInfo{}
			continue
		}
		if cur == "" {
			continue
		}
		u := out[cur]
		if m := ptxasSpillRe.FindStringSubmatch(line); m != nil {
			u.SpillBytes, _ = strconv.Atoi(m[1])
		}
		if m := ptxasUsedRe.FindStringSubmatch(line); m != nil {
			u.Registers, _ = strconv.Atoi(m[1])
			if m := ptxasSmemRe.FindStringSubmatch(line); m != nil {
				u.SharedBytes, _ = strconv.Atoi(m[1])
			}
		}
		out[cur] = u
	}
	return out
}

// TestLaunchBounds: a block above 256 threads needs a kernel declared with
// __launch_bounds__ at least that large; the backend refuses the launch
// otherwise, naming the kernel.
func TestLaunchBounds(t *testing.T) {
	b := &Backend{index: kernelIndex()}
	for _, c := range []struct {
		kernel  string
		threads uint32
		want    string
	}{
		{"ew_scale_f32", 256, ""},
		{"ew_scale_f32", 512, "has no __launch_bounds__"},
		{"norm_rmsnorm_bf16", 1024, ""},
		{"attn_mma_fwd_64", 128, ""},
		{"attn_mma_fwd_64", 288, "above its __launch_bounds__(128)"},
	} {
		err := b.checkBlock(c.kernel, dim3{c.threads, 1, 1})
		if (err == nil) != (c.want == "") || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s with %d threads: %v, want %q", c.kernel, c.threads, err, c.want)
		}
	}
}

// TestCompileErrorShowsLog: a kernel that does not compile gives an error
// carrying NVRTC's log with the file and line.
func TestCompileErrorShowsLog(t *testing.T) {
	n := nvrtcOrSkip(t)
	src := kernels.Common() + "\n#line 1 \"broken.cu\"\nextern \"C\" __global__ void broken(float* x) {\n  x[0] = undeclared_thing;\n}\n"
	_, _, err := n.Compile("broken.cu", src, "sm_90", compileOptions)
	ce, ok := err.(*CompileError)
	if !ok {
		t.Fatalf("compiling a broken kernel: got %v, want a *CompileError", err)
	}
	if !strings.Contains(ce.Log, "broken.cu(2)") || !strings.Contains(ce.Log, "undeclared_thing") {
		t.Errorf("the log does not point at broken.cu line 2:\n%s", ce.Log)
	}
	if !strings.Contains(err.Error(), "broken.cu") || !strings.Contains(err.Error(), "sm_90") {
		t.Errorf("error %q does not name the program and architecture", err)
	}
}

// TestCompileCacheKey: the disk cache's key changes with the source, the
// architecture and the NVRTC version, and CompileProgram's second call is
// served from the cache.
func TestCompileCache(t *testing.T) {
	n := nvrtcOrSkip(t)
	dir := t.TempDir()
	t.Setenv("KDNATIVE_KERNEL_CACHE", dir)
	p := kernels.Programs()[0]
	k80, k90 := cacheKey(p, n, "sm_80"), cacheKey(p, n, "sm_90")
	q := p
	q.Source += "\n// edited\n"
	if k80 == k90 || cacheKey(q, n, "sm_80") == k80 {
		t.Fatalf("cache keys do not separate architectures or sources: %s %s", k80, k90)
	}
	m := *n
	m.Minor++
	if cacheKey(p, &m, "sm_80") == k80 {
		t.Fatal("cache key ignores the NVRTC version")
	}
	first, err := CompileProgram(n, p, "sm_80")
	if err != nil {
		t.Fatal(err)
	}
	path := dir + "/" + k80
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no cache file after compiling: %v", err)
	}
	// Plant a marker in the cache file: the second call must return it.
	marked := append(slices.Clone(first), "cached"...)
	if err := os.WriteFile(path, marked, 0o644); err != nil {
		t.Fatal(err)
	}
	second, err := CompileProgram(n, p, "sm_80")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(second), "cached") {
		t.Error("the second CompileProgram did not read the disk cache")
	}
}

// TestKernelCacheWrite: a cubin reaches the cache whole, in a folder made
// for it; one that cannot be put in place (a folder that is not empty stands
// at its name) leaves what was there and no temporary file, and is not an
// error (writeCache reports none). Needs no NVRTC.
func TestKernelCacheWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kernels")
	path := filepath.Join(dir, "prog-sm_90.cubin")
	cubin := []byte("\x7fELF a cubin")
	writeCache(path, cubin)
	if got, err := os.ReadFile(path); err != nil || string(got) != string(cubin) {
		t.Fatalf("cache holds %q (%v), want %q", got, err, cubin)
	}
	blocked := filepath.Join(dir, "blocked.cubin")
	if err := os.MkdirAll(blocked, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(blocked, "keep"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeCache(blocked, cubin)
	if got, _ := os.ReadFile(filepath.Join(blocked, "keep")); string(got) != "kept" {
		t.Fatalf("a failed cache write changed what stood there: %q", got)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("cache folder holds %v, want the cubin and the folder alone", ents)
	}
}

// TestLaunchedKernelsExist: every kernel name the Go code launches (a string
// literal passed to launch or kernelFor) is defined by some program, so a
// typo is caught without a GPU.
func TestLaunchedKernelsExist(t *testing.T) {
	defined := map[string]bool{}
	for _, p := range kernels.Programs() {
		for _, k := range p.Kernels {
			defined[k] = true
		}
	}
	launchRe := regexp.MustCompile(`\.launch\(\s*[^,]+,\s*"([A-Za-z0-9_]+)"`)
	forRe := regexp.MustCompile(`kernelFor\(\s*"([A-Za-z0-9_]+)"`)
	files, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, f := range files {
		if !strings.HasSuffix(f.Name(), ".go") || strings.HasSuffix(f.Name(), "_test.go") {
			continue
		}
		src, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range launchRe.FindAllStringSubmatch(string(src), -1) {
			seen++
			if !defined[m[1]] {
				t.Errorf("%s launches kernel %s, which no kernels/*.cu defines", f.Name(), m[1])
			}
		}
		for _, m := range forRe.FindAllStringSubmatch(string(src), -1) {
			seen++
			if !defined[m[1]+"_f32"] || !defined[m[1]+"_bf16"] {
				t.Errorf("%s uses kernelFor(%q), but kernels/*.cu lacks %s_f32 or %s_bf16", f.Name(), m[1], m[1], m[1])
			}
		}
	}
	if seen == 0 {
		t.Error("found no kernel launch sites: the patterns no longer match the code")
	}
}

// TestDriverTooOldForKernels: when the driver refuses the cubins NVRTC made
// (CUDA_ERROR_UNSUPPORTED_PTX_VERSION, as a driver older than NVRTC gives),
// the error says so and what to do, and no refused cubin stays in the disk
// cache; a refused cubin from the cache is compiled afresh once before
// giving up.
func TestDriverTooOldForKernels(t *testing.T) {
	n := nvrtcOrSkip(t)
	dir := t.TempDir()
	t.Setenv("KDNATIVE_KERNEL_CACHE", dir)
	loads := 0
	api := &ctxAPI{driverAPI: &driverAPI{
		cuGetErrorName: func(r cuResult, s **byte) cuResult { *s = cStr("CUDA_ERROR_UNSUPPORTED_PTX_VERSION"); return 0 },
		cuGetErrorString: func(r cuResult, s **byte) cuResult {
			*s = cStr("the provided PTX was compiled with an unsupported toolchain")
			return 0
		},
	}}
	api.cuModuleLoadData = func(mod *uintptr, image unsafe.Pointer) cuResult { loads++; return errUnsupportedPTX }
	b := &Backend{api: api, nvrtc: n, driverVersion: 12020, dev: DeviceInfo{Major: 9}, index: kernelIndex(),
		modules: map[string]uintptr{}, funcs: map[string]uintptr{}}
	for _, cached := range []bool{false, true} {
		loads = 0
		if cached {
			if _, err := CompileProgram(n, b.index["ew_scale_f32"], "sm_90"); err != nil {
				t.Fatal(err)
			}
		}
		_, err := b.function("ew_scale_f32")
		if err == nil || !strings.Contains(err.Error(), "update the NVIDIA driver") || !strings.Contains(err.Error(), "driver 12.2") {
			t.Fatalf("a driver refusing the kernels: got %v, want advice to update the driver", err)
		}
		if want := map[bool]int{false: 1, true: 2}[cached]; loads != want {
			t.Errorf("cached %v: the driver was asked to load %d times, want %d", cached, loads, want)
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("cached %v: a cubin the driver refused is in the cache: %v", cached, left)
		}
	}
}
