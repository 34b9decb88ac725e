package train

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
	"github.com/kdnative/kdnative/runtime/plan"
)

// countingCPU is the CPU backend counting the bytes its live tensors hold
// (each tensor's own bytes, as the CPU allocates them) and their peak.
type countingCPU struct {
	*cpu.Backend
	sizes      map[*kdrt.Tensor]int64
	held, peak int64
	free       int64 // FreeMemory reports it when > 0
}

func newCountingCPU() *countingCPU {
	return &countingCPU{Backend: cpu.New(), sizes: map[*kdrt.Tensor]int64{}}
}

func (c *countingCPU) Alloc(name string, dt kdrt.DType, shape ...int) (*kdrt.Tensor, error) {
	t, err := c.Backend.Alloc(name, dt, shape...)
	if err == nil {
		n, _ := kdrt.TensorBytes(dt, shape...)
		c.sizes[t] = n
		c.held += n
		c.peak = max(c.peak, c.held)
	}
	return t, err
}

func (c *countingCPU) Free(t *kdrt.Tensor) {
	if n, ok := c.sizes[t]; ok {
		c.held -= n
		delete(c.sizes, t)
	}
	c.Backend.Free(t)
}

func (c *countingCPU) FreeMemory() (free, total int64, ok bool) {
	if c.free > 0 {
		return c.free, 4 * c.free, true
	}
	return c.Backend.FreeMemory()
}

// TestBenchPlanMatchesCPU: the plan of bench's step (exact sizes) is the
// peak and the steady state the CPU backend really holds when the same
// setup and two steps run on it, for the student alone (Forward's logits)
// and for KD with a teacher (its inference forward, the fused loss's
// chunks), for both architectures, in fp32 and in bf16 (BF16 storage, F32
// master weights); and every byte of the peak is in some category.
func TestBenchPlanMatchesCPU(t *testing.T) {
	for _, prec := range []kdrt.Precision{kdrt.PrecisionFP32, kdrt.PrecisionBF16} {
		checkBenchPlanMatchesCPU(t, prec)
	}
}

func checkBenchPlanMatchesCPU(t *testing.T, prec kdrt.Precision) {
	t.Helper()
	gpt2 := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(gpt2, []byte(`{"model_type":"gpt2","vocab_size":97,"n_embd":48,"n_layer":2,"n_head":4,"n_positions":64}`), 0o644)
	student, teacher := tinyQwen2(t, 32, 2, 4, true), tinyQwen2(t, 48, 3, 4, false)
	for _, c := range []BenchConfig{
		{Config: student, B: 2, T: 16},
		{Config: student, TeacherConfig: teacher, B: 3, T: 9},
		{Config: gpt2, B: 2, T: 7},
		{Config: gpt2, TeacherConfig: gpt2, B: 1, T: 33},
	} {
		cb := newCountingCPU()
		run, err := newBenchRun(c, prec, plainRoles(cb))
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if _, err := run.step(); err != nil {
				t.Fatal(err)
			}
		}
		run.free()
		p, err := PlanBench(c, prec, plan.Options{Exact: true})
		if err != nil {
			t.Fatal(err)
		}
		name := prec.String() + " " + filepath.Base(filepath.Dir(c.Config)) + "+" + filepath.Base(filepath.Dir(c.TeacherConfig))
		if p.PeakBytes != uint64(cb.peak) || p.SteadyBytes != uint64(cb.held) {
			t.Errorf("%s B=%d T=%d: plan peak %d, held %d; the CPU backend's peak %d, held %d", name, c.B, c.T, p.PeakBytes, p.SteadyBytes, cb.peak, cb.held)
		}
		var sum uint64
		for _, n := range p.Breakdown {
			sum += n
		}
		if sum != p.PeakBytes {
			t.Errorf("%s: the categories add up to %d, the peak is %d", name, sum, p.PeakBytes)
		}
		if p.Breakdown["weights"] == 0 || p.Breakdown["gradients"] < p.Breakdown["weights"]/2 ||
			p.Breakdown["optimizer_moments"] == 0 || p.Breakdown["activations"] == 0 || p.AttentionBytes == 0 {
			t.Errorf("%s: breakdown %v, attention %d", name, p.Breakdown, p.AttentionBytes)
		}
		if (c.TeacherConfig != "") != (p.Breakdown["teacher_weights"] > 0 && p.Breakdown["loss_chunks"] > 0) {
			t.Errorf("%s: teacher weights %d, loss chunks %d", name, p.Breakdown["teacher_weights"], p.Breakdown["loss_chunks"])
		}
		// BF16 weights (2 bytes) have F32 masters (4 bytes) beside them
		// (the weights also hold RoPE's F32 frequencies, which have none).
		if bf := prec == kdrt.PrecisionBF16; bf != (p.Breakdown["master_weights"] > p.Breakdown["weights"] && p.Breakdown["master_weights"] <= 2*p.Breakdown["weights"]) {
			t.Errorf("%s: weights %d, master weights %d", name, p.Breakdown["weights"], p.Breakdown["master_weights"])
		}
	}
}

