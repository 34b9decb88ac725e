package train

import (
	"image/png"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPlotCompare draws two runs' metrics into one PNG with a panel per
// shared curve, reports their largest relative difference, and refuses a
// missing file with its name.
func TestPlotCompare(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, scale float64) string {
		path := filepath.Join(dir, name)
		var b strings.Builder
		for step := 0; step <= 20; step += 5 {
			writeLine := func(s string) { b.WriteString(s + "\n") }
			if step > 0 {
				writeLine(`{"step":` + strconv.Itoa(step) + `,"loss":` + strconv.FormatFloat(4-0.1*float64(step)*scale, 'g', -1, 64) + `}`)
			}
			writeLine(`{"step":` + strconv.Itoa(step) + `,"eval":{"loss":` + strconv.FormatFloat((3-0.05*float64(step))*scale, 'g', -1, 64) + `,"kl":` + strconv.FormatFloat(1*scale, 'g', -1, 64) + `}}`)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	a, b := write("a.jsonl", 1), write("b.jsonl", 1.01)
	out := filepath.Join(dir, "cmp.png")
	if err := PlotCompare(out, "test", []PlotRun{{"fp32", a}, {"bf16", b}}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() != 800 || img.Bounds().Dy() != 30+3*260 {
		t.Errorf("image %v: want 800 wide with three panels", img.Bounds())
	}
	if d, ok := maxRelDiff([]plotPt{{0, 2}, {5, 4}}, []plotPt{{0, 2.02}, {5, 4}, {7, 1}}); !ok || d < 0.0099 || d > 0.0101 {
		t.Errorf("maxRelDiff = %v, %v; want 1%%", d, ok)
	}
	err = PlotCompare(out, "test", []PlotRun{{"fp32", a}, {"bf16", filepath.Join(dir, "missing.jsonl")}})
	if err == nil || !strings.Contains(err.Error(), "missing.jsonl") {
		t.Errorf("a missing metrics file: %v", err)
	}
}
