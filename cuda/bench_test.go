package cuda

import (
	"bytes"
	"strings"
	"testing"
)

// TestBenchKernelsRuns runs the kernel benchmark at a tiny shape, so that
// its calls (shapes, dtypes, the sparse teacher it builds) are checked here
// rather than first on the GPU machine, and prints its table.
func TestBenchKernelsRuns(t *testing.T) {
	g := gpuOrSkip(t)
	sh := BenchShape{Tokens: 64, T: 32, Hidden: 48, FFN: 80, NH: 4, NKV: 2, HeadDim: 12, Vocab: 1000}
	ceil := Ceilings{CopyGBs: 1000, BF16TFLOPs: 100}
	rows, err := g.BenchKernels(sh, ceil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 15 {
		t.Errorf("the benchmark measured %d ops", len(rows))
	}
	var buf bytes.Buffer
	if err := WriteKernelTable(&buf, g.Device(), ceil, rows); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Seconds <= 0 || r.Rate <= 0 || r.Fraction <= 0 {
			t.Errorf("%s: %+v", r.Op, r)
		}
		if !strings.Contains(buf.String(), r.Op) {
			t.Errorf("the table lacks %s", r.Op)
		}
	}
	t.Logf("\n%s", buf.String())
}
