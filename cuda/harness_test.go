package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
	"github.com/kdnative/kdnative/runtime/half"
)

// gpuOrSkip returns the CUDA backend on a machine with a GPU. Without one it
// returns the kernel emulator (emu_test.go: the real kernels compiled by g++
// for the CPU behind an emulated driver), and skips only when neither is
// possible, saying why; under KDNATIVE_REQUIRE_EMULATOR=1 (CI) that is a
// failure instead.
func gpuOrSkip(t testing.TB) *Backend {
	t.Helper()
	b, err := Open()
	if err == nil {
		return b
	}
	e, eerr := emulatedBackend()
	if eerr == nil {
		return e
	}
	if os.Getenv("KDNATIVE_REQUIRE_EMULATOR") == "1" {
		t.Fatalf("no NVIDIA GPU (%v), and the kernel emulator is required here but failed: %v", err, eerr)
	}
	t.Skipf("no NVIDIA GPU (the CUDA backend did not open: %v) and no kernel emulator (%v)", err, eerr)
	return nil
}

// pair runs one op on the CPU reference and on the GPU with the same inputs.
type pair struct {
	t   *testing.T
	cpu *cpu.Backend
	gpu *Backend
	rng *rand.Rand
}

func newPair(t *testing.T) *pair {
	t.Helper()
	g := gpuOrSkip(t)
	// A failing run's logged seed replays it: KDNATIVE_TEST_SEED=N.
	seed := rand.Uint64()
	if v, err := strconv.ParseUint(os.Getenv("KDNATIVE_TEST_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (KDNATIVE_TEST_SEED replays it)", seed)
	return &pair{t: t, cpu: cpu.New(), gpu: g, rng: rand.New(rand.NewPCG(seed, 1))}
}

// from makes a CPU F32 tensor and a GPU tensor of dt holding vals; for BF16
// the values are rounded to bf16 first, so both sides see the same inputs.
func (p *pair) from(name string, dt kdrt.DType, vals []float32, shape ...int) (c, g *kdrt.Tensor) {
	p.t.Helper()
	vals = append([]float32(nil), vals...)
	if dt == kdrt.BF16 {
		for i, v := range vals {
			vals[i] = half.BF16ToF32(half.F32ToBF16(v))
		}
	}
	c, err := p.cpu.Alloc(name, kdrt.F32, shape...)
	if err != nil {
		p.t.Fatal(err)
	}
	g, err = p.gpu.Alloc(name, dt, shape...)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := p.cpu.Upload(c, vals); err != nil {
		p.t.Fatal(err)
	}
	if err := p.gpu.Upload(g, vals); err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { p.gpu.Free(g) })
	return c, g
}

// rand is from with uniform values in [-scale, scale).
func (p *pair) rand(name string, dt kdrt.DType, scale float32, shape ...int) (c, g *kdrt.Tensor) {
	vals := make([]float32, kdrt.Numel(shape))
	for i := range vals {
		vals[i] = scale * (2*p.rng.Float32() - 1)
	}
	return p.from(name, dt, vals, shape...)
}

// zeros is from with zeros.
func (p *pair) zeros(name string, dt kdrt.DType, shape ...int) (c, g *kdrt.Tensor) {
	return p.from(name, dt, make([]float32, kdrt.Numel(shape)), shape...)
}

// ints makes I32 tensors holding vals on both backends.
func (p *pair) ints(name string, vals []int32, shape ...int) (c, g *kdrt.Tensor) {
	p.t.Helper()
	c, err := p.cpu.Alloc(name, kdrt.I32, shape...)
	if err != nil {
		p.t.Fatal(err)
	}
	g, err = p.gpu.Alloc(name, kdrt.I32, shape...)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := p.cpu.UploadInt32(c, vals); err != nil {
		p.t.Fatal(err)
	}
	if err := p.gpu.UploadInt32(g, vals); err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { p.gpu.Free(g) })
	return c, g
}

// tolFor is the relative error allowed for a storage dtype: fp32 paths match
// the CPU to 1e-5, bf16 ones to 1e-2.
func tolFor(dt kdrt.DType) float64 {
	if dt == kdrt.BF16 {
		return 1e-2
	}
	return 1e-5
}

