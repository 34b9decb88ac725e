package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/cuda"
)

// TestGPUCheckSummary feeds scripts/gpu/summarize.py what the GPU check's
// stages write — `kdnative bench --teacher-config … --json` run here on the
// CPU, the kernel table as cuda.WriteKernelTable prints it, go test and go
// benchmark output, torch_bench.py's JSON lines — and checks that
// results.json carries each figure and the comparisons computed from them,
// and that summary.txt shows them.
func TestGPUCheckSummary(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 here to run scripts/gpu/summarize.py")
	}
	gpu := filepath.Join("..", "..", "scripts", "gpu")
	dir := t.TempDir()
	res := filepath.Join(dir, "results")
	if err := os.MkdirAll(filepath.Join(res, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(res, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// kdnative's KD step, through the command's own flags.
	kdJSON := filepath.Join(res, "kd.json")
	out, _, err := runApp(t, "--device", "cpu", "bench", "--config", filepath.Join(gpu, "tiny-student.json"),
		"--teacher-config", filepath.Join(gpu, "tiny-teacher.json"), "--batch", "2", "--seq", "16", "--steps", "1", "--json", kdJSON)
	if err != nil {
		t.Fatal(err)
	}
	write("logs/kd.log", out+"per step: 2 host syncs, 1234 launches\n")
	var kd map[string]any
	b, err := os.ReadFile(kdJSON)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &kd); err != nil {
		t.Fatal(err)
	}
	if kd["step"] != "kd" || kd["precision"] != "F32" || !strings.Contains(out, "KD step") {
		t.Fatalf("bench --teacher-config wrote %s and printed %q", b, out)
	}
	kdTokens := kd["tokens_per_s"].(float64)

	// The kernel table.
	rows := []cuda.KernelBench{
		{Op: "matmul BF16", Shape: "[4096 896]·[4864 896]ᵀ", Seconds: 1.5e-4, Rate: 238.2, Unit: "TFLOP/s", Fraction: 0.30},
		{Op: "forward KL + grad (dense)", Shape: "[1024 151936]", Seconds: 2.5e-4, Rate: 3987.5, Unit: "GB/s", Fraction: 0.93},
	}
	var kt bytes.Buffer
	if err := cuda.WriteKernelTable(&kt, cuda.DeviceInfo{Name: "NVIDIA H200", TotalMem: 150 << 30, Major: 9}, cuda.Ceilings{CopyGBs: 4300, BF16TFLOPs: 790.5}, rows); err != nil {
		t.Fatal(err)
	}
	write("logs/kernels.log", kt.String())

	write("logs/kdloss.log", "goos: linux\n"+
		"BenchmarkKDFusedVsPlainGPU/fused/N=8192,C=896,V=151936-16         \t       3\t 200000000 ns/op\t       376.0 peak-MB\t     40960 tokens/s\n"+
		"BenchmarkKDFusedVsPlainGPU/plain/N=8192,C=896,V=151936-16         \t       3\t 400000000 ns/op\t     15000 peak-MB\t     20480 tokens/s\nPASS\n")
	write("logs/decode.log", "goos: linux\n"+
		"BenchmarkDecodeGPU/graphs=1/rows=16,prompt=128-16         \t     200\t   4000000 ns/op\t         1.050 launches/step\t         1.000 syncs/step\t      4000 tokens/s\n"+
		"BenchmarkDecodeGPU/graphs=0/rows=16,prompt=128-16         \t     200\t  10000000 ns/op\t      1300 launches/step\t         1.000 syncs/step\t      1600 tokens/s\nPASS\n")
	write("logs/tests.log", "=== RUN   TestMatMul\n--- PASS: TestMatMul (0.10s)\n=== RUN   TestAttention\n"+
		"    --- FAIL: TestAttention/bf16 (0.01s)\n--- FAIL: TestAttention (0.02s)\n--- SKIP: TestEmu (0.00s)\nFAIL\n")
	// PyTorch: twice kdnative's tokens/s, plain; Liger at the same speed with more memory.
	torchRow := func(row string, tokens, mem float64) string {
		return fmt.Sprintf(`{"row": %q, "what": "kd step", "step_s": %g, "tokens_per_s": %g, "model_flops_per_step": 1e12, "peak_device_mb": %g, "precision": "bf16 autocast"}`+"\n",
			row, 32/tokens, tokens, mem)
	}
	write("torch-kd-plain.jsonl", `{"what": "environment", "device": "NVIDIA H200", "torch": "2.11.0"}`+"\n"+torchRow("kd-plain", 2*kdTokens, 1000))
	write("torch-kd-liger.jsonl", torchRow("kd-liger", kdTokens, 500))
	write("torch-student.jsonl", `{"row": "student", "what": "student step", "error": "ModuleNotFoundError: No module named 'transformers'"}`+"\n")
	write("env.json", `{"mode": "gpu", "gpu": "NVIDIA H200", "batch": 2, "seq": 16, "steps": 1}`)
	write("stages.jsonl", `{"stage": "kd", "status": "ok", "seconds": 3, "budget_s": 150}`+"\n"+
		`{"stage": "student", "status": "timeout", "rc": 124, "seconds": 90, "budget_s": 90}`+"\n"+
		`{"stage": "kdloss", "status": "ok", "seconds": 9, "budget_s": 75}`+"\n"+
		`{"stage": "tests-long", "status": "failed", "rc": 2, "seconds": 120, "budget_s": 120}`+"\n")
	// A bench stopped by its time limit after one timed step of two seconds:
	// its progress lines still give the step's tokens/s.
	write("logs/student.log", "cuda: NVIDIA H200: qwen2, 24 layers; batch 2 × 16 tokens\nwarm-up step 9.000 s\nstep 1/3 2.000 s\n")
	write("logs/tests-long.log", "=== RUN   TestDemoMatchesCPU\npanic: test timed out after 1m55s\n\trunning tests:\n\t\tTestDemoMatchesCPU (1m55s)\n\ngoroutine 1 [running]:\nFAIL\n")

	cmd := exec.Command(py, filepath.Join(gpu, "summarize.py"), res)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("summarize.py: %v\n%s", err, msg)
	}
	var got struct {
		Kdnative map[string]map[string]any
		Torch    map[string]map[string]any
		Kernels  struct {
			CopyGBs float64 `json:"copy_gbs"`
			GEMM    float64 `json:"bf16_gemm_tflops"`
			Rows    []map[string]any
		}
		KDLoss     map[string]any            `json:"kd_loss"`
		Decode     map[string]any            `json:"decode"`
		Tests      map[string]map[string]any `json:"tests"`
		Comparison map[string]map[string]*float64
		Goals      map[string]*bool
	}
	b, err = os.ReadFile(filepath.Join(res, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	near := func(what string, a, want float64) {
		t.Helper()
		if math.Abs(a-want) > 1e-9*math.Abs(want) {
			t.Errorf("%s = %g, want %g", what, a, want)
		}
	}
	if k := got.Kdnative["kd_step"]; k["syncs_per_step"] != 2.0 || k["launches_per_step"] != 1234.0 || k["tokens_per_s"] != kdTokens {
		t.Errorf("kdnative's KD step: %v", k)
	}
	near("GEMM ceiling", got.Kernels.GEMM, 790.5)
	near("copy ceiling", got.Kernels.CopyGBs, 4300)
	if len(got.Kernels.Rows) != 2 || got.Kernels.Rows[1]["op"] != "forward KL + grad (dense)" || got.Kernels.Rows[1]["rate"] != 3987.5 {
		t.Errorf("kernel rows %v from\n%s", got.Kernels.Rows, kt.String())
	}
	near("PyTorch's MFU of the GEMM ceiling", got.Torch["kd_plain"]["mfu_of_gemm_ceiling"].(float64), 1e12/(32/(2*kdTokens))/790.5e12)
	near("fused speedup", got.KDLoss["fused_speedup"].(float64), 2)
	near("fused memory fraction", got.KDLoss["fused_memory_fraction"].(float64), 376.0/15000)
	near("decode speedup with graphs", got.Decode["graphs_speedup"].(float64), 4000.0/1600)
	if d, ok := got.Decode["no_graphs"].(map[string]any); !ok || d["launches_per_step"] != 1300.0 || d["step_s"] != 0.01 || d["rows"] != 16.0 {
		t.Errorf("decode without graphs: %v", got.Decode["no_graphs"])
	}
	if tt := got.Tests["tests"]; tt["passed"] != 1.0 || tt["failed"] != 1.0 || tt["skipped"] != 1.0 {
		t.Errorf("tests %v", tt)
	}
	if tt := got.Tests["tests-long"]; tt["timed_out_after"] != "1m55s" || fmt.Sprint(tt["running_at_timeout"]) != "[TestDemoMatchesCPU]" {
		t.Errorf("tests-long %v", tt)
	}
	if st := got.Kdnative["student_step"]; st["partial"] != true || st["tokens_per_s"] != 16.0 {
		t.Errorf("the student step stopped after one 2 s step of 2 × 16 tokens: %v", st)
	}
	c := got.Comparison["kd_step"]
	near("kd vs PyTorch", *c["tokens_per_s_vs_torch"], 0.5)
	near("kd vs PyTorch+Liger", *c["tokens_per_s_vs_torch_liger"], 1)
	if c["memory_vs_torch"] != nil {
		t.Errorf("a memory ratio without kdnative's high-water mark (the CPU has none): %v", *c["memory_vs_torch"])
	}
	if g := got.Goals["milestone: KD tokens/s >= PyTorch bf16"]; g == nil || *g {
		t.Errorf("milestone reached at 0.5× PyTorch's speed: %v", g)
	}
	summary, err := os.ReadFile(filepath.Join(res, "summary.txt"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("summary.txt:\n%s", summary)
	for _, want := range []string{"kdnative (fused KD loss)", "PyTorch bf16 + Liger fused JSD", "No module named 'transformers'",
		"kdnative (partial)", "forward KL + grad (dense)", "1 passed, 1 failed, 1 skipped", "TestAttention/bf16",
		"timed out after 1m55s in TestDemoMatchesCPU", "0.50×", "graphs: 2.50× the decode tokens/s", "1,300.0 launches/step"} {
		if !strings.Contains(string(summary), want) {
			t.Errorf("summary.txt lacks %q:\n%s", want, summary)
		}
	}
}
