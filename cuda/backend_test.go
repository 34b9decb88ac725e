package cuda

import (
	"math"
	"strings"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/half"
)

// TestTransfers: upload and download round-trip each dtype exactly (BF16 to
// its rounding), a Slice view reads and writes its rows of the parent, Copy
// and Zero do what they say, and Alloc zero-fills.
func TestTransfers(t *testing.T) {
	p := newPair(t)
	g := p.gpu
	vals := make([]float32, 6*7)
	for i := range vals {
		vals[i] = p.rng.Float32()*4 - 2
	}
	for _, dt := range dtypes {
		x, err := g.Alloc("x", dt, 6, 7)
		if err != nil {
			t.Fatal(err)
		}
		if got := values(t, g, x); slicesMax(got) != 0 || slicesMin(got) != 0 {
			t.Errorf("%s: Alloc did not zero-fill", dt)
		}
		if err := g.Upload(x, vals); err != nil {
			t.Fatal(err)
		}
		got := values(t, g, x)
		for i, v := range vals {
			want := v
			if dt == kdrt.BF16 {
				want = half.BF16ToF32(half.F32ToBF16(v))
			}
			if got[i] != want {
				t.Fatalf("%s: element %d came back as %v, want %v", dt, i, got[i], want)
			}
		}
		view := g.Slice(x, 2, 4)
		if !kdrt.SameShape(view.Shape, []int{2, 7}) {
			t.Fatalf("slice shape %v", view.Shape)
		}
		if err := g.Upload(view, make([]float32, 14)); err != nil {
			t.Fatal(err)
		}
		want := make([]float32, len(vals))
		for i := range want {
			want[i] = vals[i]
			if dt == kdrt.BF16 {
				want[i] = half.BF16ToF32(half.F32ToBF16(vals[i]))
			}
			if i >= 14 && i < 28 {
				want[i] = 0
			}
		}
		got = values(t, g, x)
		if !equal(got, want) {
			t.Fatalf("%s: after writing rows 2–3 through a view the tensor is %v, want %v", dt, got, want)
		}
		y, err := g.Alloc("y", dt, 42)
		if err != nil {
			t.Fatal(err)
		}
		g.Copy(y, x)
		if got2 := values(t, g, y); !equal(got2, got) {
			t.Errorf("%s: Copy differs from its source", dt)
		}
		g.Zero(y)
		if got2 := values(t, g, y); slicesMax(got2) != 0 || slicesMin(got2) != 0 {
			t.Errorf("%s: Zero left non-zero values", dt)
		}
		g.Free(view) // a view frees nothing
		g.Free(x)
		g.Free(y)
	}
	ids := []int32{3, -1, 1 << 30, 0}
	it, err := g.Alloc("ids", kdrt.I32, 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.UploadInt32(it, ids); err != nil {
		t.Fatal(err)
	}
	back := make([]int32, 4)
	if err := g.DownloadInt32(it, back); err != nil {
		t.Fatal(err)
	}
	for i := range ids {
		if back[i] != ids[i] {
			t.Fatalf("int32 round trip: %v, want %v", back, ids)
		}
	}
	if _, err := g.Alloc("h", kdrt.F16, 3); err == nil || !strings.Contains(err.Error(), "F16") {
		t.Errorf("Alloc of F16: got %v, want an error naming the dtype", err)
	}
	if err := g.Upload(it, []float32{1, 2, 3, 4}); err == nil {
		t.Error("uploading floats to an I32 tensor did not fail")
	}
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestOutOfMemory: an allocation larger than the GPU gives an error with
// the size asked for and the memory free, and the backend stays usable.
func TestOutOfMemory(t *testing.T) {
	g := gpuOrSkip(t)
	n := int(g.Device().TotalMem/4) + (1 << 28) // more float32s than the GPU holds
	_, err := g.Alloc("huge", kdrt.F32, n)
	if err == nil {
		t.Fatalf("allocating %d floats on %s succeeded", n, g.Device())
	}
	if !IsOutOfMemory(err) || !strings.Contains(err.Error(), "huge") || !strings.Contains(err.Error(), "free of") {
		t.Errorf("out-of-memory error %q does not name the tensor and the free memory", err)
	}
	x, err := g.Alloc("small", kdrt.F32, 10)
	if err != nil {
		t.Fatalf("after an out-of-memory error the backend cannot allocate: %v", err)
	}
	g.Free(x)
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestAllocAbsurdShape: a shape whose size overflows is an error; it used to
// wrap around (2⁴⁰ × 2⁴⁰ floats made a tensor of 0 bytes).
func TestAllocAbsurdShape(t *testing.T) {
	g := gpuOrSkip(t)
	for _, shape := range [][]int{{1 << 40, 1 << 40}, {1 << 31, 1 << 31, 3}} {
		if x, err := g.Alloc("w", kdrt.F32, shape...); err == nil || !strings.Contains(err.Error(), "overflows") {
			t.Errorf("Alloc%v: %v, %v; want an overflow error", shape, x, err)
		}
	}
}

// TestFreeMemory: the backend reports the device's memory, and a tensor's
// allocation lowers the free memory by its size class.
func TestFreeMemory(t *testing.T) {
	g := gpuOrSkip(t)
	free, total, ok := kdrt.FreeMemory(g)
	if !ok || total != int64(g.Device().TotalMem) || free <= 0 || free > total {
		t.Fatalf("FreeMemory = %d of %d (%v), device has %d", free, total, ok, g.Device().TotalMem)
	}
	if err := kdrt.CheckFree(g, "a plan", total+1, "make it smaller"); err == nil || !strings.Contains(err.Error(), "make it smaller") {
		t.Errorf("CheckFree of more than the device: %v", err)
	}
}

// TestAllocatorReuses: a freed block serves the next request of its size
// (rounded to 512 bytes) without the driver, and the counters follow.
func TestAllocatorReuses(t *testing.T) {
	g := gpuOrSkip(t)
	x, err := g.Alloc("a", kdrt.F32, 1000)
	if err != nil {
		t.Fatal(err)
	}
	before := g.Memory()
	g.Free(x)
	if after := g.Memory(); after.InUse != before.InUse-RoundSize(4000) || after.Cached != before.Cached+RoundSize(4000) {
		t.Errorf("in use %d → %d, cached %d → %d after freeing a 4000-byte tensor", before.InUse, after.InUse, before.Cached, after.Cached)
	}
	y, err := g.Alloc("b", kdrt.F32, 990) // the same 4096 bytes
	if err != nil {
		t.Fatal(err)
	}
	if after := g.Memory(); after.DriverAllocs != before.DriverAllocs {
		t.Error("the driver was called for a request a freed block fits")
	}
	if got := values(t, g, y); slicesMax(got) != 0 || slicesMin(got) != 0 {
		t.Error("a reused block was not zero-filled")
	}
	g.Free(y)
}

// TestPeakBytes: the high-water mark (runtime.PeakMemory) counts the blocks
// the allocator hands out — a 3 MiB tensor takes 3 MiB, a 4000-byte one
// 4096 bytes (512-byte multiples; the segments they are carved from are
// counted as reserved, not in use) — keeps the peak after a free, and
// ResetPeak brings it down to what is in use.
func TestPeakBytes(t *testing.T) {
	g := gpuOrSkip(t)
	var pm kdrt.PeakMemory = g
	pm.ResetPeak()
	base := g.Memory().InUse
	big, err := g.Alloc("big", kdrt.F32, 3<<20/4)
	if err != nil {
		t.Fatal(err)
	}
	small, err := g.Alloc("small", kdrt.F32, 1000)
	if err != nil {
		t.Fatal(err)
	}
	g.Free(big)
	if got, want := pm.PeakBytes()-base, uint64(3<<20+4096); got != want {
		t.Errorf("peak %d bytes above the start, want %d", got, want)
	}
	pm.ResetPeak()
	if got, want := pm.PeakBytes(), g.Memory().InUse; got != want {
		t.Errorf("after ResetPeak the peak is %d, want the %d bytes in use", got, want)
	}
	g.Free(small)
}

// TestMatMul compares every transpose combination with the CPU, in F32 and
// BF16, with β ≠ 0 accumulating into C.
func TestMatMul(t *testing.T) {
	p := newPair(t)
	for _, dt := range dtypes {
		for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
			M, N, K := 37, 29, 131
			ash, bsh := []int{M, K}, []int{K, N}
			if tr[0] {
				ash = []int{K, M}
			}
			if tr[1] {
				bsh = []int{N, K}
			}
			ac, ag := p.rand("a", dt, 1, ash...)
			bc, bg := p.rand("b", dt, 1, bsh...)
			cc, cg := p.rand("c", dt, 1, M, N)
			p.cpu.MatMul(cc, ac, bc, tr[0], tr[1], 0.7, 0.3)
			p.gpu.MatMul(cg, ag, bg, tr[0], tr[1], 0.7, 0.3)
			p.check("matmul "+dtName(dt), cc, cg, tolFor(dt))
		}
	}
}

// TestBatchedMatMul compares a strided batch of products with one CPU
// MatMul per matrix.
func TestBatchedMatMul(t *testing.T) {
	p := newPair(t)
	const count, M, N, K = 5, 9, 11, 17
	for _, tr := range [][2]bool{{false, false}, {true, true}} {
		ac, ag := p.rand("a", kdrt.F32, 1, count, M*K)
		bc, bg := p.rand("b", kdrt.F32, 1, count, K*N)
		cc, cg := p.zeros("c", kdrt.F32, count, M*N)
		p.gpu.BatchedMatMul(cg, ag, bg, tr[0], tr[1], M, N, K, count, M*K, K*N, M*N, 1, 0)
		for i := range count {
			ai, bi, ci := p.cpu.Slice(ac, i, i+1), p.cpu.Slice(bc, i, i+1), p.cpu.Slice(cc, i, i+1)
			ash, bsh := []int{M, K}, []int{K, N}
			if tr[0] {
				ash = []int{K, M}
			}
			if tr[1] {
				bsh = []int{N, K}
			}
			ai.Shape, bi.Shape, ci.Shape = ash, bsh, []int{M, N}
			p.cpu.MatMul(ci, ai, bi, tr[0], tr[1], 1, 0)
		}
		p.check("batched matmul", cc, cg, 1e-5)
	}
}

func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !(math.IsNaN(float64(a[i])) && math.IsNaN(float64(b[i]))) {
			return false
		}
	}
	return true
}

func slicesMax(x []float32) float32 {
	m := float32(math.Inf(-1))
	for _, v := range x {
		m = max(m, v)
	}
	return m
}

func slicesMin(x []float32) float32 {
	m := float32(math.Inf(1))
	for _, v := range x {
		m = min(m, v)
	}
	return m
}
