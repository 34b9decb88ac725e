package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchPlanPrecision: bench --plan resolves --precision as a run
// does: without --device the plan is a GPU's, where auto is bf16 (BF16
// storage, F32 master weights) and sizes are the caching allocator's; with
// --device cpu auto is the CPU's fp32, in exact bytes; an unknown
// precision is refused before anything runs. The bf16 plan of the same
// step is smaller than the fp32 one.
func TestBenchPlanPrecision(t *testing.T) {
	gpu := filepath.Join("..", "..", "scripts", "gpu")
	dir := t.TempDir()
	// planOf runs kdnative [device] bench --plan … [flags] and reads its JSON.
	planOf := func(name string, device string, flags ...string) map[string]any {
		t.Helper()
		path := filepath.Join(dir, name+".json")
		var args []string
		if device != "" {
			args = append(args, "--device", device)
		}
		args = append(args, "bench", "--plan", "--config", filepath.Join(gpu, "tiny-student.json"),
			"--teacher-config", filepath.Join(gpu, "tiny-teacher.json"), "--batch", "2", "--seq", "16", "--json", path)
		if _, _, err := runApp(t, append(args, flags...)...); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var p map[string]any
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	brk := func(p map[string]any, k string) float64 { return p["breakdown"].(map[string]any)[k].(float64) }
	check := func(name string, p map[string]any, prec, storage string, master bool, rounding string) {
		t.Helper()
		if p["precision"] != prec || p["storage"] != storage || (brk(p, "master_weights") > 0) != master ||
			!strings.Contains(p["rounding"].(string), rounding) {
			t.Errorf("%s: precision %v, storage %v, master weights %v bytes, sizes %v; want %s, %s, master weights %v, %s",
				name, p["precision"], p["storage"], brk(p, "master_weights"), p["rounding"], prec, storage, master, rounding)
		}
	}
	check("auto, no device", planOf("auto", ""), "bf16", "BF16", true, "caching allocator")
	check("auto on the CPU", planOf("cpu", "cpu"), "fp32", "F32", false, "exact")
	bf16 := planOf("bf16", "cpu", "--precision", "bf16")
	check("bf16 on the CPU", bf16, "bf16", "BF16", true, "exact")
	fp32 := planOf("fp32", "cpu", "--precision", "fp32")
	if bf16["peak_bytes"].(float64) >= fp32["peak_bytes"].(float64) || brk(bf16, "weights") >= brk(fp32, "weights") {
		t.Errorf("bf16 plan peak %v (weights %v), fp32 %v (weights %v)", bf16["peak_bytes"], brk(bf16, "weights"), fp32["peak_bytes"], brk(fp32, "weights"))
	}
	if _, _, err := runApp(t, "bench", "--plan", "--precision", "fp16", "--config", filepath.Join(gpu, "tiny-student.json")); err == nil ||
		!strings.Contains(err.Error(), "fp16") {
		t.Errorf("--precision fp16: %v", err)
	}
}
