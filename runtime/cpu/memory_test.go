package cpu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// withMemInfo points FreeMemory at a meminfo file with the given contents
// ("" for none) for the test's duration.
func withMemInfo(t *testing.T, contents string) {
	t.Helper()
	old := memInfoPath
	t.Cleanup(func() { memInfoPath = old })
	memInfoPath = filepath.Join(t.TempDir(), "meminfo")
	if contents != "" {
		if err := os.WriteFile(memInfoPath, []byte(contents), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFreeMemoryParsesMeminfo(t *testing.T) {
	withMemInfo(t, "MemTotal:       24683664 kB\nMemFree:        18223400 kB\nMemAvailable:   23201212 kB\nBuffers:  1 kB\n")
	free, total, ok := New().FreeMemory()
	if !ok || free != 23201212<<10 || total != 24683664<<10 {
		t.Fatalf("FreeMemory = %d, %d, %v", free, total, ok)
	}
	withMemInfo(t, "MemTotal: 5 kB\n") // no MemAvailable (kernels before 3.14)
	if _, _, ok := New().FreeMemory(); ok {
		t.Fatal("FreeMemory claims to know without MemAvailable")
	}
	withMemInfo(t, "")
	if _, _, ok := New().FreeMemory(); ok {
		t.Fatal("FreeMemory claims to know without a meminfo file")
	}
}

// TestAllocRefusesAbsurdSizes: the head_dim of 2⁴⁰ made Alloc panic
// in make (or, where the product wrapped to a small number, silently return
// a tensor of the wrong size). Sizes that overflow, or exceed the available
// memory, are errors that give the numbers.
func TestAllocRefusesAbsurdSizes(t *testing.T) {
	withMemInfo(t, "MemTotal: 2097152 kB\nMemAvailable: 1048576 kB\n") // 2 GiB, 1 GiB available
	be := New()
	for _, c := range []struct {
		name  string
		shape []int
		want  []string
	}{
		{"wraps to zero", []int{1 << 40, 1 << 40}, []string{"overflows"}},
		{"wraps", []int{1 << 31, 1 << 31, 3}, []string{"overflows"}},
		{"2 GiB", []int{1 << 29}, []string{"needs 2.1 GB", "1.1 GB free of 2.1 GB"}},
		{"issue's head_dim", []int{576, 1 << 40}, []string{"needs 2.5 PB"}},
	} {
		tt, err := be.Alloc("w", kdrt.F32, c.shape...)
		if err == nil {
			t.Errorf("%s: Alloc%v gave %v", c.name, c.shape, tt)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", c.name, err, w)
			}
		}
	}
	_, err := be.Alloc("w", kdrt.F32, 1<<29)
	var oom *kdrt.OutOfMemoryError
	if !errors.As(err, &oom) || oom.Need != 1<<31 || oom.Free != 1<<30 {
		t.Errorf("Alloc of 2 GiB: %v is not an OutOfMemoryError with the numbers", err)
	}
	// Below the free memory, allocations succeed as before.
	if _, err := be.Alloc("ok", kdrt.F32, 1<<25); err != nil {
		t.Errorf("Alloc of 128 MiB with 1 GiB available: %v", err)
	}
	// Without a meminfo, only what no process could address is refused.
	withMemInfo(t, "")
	if _, err := be.Alloc("w", kdrt.F32, 1<<45); err == nil || !strings.Contains(err.Error(), "more than this process can address") {
		t.Errorf("Alloc of 128 TiB without meminfo: %v", err)
	}
}
