package train

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// tinyQwen2 writes a small Qwen2-shaped config.json and returns its path.
func tinyQwen2(t *testing.T, hidden, layers, heads int, tied bool) string {
	t.Helper()
	cfg := map[string]any{
		"model_type": "qwen2", "vocab_size": 97, "hidden_size": hidden, "intermediate_size": 2 * hidden,
		"num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": 2,
		"max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": tied,
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// peakCPU is the CPU backend with a high-water mark of its tensors' bytes
// (runtime.PeakMemory), and a device name for the peak table.
type peakCPU struct {
	kdrt.Backend
	sizes       map[*kdrt.Tensor]uint64
	inUse, peak uint64
}

func newPeakCPU() *peakCPU { return &peakCPU{Backend: cpu.New(), sizes: map[*kdrt.Tensor]uint64{}} }

func (p *peakCPU) Describe() string { return "test: NVIDIA H200 (the CPU backend underneath)" }

func (p *peakCPU) Alloc(name string, dt kdrt.DType, shape ...int) (*kdrt.Tensor, error) {
	t, err := p.Backend.Alloc(name, dt, shape...)
	if err == nil {
		n := uint64(t.Numel() * dt.Size())
		p.sizes[t] = n
		p.inUse += n
		p.peak = max(p.peak, p.inUse)
	}
	return t, err
}

func (p *peakCPU) Free(t *kdrt.Tensor) {
	p.inUse -= p.sizes[t]
	delete(p.sizes, t)
	p.Backend.Free(t)
}

func (p *peakCPU) ResetPeak()        { p.peak = p.inUse }
func (p *peakCPU) PeakBytes() uint64 { return p.peak }

// TestBenchKDStep: with a teacher, Bench times KD steps whose loss is the
// divergence to that teacher — zero (up to the few AdamW updates) for a
// teacher with the student's own weights, clearly positive for another —
// and counts the student's training FLOPs plus the teacher's forward.
func TestBenchKDStep(t *testing.T) {
	student := tinyQwen2(t, 32, 2, 4, true)
	teacher := tinyQwen2(t, 48, 3, 4, true)
	// A teacher folder holding the weights the student starts from (Bench
	// initializes the student with seed 1).
	same := t.TempDir()
	cfg, err := model.LoadConfig(student)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(cfg, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.InitRandom(1); err != nil {
		t.Fatal(err)
	}
	if err := m.SaveDir(same, 0); err != nil {
		t.Fatal(err)
	}
	tcfg, err := model.LoadConfig(teacher)
	if err != nil {
		t.Fatal(err)
	}
	const B, T = 2, 16
	for _, c := range []struct {
		name      string
		bc        BenchConfig
		atMost    float64
		atLeast   float64
		teacherFw float64
	}{
		{"own weights", BenchConfig{Config: student, Teacher: same, B: B, T: T, Steps: 1}, 1e-5, 0, ForwardFLOPs(cfg, B, T)},
		{"another teacher", BenchConfig{Config: student, TeacherConfig: teacher, B: B, T: T, Steps: 2}, math.Inf(1), 1e-3, ForwardFLOPs(tcfg, B, T)},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := Bench(cpu.New(), c.bc, os.Stderr)
			if err != nil {
				t.Fatal(err)
			}
			if res.Step != "kd" || res.Teacher == "" || res.Precision != "F32" {
				t.Errorf("step %q, teacher %q, precision %q; want a kd step of an F32 run", res.Step, res.Teacher, res.Precision)
			}
			if !(res.Loss <= c.atMost && res.Loss >= c.atLeast) {
				t.Errorf("KD loss %g, want it in [%g, %g]", res.Loss, c.atLeast, c.atMost)
			}
			if want := cfg.TrainingFLOPs(B, T) + c.teacherFw; res.ModelFLOPs != want {
				t.Errorf("model FLOPs %g, want the student's training %g plus the teacher's forward %g", res.ModelFLOPs, cfg.TrainingFLOPs(B, T), c.teacherFw)
			}
			if res.PeakMB != 0 || res.MFU != 0 {
				t.Errorf("the CPU backend has no memory high-water mark or bf16 peak, yet peak %g MB, MFU %g", res.PeakMB, res.MFU)
			}
		})
	}
}

// TestBenchPeakAndMFU: on a backend with a memory high-water mark the
// result carries it (above the tensors the models and optimizer keep, since
// the KD loss's chunk buffers come and go), and MFU is the model FLOP rate
// over the named card's peak and over the given GEMM ceiling.
func TestBenchPeakAndMFU(t *testing.T) {
	be := newPeakCPU()
	res, err := Bench(be, BenchConfig{Config: tinyQwen2(t, 32, 2, 4, false), TeacherConfig: tinyQwen2(t, 48, 2, 4, true),
		B: 2, T: 16, Steps: 1, GEMMTFLOPs: 500}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.PeakMB, float64(be.peak)/1e6; got != want {
		t.Errorf("peak %g MB, want the backend's high-water mark %g MB", got, want)
	}
	if !(res.PeakMB > res.TensorMB) {
		t.Errorf("peak %g MB is not above the %g MB of kept tensors", res.PeakMB, res.TensorMB)
	}
	rate := res.ModelFLOPs / res.StepSeconds
	if res.PeakTFLOPs != 989 || math.Abs(res.MFU-rate/989e12) > 1e-12*res.MFU {
		t.Errorf("peak %g TFLOP/s, MFU %g; want 989 and %g", res.PeakTFLOPs, res.MFU, rate/989e12)
	}
	if res.GEMMTFLOPs != 500 || math.Abs(res.MFUOfCeiling-rate/500e12) > 1e-12*res.MFUOfCeiling {
		t.Errorf("ceiling %g, MFU of it %g; want 500 and %g", res.GEMMTFLOPs, res.MFUOfCeiling, rate/500e12)
	}
	// The JSON form carries every figure, the loss included.
	path := filepath.Join(t.TempDir(), "bench.json")
	if err := res.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"step", "tokens_per_s", "model_flops_per_step", "mfu", "mfu_of_gemm_ceiling", "peak_device_mb", "precision", "loss"} {
		if _, ok := got[k]; !ok {
			t.Errorf("the JSON lacks %s: %s", k, b)
		}
	}
}

// TestBenchLossNaNInJSON: a non-finite loss is left out of the JSON (which
// cannot hold it) instead of failing the write.
func TestBenchLossNaNInJSON(t *testing.T) {
	b, err := json.Marshal(BenchResult{Step: "kd", Loss: math.NaN()})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got["loss"]; ok || got["step"] != "kd" {
		t.Errorf("JSON %s", b)
	}
}

// TestForwardFLOPs counts a forward pass from the model's own parameter
// shapes: 2 FLOPs per weight of every matrix a token meets (the lm_head
// once, tied or not; the embedding lookup is no product) plus QKᵀ and PV,
// 2·2·T²·NH·HD per sequence and layer.
func TestForwardFLOPs(t *testing.T) {
	for _, tied := range []bool{true, false} {
		cfg, err := model.LoadConfig(tinyQwen2(t, 32, 3, 4, tied))
		if err != nil {
			t.Fatal(err)
		}
		m, err := model.New(cfg, cpu.New())
		if err != nil {
			t.Fatal(err)
		}
		matrix := 0.0
		for _, p := range m.Params() {
			if len(p.Shape) == 2 {
				matrix += float64(p.Shape[0] * p.Shape[1])
			}
		}
		if !tied {
			matrix -= float64(cfg.Vocab * cfg.Hidden) // the embedding table
		}
		const B, T = 3, 20
		want := 2*matrix*B*T + 4*float64(cfg.Layers)*B*T*T*float64(cfg.Heads*cfg.HeadDim)
		if got := ForwardFLOPs(cfg, B, T); math.Abs(got-want) > 1e-9*want {
			t.Errorf("tied %v: forward FLOPs %g, want %g", tied, got, want)
		}
	}
}

// TestGPUCheckConfigs: the GPU check's configs have the shapes of the real
// Qwen2.5-0.5B and 1.5B (Qwen's model cards: 0.49B and 1.54B parameters).
func TestGPUCheckConfigs(t *testing.T) {
	for _, c := range []struct {
		file                          string
		params                        float64
		layers, hidden, heads, kv, ff int
	}{
		{"qwen2.5-0.5b.json", 0.494e9, 24, 896, 14, 2, 4864},
		{"qwen2.5-1.5b.json", 1.544e9, 28, 1536, 12, 2, 8960},
	} {
		cfg, err := model.LoadConfig(filepath.Join("..", "..", "scripts", "gpu", c.file))
		if err != nil {
			t.Fatal(err)
		}
		if n := float64(cfg.NumParams()); math.Abs(n-c.params) > 0.005*c.params {
			t.Errorf("%s: %.4gB parameters, want %.4gB", c.file, n/1e9, c.params/1e9)
		}
		if cfg.Layers != c.layers || cfg.Hidden != c.hidden || cfg.Heads != c.heads || cfg.KVHeads != c.kv ||
			cfg.Intermediate != c.ff || cfg.Vocab != 151936 || !cfg.Tied || cfg.MaxPositions < 1024 {
			t.Errorf("%s: %+v", c.file, cfg)
		}
	}
}

// TestPeakBF16TFLOPs: the names drivers give these cards map to their
// datasheets' dense bf16 rates; an unknown card has none.
func TestPeakBF16TFLOPs(t *testing.T) {
	for name, want := range map[string]float64{
		"NVIDIA H100 80GB HBM3": 989, "NVIDIA H100 PCIe": 756, "NVIDIA H100 NVL": 835,
		"NVIDIA H200": 989, "NVIDIA H200 NVL": 835, "NVIDIA GH200 480GB": 989,
		"NVIDIA A100-SXM4-80GB": 312, "NVIDIA A100 80GB PCIe": 312,
		"NVIDIA L40S": 362, "NVIDIA L40": 181, "NVIDIA L4": 121,
		"Tesla T4": 0, "NVIDIA A10G": 0, "cpu: 2 threads": 0,
	} {
		if got, card := PeakBF16TFLOPs("cuda: " + name + ", 79.2 GiB, sm_90"); got != want || (got > 0) != (card != "") {
			t.Errorf("%s: %g TFLOP/s (%q), want %g", name, got, card, want)
		}
	}
}

// TestBenchFLOPsMatchPython: scripts/gpu/flops.py, which the PyTorch side
// and the summary use, counts the FLOPs and looks up the peaks exactly as
// this package does, so both sides' MFU are comparable.
func TestBenchFLOPsMatchPython(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 here to run scripts/gpu/flops.py")
	}
	dir := filepath.Join("..", "..", "scripts", "gpu")
	files := []string{"qwen2.5-0.5b.json", "qwen2.5-1.5b.json", "tiny-student.json", "tiny-teacher.json"}
	args := []string{filepath.Join(dir, "flops.py")}
	for i, f := range files {
		args = append(args, filepath.Join(dir, f), strconv.Itoa(1+i), strconv.Itoa(64<<i))
	}
	out, err := exec.Command(py, args...).Output()
	if err != nil {
		t.Fatalf("flops.py: %v", err)
	}
	var rows []struct{ Training, Forward float64 }
	if err := json.Unmarshal(out, &rows); err != nil || len(rows) != len(files) {
		t.Fatalf("flops.py printed %s (%v)", out, err)
	}
	for i, f := range files {
		cfg, err := model.LoadConfig(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		B, T := 1+i, 64<<i
		if rows[i].Training != cfg.TrainingFLOPs(B, T) || rows[i].Forward != ForwardFLOPs(cfg, B, T) {
			t.Errorf("%s: flops.py %g / %g, Go %g / %g", f, rows[i].Training, rows[i].Forward, cfg.TrainingFLOPs(B, T), ForwardFLOPs(cfg, B, T))
		}
	}
	names := []string{"--peak"}
	for _, p := range peakBF16 {
		names = append(names, "NVIDIA "+p.name)
	}
	names = append(names, "Tesla T4")
	out, err = exec.Command(py, append([]string{filepath.Join(dir, "flops.py")}, names...)...).Output()
	if err != nil {
		t.Fatalf("flops.py --peak: %v", err)
	}
	var peaks map[string]struct{ TFLOPs float64 }
	if err := json.Unmarshal(out, &peaks); err != nil {
		t.Fatal(err)
	}
	for _, n := range names[1:] {
		want, _ := PeakBF16TFLOPs(n)
		if peaks[n].TFLOPs != want {
			t.Errorf("%s: flops.py's peak %g, Go's %g", n, peaks[n].TFLOPs, want)
		}
	}
}