// relErr is ‖got − want‖₂ / ‖want‖₂, or the absolute ‖got − want‖₂ when
// ‖want‖₂ is below 1e-6, with the index of the worst element. NaN or Inf
// mismatches count as infinite error.
func relErr(got, want []float32) (err float64, worst int) {
	var num, den, wmax float64
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		if math.IsNaN(g) != math.IsNaN(w) || (math.IsInf(w, 0) || math.IsInf(g, 0)) && g != w {
			return math.Inf(1), i
		}
		if math.IsNaN(w) || math.IsInf(w, 0) {
			continue
		}
		d := g - w
		num += d * d
		den += w * w
		if math.Abs(d) > wmax {
			wmax, worst = math.Abs(d), i
		}
	}
	if den < 1e-12 {
		return math.Sqrt(num), worst
	}
	return math.Sqrt(num / den), worst
}

// values downloads a tensor of either backend as float32 (I32 converted).
func values(t testing.TB, b kdrt.Backend, x *kdrt.Tensor) []float32 {
	t.Helper()
	out := make([]float32, x.Numel())
	if x.DType == kdrt.I32 {
		ints := make([]int32, x.Numel())
		if err := b.DownloadInt32(x, ints); err != nil {
			t.Fatal(err)
		}
		for i, v := range ints {
			out[i] = float32(v)
		}
		return out
	}
	if err := b.Download(x, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// check compares the GPU tensor g with the CPU tensor c.
func (p *pair) check(what string, c, g *kdrt.Tensor, tol float64) {
	p.t.Helper()
	if err := p.gpu.Sync(); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
	if c.Numel() != g.Numel() {
		p.t.Fatalf("%s: CPU %v and GPU %v differ in size", what, c, g)
	}
	want, got := values(p.t, p.cpu, c), values(p.t, p.gpu, g)
	e, i := relErr(got, want)
	if os.Getenv("KDNATIVE_TEST_SHOW_ERR") != "" { // with -v: the margins, to set tolerances by
		p.t.Logf("%s: relative error %.3g (tolerance %.0e)", what, e, tol)
	}
	if e > tol || math.IsNaN(e) {
		p.t.Errorf("%s: relative error %.3g > %.0e; worst element %d: GPU %v, CPU %v", what, e, tol, i, got[i], want[i])
	}
}

// checkRows is check with a second, per-row bound: every row of cols
// elements must be within rowTol of the CPU's relative to the row's norm,
// or to 1e-2 of the largest row norm (and 1e-3) where the row is smaller
// (rows that cancel to about zero carry only rounding).
// A whole-tensor L2 error hides a mistake confined to one row, such as a
// single mask entry.
func (p *pair) checkRows(what string, c, g *kdrt.Tensor, cols int, tol, rowTol float64) {
	p.t.Helper()
	p.check(what, c, g, tol)
	want, got := values(p.t, p.cpu, c), values(p.t, p.gpu, g)
	var maxNorm float64
	norms := make([]float64, len(want)/cols)
	for r := range norms {
		for _, w := range want[r*cols : (r+1)*cols] {
			norms[r] += float64(w) * float64(w)
		}
		norms[r] = math.Sqrt(norms[r])
		maxNorm = max(maxNorm, norms[r])
	}
	worst, worstRow := 0.0, 0
	for r := range norms {
		var d float64
		for i := r * cols; i < (r+1)*cols; i++ {
			x := float64(got[i]) - float64(want[i])
			d += x * x
		}
		e := math.Sqrt(d) / max(norms[r], 1e-2*maxNorm, 1e-3)
		if e > worst || math.IsNaN(e) {
			worst, worstRow = e, r
		}
	}
	if os.Getenv("KDNATIVE_TEST_SHOW_ERR") != "" {
		p.t.Logf("%s: worst row %d, relative error %.3g (tolerance %.0e)", what, worstRow, worst, rowTol)
	}
	if worst > rowTol || math.IsNaN(worst) {
		p.t.Errorf("%s: row %d has relative error %.3g > %.0e", what, worstRow, worst, rowTol)
	}
}

// dtypes are the storage types conformance tests run for ops that store
// activations and weights.
var dtypes = []kdrt.DType{kdrt.F32, kdrt.BF16}

func dtName(dt kdrt.DType) string { return fmt.Sprint(dt) }
