package cuda

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kernels"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/half"
)

// probeProgram is the test-only kernel testdata/emu/mma_probe.cu as a
// program: common.cuh followed by the file, as kernels.Programs builds them.
func probeProgram(t *testing.T) kernels.Program {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "emu", "mma_probe.cu"))
	if err != nil {
		t.Fatal(err)
	}
	return kernels.Program{
		Name:    "mma_probe.cu",
		Source:  kernels.Common() + "\n#line 1 \"mma_probe.cu\"\n" + string(src),
		Kernels: []string{"mma_probe", "mma_probe_diverged", "mma_probe_partial"},
	}
}

// probeBackend is an emulated backend running only the probe program.
func probeBackend(t *testing.T) *Backend {
	t.Helper()
	b, err := newEmulatedWith([]kernels.Program{probeProgram(t)})
	if err != nil {
		if os.Getenv("KDNATIVE_REQUIRE_EMULATOR") == "1" {
			t.Fatalf("the kernel emulator is required here: %v", err)
		}
		t.Skipf("no kernel emulator: %v", err)
	}
	return b
}

// TestEmulatorMMALayouts: the emulator's mma.sync m16n8k16 and ldmatrix
// models compute A·B exactly when a kernel uses the fragment layouts the
// PTX ISA specifies, and a wrong product when it does not: swapped A
// registers, a B tile loaded without .trans, swapped accumulators. The
// reference is a float64 product of the same bf16 values.
func TestEmulatorMMALayouts(t *testing.T) {
	b := probeBackend(t)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 3))
	av, bv := make([]float32, 16*16), make([]float32, 16*8)
	for i := range av {
		av[i] = half.BF16ToF32(half.F32ToBF16(2*r.Float32() - 1))
	}
	for i := range bv {
		bv[i] = half.BF16ToF32(half.F32ToBF16(2*r.Float32() - 1))
	}
	want := make([]float32, 16*8)
	for i := range 16 {
		for j := range 8 {
			var s float64
			for k := range 16 {
				s += float64(av[i*16+k]) * float64(bv[k*8+j])
			}
			want[i*8+j] = float32(s)
		}
	}
	at, err := b.Alloc("a", kdrt.BF16, 16, 16)
	if err != nil {
		t.Fatal(err)
	}
	bt, err := b.Alloc("b", kdrt.BF16, 16, 8)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := b.Alloc("c", kdrt.F32, 16, 8)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Upload(at, av); err != nil {
		t.Fatal(err)
	}
	if err := b.Upload(bt, bv); err != nil {
		t.Fatal(err)
	}
	for variant, name := range []string{"spec layouts", "A registers 1 and 2 swapped", "B without .trans", "C accumulators swapped", "A without ldmatrix"} {
		b.Zero(ct)
		b.launch("probe", "mma_probe", d1(1), d1(32), 768, b.dptr(ct), b.dptr(at), b.dptr(bt), int32(variant))
		if err := b.Sync(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := values(t, b, ct)
		e, worst := relErr(got, want)
		right := variant == 0 || variant == 4
		switch {
		case right && e > 1e-7:
			t.Errorf("%s: relative error %.3g against the float64 product; element %d: %v, want %v", name, e, worst, got[worst], want[worst])
		case !right && e < 0.1:
			t.Errorf("%s: the wrong layout gave a product within %.3g of the right one: the emulator does not model the fragments", name, e)
		}
	}
	// A warp split between mma and a shuffle, and a warp of 16 lanes, are
	// launch failures, not results.
	b.launch("probe", "mma_probe_diverged", d1(1), d1(32), 0, b.dptr(ct))
	if err := b.Sync(); err == nil || !strings.Contains(err.Error(), "different warp-collective ops") {
		t.Errorf("mma in divergent code: Sync gave %v", err)
	}
	b.launch("probe", "mma_probe_partial", d1(1), d1(48), 0, b.dptr(ct))
	if err := b.Sync(); err == nil || !strings.Contains(err.Error(), "16 of 32 lanes") {
		t.Errorf("mma in a partial warp: Sync gave %v", err)
	}
	if math.IsNaN(float64(want[0])) {
		t.Fatal("reference is NaN")
	}
}

// TestProbeCompiles: the probe's inline PTX (common.cuh's mma, ldmatrix,
// cvta and cvt) is accepted by NVRTC and ptxas for sm_80 and sm_90, so the
// emulator's model and the device path are the same helpers.
func TestProbeCompiles(t *testing.T) {
	n := nvrtcOrSkip(t)
	p := probeProgram(t)
	for _, arch := range []string{"sm_80", "sm_90"} {
		if _, log, err := n.Compile(p.Name, p.Source, arch, compileOptions); err != nil {
			t.Fatal(err)
		} else if strings.Contains(log, "warning") {
			t.Errorf("%s: %s", arch, log)
		}
	}
}