// TestTrainPlanMatchesCPU: the trainer's plan of its own step is the
// peak and the steady state the CPU backend holds through the run's setup
// and two steps, for sft and for online kd on packed data (every row
// data.max_len long, the length the plan assumes); for dpo, whose pairs are
// shorter than data.max_len, the plan is an upper bound.
func TestTrainPlanMatchesCPU(t *testing.T) {
	w := newWorld(t)
	for _, c := range []struct {
		name  string
		exact bool
		edit  func(r *Recipe)
	}{
		{"sft", true, func(r *Recipe) { r.Objectives.SFT = &SFTTerm{Weight: 1} }},
		{"kd", true, func(r *Recipe) {
			r.Teacher = w.teacher
			r.Objectives.KD = &KDTerm{Weight: 1, Temperature: 2}
			r.Objectives.SFT = &SFTTerm{Weight: 0.5}
		}},
		{"dpo", false, func(r *Recipe) {
			r.Data.Train = w.pairs
			r.Objectives.DPO = &DPOTerm{Weight: 1, Beta: 0.1}
		}},
		{"sft-bf16", true, func(r *Recipe) {
			r.Precision = "bf16"
			r.Objectives.SFT = &SFTTerm{Weight: 1}
		}},
		{"kd-bf16", true, func(r *Recipe) {
			r.Precision = "bf16"
			r.Teacher = w.teacher
			r.Objectives.KD = &KDTerm{Weight: 1, Temperature: 2}
			r.Objectives.SFT = &SFTTerm{Weight: 0.5}
		}},
		{"dpo-bf16", false, func(r *Recipe) {
			r.Precision = "bf16"
			r.Data.Train = w.pairs
			r.Objectives.DPO = &DPOTerm{Weight: 1, Beta: 0.1}
		}},
	} {
		r := w.recipe(filepath.Join(w.dir, "plan-"+c.name))
		r.Data.MaxLen, r.Data.Pack, r.BatchSize = 24, c.exact, 2
		c.edit(&r)
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
		cb := newCountingCPU()
		tr := &trainer{r: r, be: cb, log: io.Discard, start: time.Now()}
		var err error
		if tr.prec, err = kdrt.UsePrecision(cb, r.Precision); err != nil {
			t.Fatal(err)
		}
		if err := tr.setup(Options{}); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if _, err := tr.trainStep(); err != nil {
				t.Fatal(err)
			}
		}
		p, err := tr.planStep(r.BatchSize, memo(tr.stepPlanner()))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: plan peak %d, held %d; CPU peak %d, held %d; %v", c.name, p.PeakBytes, p.SteadyBytes, cb.peak, cb.held, p.Breakdown)
		if c.exact && (p.PeakBytes != uint64(cb.peak) || p.SteadyBytes != uint64(cb.held)) {
			t.Errorf("%s: plan peak %d, held %d; the CPU backend's peak %d, held %d", c.name, p.PeakBytes, p.SteadyBytes, cb.peak, cb.held)
		}
		if !c.exact && (p.PeakBytes < uint64(cb.peak) || p.SteadyBytes < uint64(cb.held)) {
			t.Errorf("%s: plan peak %d, held %d below the CPU backend's peak %d, held %d", c.name, p.PeakBytes, p.SteadyBytes, cb.peak, cb.held)
		}
		tr.metrics.close()
	}
}

