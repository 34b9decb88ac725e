package cuda

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeTree makes a temporary tree with fake library files (not ELF) in an
// LD_LIBRARY_PATH directory and in two nvidia-* wheel layouts, and returns a
// searchEnv pointing at it.
func fakeTree(t *testing.T) (root string, s searchEnv) {
	t.Helper()
	root = t.TempDir()
	files := []string{
		"ld1/libfoo.so.1",
		"ld1/libfoo.so.1.2.3",
		"ld1/libfoo.so.1.10.0",
		"ld1/libfoobar.so.1", // another library sharing the prefix
		"cudahome/lib64/README",
		"venv/lib/python3.12/site-packages/nvidia/cublas/lib/libfoo.so.1",
		"home/.local/lib/python3.11/site-packages/nvidia/cu13/lib/libfoo.so.13",
	}
	for _, f := range files {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("not a library"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{
		"LD_LIBRARY_PATH": filepath.Join(root, "ld1") + "::" + filepath.Join(root, "missing") + ":" + filepath.Join(root, "ld1"),
		"CUDA_HOME":       filepath.Join(root, "cudahome"),
		"VIRTUAL_ENV":     filepath.Join(root, "venv"),
	}
	return root, searchEnv{
		getenv:  func(k string) string { return env[k] },
		home:    filepath.Join(root, "home"),
		triplet: "x86_64-linux-gnu",
	}
}

func TestSearchDirs(t *testing.T) {
	root, s := fakeTree(t)
	var got []string
	for _, d := range s.dirs() {
		switch {
		case d.dir == "":
			got = append(got, "<"+d.from+">")
		case strings.HasPrefix(d.dir, root):
			got = append(got, strings.TrimPrefix(d.dir, root)+" "+d.from)
		case d.from != "python wheel": // wheels installed on this machine are not ours
			got = append(got, d.dir+" "+d.from)
		}
	}
	want := []string{
		"/ld1 LD_LIBRARY_PATH",
		"/missing LD_LIBRARY_PATH",
		"/cudahome/lib64 CUDA_HOME",
		"/cudahome/lib CUDA_HOME",
		"/usr/local/cuda/lib64 /usr/local/cuda",
		"/usr/lib/x86_64-linux-gnu system",
		"/usr/lib64 system",
		"/usr/lib/wsl/lib system",
		"<dynamic loader>",
		"/venv/lib/python3.12/site-packages/nvidia/cublas/lib python wheel",
		"/home/.local/lib/python3.11/site-packages/nvidia/cu13/lib python wheel",
	}
	if !slices.Equal(got, want) {
		t.Errorf("search dirs:\n got %q\nwant %q", got, want)
	}
}

func TestCandidates(t *testing.T) {
	root, s := fakeTree(t)
	l := Lib{Base: "libfoo", Majors: []int{13, 1}}
	var got []string
	for _, c := range candidates(l, s.dirs()) {
		p := c.path
		if c.bare {
			p = "<bare>/" + p
		} else if !strings.HasPrefix(p, root) {
			continue // a libfoo somewhere on this machine
		}
		got = append(got, strings.TrimPrefix(p, root)+" "+c.soname)
	}
	want := []string{
		"/ld1/libfoo.so.1 libfoo.so.1",
		"/ld1/libfoo.so.1.10.0 libfoo.so.1",
		"/ld1/libfoo.so.1.2.3 libfoo.so.1",
		"<bare>/libfoo.so.13 libfoo.so.13",
		"<bare>/libfoo.so.1 libfoo.so.1",
		"/venv/lib/python3.12/site-packages/nvidia/cublas/lib/libfoo.so.1 libfoo.so.1",
		"/home/.local/lib/python3.11/site-packages/nvidia/cu13/lib/libfoo.so.13 libfoo.so.13",
	}
	if !slices.Equal(got, want) {
		t.Errorf("candidates:\n got %q\nwant %q", got, want)
	}
}

func TestForDriver(t *testing.T) {
	for _, tc := range []struct {
		lib     Lib
		version int
		want    []int
	}{
		{LibCUBLAS, 12040, []int{12}},
		{LibCUBLAS, 13000, []int{13, 12}},
		{LibNVRTC, 11080, nil},
		{LibCUBLASLt, 0, []int{13, 12}}, // unknown driver: no filtering
		{LibCUDA, 12040, []int{1}},      // the driver's own soname is not a CUDA version
	} {
		if got := tc.lib.ForDriver(tc.version).Majors; !slices.Equal(got, tc.want) {
			t.Errorf("%s.ForDriver(%d) = %v, want %v", tc.lib.Base, tc.version, got, tc.want)
		}
	}
	if LibCUBLAS.ForDriver(12040); !slices.Equal(LibCUBLAS.Majors, []int{13, 12}) {
		t.Errorf("ForDriver changed LibCUBLAS: %v", LibCUBLAS.Majors)
	}
}

func TestLoadErrors(t *testing.T) {
	if err := unsupported(); err != nil {
		t.Skip(err)
	}
	root, s := fakeTree(t)

	_, err := load(Lib{Base: "libkdnativenothere", Majors: []int{1}, Hint: "install it"}, s)
	if err == nil {
		t.Fatal("loading a library that does not exist succeeded")
	}
	for _, want := range []string{"libkdnativenothere.so.1 not found", "searched:", filepath.Join(root, "ld1"),
		filepath.Join(root, "cudahome", "lib64"), "/usr/local/cuda/lib64", "dynamic loader",
		"nvidia/cu13/lib", "install it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}

	// The fake libfoo.so.1 is found but is no ELF file: the error says so.
	_, err = load(Lib{Base: "libfoo", Majors: []int{1}}, s)
	if err == nil || !strings.Contains(err.Error(), "found but could not be loaded") ||
		!strings.Contains(err.Error(), filepath.Join(root, "ld1", "libfoo.so.1")) {
		t.Errorf("loading a fake library: %v", err)
	}

	_, err = load(LibNVRTC.ForDriver(11080), s)
	if err == nil || !strings.Contains(err.Error(), "no version this driver can run") {
		t.Errorf("loading with no compatible major: %v", err)
	}
}

func TestCompareVersions(t *testing.T) {
	names := []string{"libx.so.12.2", "libx.so.12.10.1", "libx.so.12", "libx.so.12.9.7"}
	slices.SortFunc(names, compareVersions)
	want := []string{"libx.so.12", "libx.so.12.2", "libx.so.12.9.7", "libx.so.12.10.1"}
	if !slices.Equal(names, want) {
		t.Errorf("sorted %v, want %v", names, want)
	}
}

// TestLoadAndBind exercises dlopen and Bind on a library every glibc system
// has, standing in for the CUDA ones.
func TestLoadAndBind(t *testing.T) {
	if err := unsupported(); err != nil {
		t.Skip(err)
	}
	lib, err := Load(Lib{Base: "libm", Majors: []int{6}})
	if err != nil {
		t.Skipf("no libm.so.6 here: %v", err)
	}
	t.Logf("libm.so.6 from %s (%s)", lib.Path, lib.From)
	var fabs func(float64) float64
	if err := lib.Bind(&fabs, "fabs"); err != nil {
		t.Fatal(err)
	}
	if got := fabs(-2.5); got != 2.5 {
		t.Errorf("fabs(-2.5) = %v", got)
	}
	var missing func()
	if err := lib.Bind(&missing, "kdnative_no_such_symbol"); err == nil ||
		!strings.Contains(err.Error(), "kdnative_no_such_symbol") {
		t.Errorf("binding a missing symbol: %v", err)
	}
	again, err := Load(Lib{Base: "libm", Majors: []int{6}})
	if err != nil || again != lib {
		t.Errorf("second Load: %p, %v; want the cached %p", again, err, lib)
	}
}
