package cuda

import (
	"strings"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/backendtest"
)

// TestBF16Conformance runs the BF16 conformance suite (runtime/backendtest)
// on the GPU, or on the kernel emulator: every op the bf16 path uses, with
// BF16 storage and F32 gradients where mixed precision keeps them, against
// the CPU's F32 ops within √k·2⁻⁸.
func TestBF16Conformance(t *testing.T) { backendtest.BF16(t, gpuOrSkip(t)) }

// TestPrecisionTF32: tf32 rounds an F32 product's inputs to TF32 (cuBLAS's
// math mode; modelled exactly by the emulator, on a GPU within TF32's
// rounding), fp32 gives the exact F32 product again, and bf16 leaves F32
// products alone too.
func TestPrecisionTF32(t *testing.T) {
	g := gpuOrSkip(t)
	t.Cleanup(func() {
		if err := g.SetPrecision(kdrt.PrecisionFP32); err != nil {
			t.Error(err)
		}
	})
	// 1 + 2⁻¹² is exact in F32 and rounds to 1 in TF32 (10 mantissa bits).
	const x = 1 + 1.0/4096
	a, _ := g.Alloc("a", kdrt.F32, 1, 1)
	b, _ := g.Alloc("b", kdrt.F32, 1, 1)
	c, _ := g.Alloc("c", kdrt.F32, 1, 1)
	defer g.Free(a)
	defer g.Free(b)
	defer g.Free(c)
	g.Upload(a, []float32{x})
	g.Upload(b, []float32{x})
	product := func() float32 {
		g.MatMul(c, a, b, false, false, 1, 0)
		v := make([]float32, 1)
		if err := g.Download(c, v); err != nil {
			t.Fatal(err)
		}
		return v[0]
	}
	for _, p := range []kdrt.Precision{kdrt.PrecisionTF32, kdrt.PrecisionFP32, kdrt.PrecisionBF16} {
		if err := g.SetPrecision(p); err != nil {
			t.Fatal(err)
		}
		want := float32(x * x)
		if p == kdrt.PrecisionTF32 {
			want = 1
		}
		if got := product(); got != want {
			t.Errorf("precision %s: (1 + 2⁻¹²)² = %.10g, want %.10g", p, got, want)
		}
	}
}

// TestPrecisionNeedsAmpere: bf16 or tf32 on a GPU older than compute
// capability 8.0 is an error naming the GPU and what to use instead, and
// auto means fp32 there.
func TestPrecisionNeedsAmpere(t *testing.T) {
	b := &Backend{dev: DeviceInfo{Name: "Tesla V100-SXM2-16GB", Major: 7, Minor: 0}}
	for _, p := range []kdrt.Precision{kdrt.PrecisionBF16, kdrt.PrecisionTF32} {
		err := b.SetPrecision(p)
		if err == nil {
			t.Fatalf("precision %s accepted on a compute capability 7.0 GPU", p)
		}
		for _, want := range []string{"Tesla V100-SXM2-16GB", "7.0", "8.0", "--precision fp32", p.String()} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	}
	if p := b.DefaultPrecision(); p != kdrt.PrecisionFP32 {
		t.Errorf("auto on sm_70 is %s, want fp32", p)
	}
	if p := (&Backend{dev: DeviceInfo{Major: 9}}).DefaultPrecision(); p != kdrt.PrecisionBF16 {
		t.Errorf("auto on sm_90 is %s, want bf16", p)
	}
}

// TestMatMulMixedTypes: the F32 product of BF16 operands (logits, weight
// gradients) equals the F32 product of the same values; operands of two
// dtypes, or an F32 product into BF16, are refused as cuBLAS refuses them.
func TestMatMulMixedTypes(t *testing.T) {
	p := newPair(t)
	ac, ag := p.rand("a", kdrt.BF16, 1, 5, 7)
	bc, bg := p.rand("b", kdrt.BF16, 1, 9, 7)
	cc, cg := p.rand("c", kdrt.F32, 1, 5, 9)
	p.cpu.MatMul(cc, ac, bc, false, true, 1, 1)
	p.gpu.MatMul(cg, ag, bg, false, true, 1, 1)
	p.check("F32 = BF16·BF16ᵀ + F32", cc, cg, 1e-6)
	_, af := p.rand("a32", kdrt.F32, 1, 5, 7)
	_, c16 := p.rand("c16", kdrt.BF16, 1, 5, 9)
	for name, f := range map[string]func(){
		"F32·BF16":       func() { p.gpu.MatMul(cg, af, bg, false, true, 1, 0) },
		"BF16 = F32·F32": func() { p.gpu.MatMul(c16, af, af, false, true, 1, 0) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s was accepted", name)
				}
			}()
			f()
		}()
	}
}