// TestPlanRefusesWithBreakdown: a bench step larger than the free memory
// is refused before anything is allocated, with the plan's breakdown and
// the largest batch whose plan fits — and that batch is right: its plan
// fits, the next one's does not.
func TestPlanRefusesWithBreakdown(t *testing.T) {
	c := BenchConfig{Config: tinyQwen2(t, 32, 2, 4, true), TeacherConfig: tinyQwen2(t, 48, 2, 4, true), B: 64, T: 32, Steps: 1}
	at := func(B int) uint64 {
		c := c
		c.B = B
		p, err := PlanBench(c, kdrt.PrecisionFP32, plan.Options{Exact: true})
		if err != nil {
			t.Fatal(err)
		}
		return p.PeakBytes
	}
	cb := newCountingCPU()
	cb.free = int64(at(20) + 100) // batch 20 fits, 21 does not
	if at(21) <= uint64(cb.free) {
		t.Fatalf("batch 21 needs %d, not more than batch 20's %d", at(21), at(20))
	}
	_, err := Bench(cb, c, io.Discard)
	var pe *PlanError
	var oom *kdrt.OutOfMemoryError
	if !errors.As(err, &pe) || !errors.As(err, &oom) {
		t.Fatalf("Bench of batch 64 with room for 20: %v", err)
	}
	t.Log(err)
	if pe.Plan.FitBatch != 20 || oom.Need != int64(at(64)) {
		t.Errorf("largest batch that fits %d (want 20), need %d (want %d)", pe.Plan.FitBatch, oom.Need, at(64))
	}
	for _, want := range []string{"needs", "free", "The largest batch that fits is 20", "activations kept for backward", "teacher forward", "loss chunks", "lower --batch"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
	if cb.peak != 0 {
		t.Errorf("%d bytes were allocated before the refusal", cb.peak)
	}
	// With room for it, the same bench runs.
	cb.free = int64(at(64))
	if _, err := Bench(cb, c, io.Discard); err != nil {
		t.Errorf("with %d bytes free: %v", cb.free, err)
	}
}

// TestPlanJSON: the plan's JSON has a top-level integer peak_bytes, every
// category, and says the precision and what the tensors are stored in.
func TestPlanJSON(t *testing.T) {
	c := BenchConfig{Config: tinyQwen2(t, 32, 2, 4, true), TeacherConfig: tinyQwen2(t, 48, 2, 4, true), B: 2, T: 16, Precision: "bf16"}
	prec, err := PlanPrecision(nil, c.Precision)
	if err != nil {
		t.Fatal(err)
	}
	p, err := PlanBench(c, prec, plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "plan.json")
	if err := p.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	var got map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	n, ok := got["peak_bytes"].(json.Number)
	if v, err := n.Int64(); !ok || err != nil || uint64(v) != p.PeakBytes || v <= 0 {
		t.Errorf("peak_bytes %v in %s", got["peak_bytes"], raw)
	}
	bd, _ := got["breakdown"].(map[string]any)
	for c := range plan.NumCategories {
		if _, ok := bd[c.Key()]; !ok {
			t.Errorf("breakdown lacks %s: %s", c.Key(), raw)
		}
	}
	if got["storage"] != "BF16" || got["precision"] != "bf16" || !strings.Contains(got["rounding"].(string), "512 B") {
		t.Errorf("storage %v, precision %v, rounding %v", got["storage"], got["precision"], got["rounding"])
	}
	var text strings.Builder
	p.WriteText(&text)
	for _, want := range []string{"precision bf16; tensors stored BF16", "master weights", "caching allocator", "attention's saved state"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("the text does not say %q:\n%s", want, text.String())
		}
	}
	// Rounded to the caching allocator's blocks, the plan is at least the
	// exact one.
	e, err := PlanBench(c, prec, plan.Options{Exact: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.PeakBytes < e.PeakBytes || p.PeakReservedBytes < p.PeakBytes {
		t.Errorf("rounded peak %d (reserved %d), exact %d", p.PeakBytes, p.PeakReservedBytes, e.PeakBytes)
	}
}

// failingCPU is the CPU backend running out of memory at one tensor, as a
// device does.
type failingCPU struct {
	*cpu.Backend
	name string
}

func (f failingCPU) Alloc(name string, dt kdrt.DType, shape ...int) (*kdrt.Tensor, error) {
	if name == f.name {
		return nil, &kdrt.OutOfMemoryError{What: "the tensor " + name, Need: 1 << 30, Free: 1 << 20, Backend: "test"}
	}
	return f.Backend.Alloc(name, dt, shape...)
}

// TestOutOfMemoryInStepShowsPlan: a step that runs out of memory after the
// plan's check (another process took the memory) fails with the device's
// error naming the tensor, and with the step's plan by category.
func TestOutOfMemoryInStepShowsPlan(t *testing.T) {
	c := BenchConfig{Config: tinyQwen2(t, 32, 2, 4, true), TeacherConfig: tinyQwen2(t, 48, 2, 4, true), B: 2, T: 16, Steps: 1}
	_, err := Bench(failingCPU{cpu.New(), "loss.logits"}, c, io.Discard)
	var oom *kdrt.OutOfMemoryError
	if !errors.As(err, &oom) {
		t.Fatalf("a step out of memory: %v", err)
	}
	for _, want := range []string{"the tensor loss.logits", "the memory plan of this step", "loss chunks", "teacher forward"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
}
