package train

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"time"

	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/kd/optim"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/gguf"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cachealloc"
	"github.com/kdnative/kdnative/runtime/plan"
)

// BenchConfig is a training-step measurement: a model folder (or a bare
// config.json with random weights), a batch shape and a number of steps.
// With a teacher (a folder, or a config.json with random weights) each step
// is a KD step: the student's forward, the online teacher's forward, the
// fused forward KL at temperature BenchTemperature, the student's backward,
// clipping and AdamW.
type BenchConfig struct {
	Model, Config          string
	Teacher, TeacherConfig string
	B, T, Steps            int
	// GEMMTFLOPs is this machine's measured bf16 matrix-product ceiling in
	// TFLOP/s (the CUDA backend's MeasureCeilings); 0 when none was measured.
	GEMMTFLOPs float64
	// Precision is auto, bf16, fp32 or tf32 (runtime.UsePrecision): the
	// student trains in it with F32 master weights, the teacher runs its
	// inference forward in it.
	Precision string
}

// BenchTemperature is the KD step's temperature, the one the GPU check
// compares with PyTorch at (scripts/gpu/torch_bench.py).
const BenchTemperature = 2

// BenchResult is what Bench measured. Its JSON form is what `kdnative bench
// --json` writes and scripts/gpu/summarize.py reads; zero optional figures
// (no teacher, no known peak, no memory high-water mark) are left out.
type BenchResult struct {
	// Backend is the backend's one-line description (device, driver, …).
	Backend string `json:"backend"`
	// Step is "train" (the student alone, cross-entropy) or "kd".
	Step    string `json:"step"`
	Model   string `json:"model"`
	Teacher string `json:"teacher,omitempty"`
	Batch   int    `json:"batch"`
	Seq     int    `json:"seq"`
	Steps   int    `json:"steps"`
	// Precision is the dtype the step ran in, read from the model's
	// tensors: "F32", or "weights X, activations Y" when they differ.
	Precision string `json:"precision"`

	StepSeconds     float64 `json:"step_s"`
	TokensPerSecond float64 `json:"tokens_per_s"`
	// ModelFLOPs is the arithmetic of one step: the student's training FLOPs
	// plus the teacher's forward FLOPs (model.Config.TrainingFLOPs; a
	// forward is a third of it). GFLOPs is ModelFLOPs per second / 1e9.
	ModelFLOPs float64 `json:"model_flops_per_step"`
	GFLOPs     float64 `json:"model_gflops_per_s"`
	// PeakTFLOPs is the card's dense bf16 peak from its datasheet
	// (PeakBF16TFLOPs) and MFU the model FLOP rate over it; MFUOfCeiling
	// is the same rate over the measured GEMM ceiling GEMMTFLOPs.
	PeakTFLOPs   float64 `json:"peak_bf16_tflops,omitempty"`
	PeakCard     string  `json:"peak_card,omitempty"`
	MFU          float64 `json:"mfu,omitempty"`
	GEMMTFLOPs   float64 `json:"gemm_ceiling_tflops,omitempty"`
	MFUOfCeiling float64 `json:"mfu_of_gemm_ceiling,omitempty"`
	// TensorMB is what the models', gradients' and optimizer's tensors take;
	// PeakMB the backend's high-water mark over the whole benchmark (only
	// backends that keep one: runtime.PeakMemory).
	TensorMB float64 `json:"tensor_mb"`
	PeakMB   float64 `json:"peak_device_mb,omitempty"`
	// Allocator is the device allocator's state after the last step, where
	// the backend has one (cachealloc.Reporter): reserved against in use,
	// the largest free block, and its driver calls.
	Allocator *AllocatorStats `json:"allocator,omitempty"`
	// Loss is the last step's loss (KD: the divergence × T²); a NaN or an
	// infinity is left out of the JSON and said in the text.
	Loss float64 `json:"-"`
	// PerStep is what the last step asked of the device (host syncs,
	// launches, bytes each way, allocator calls), on a backend that counts
	// them (runtime.Counting).
	PerStep *kdrt.Counters `json:"per_step,omitempty"`
}

// MarshalJSON adds the last step's loss when it is finite, and the host
// syncs and launches per step at the top level (where the GPU check's
// summary looks for them, scripts/gpu/summarize.py).
func (r BenchResult) MarshalJSON() ([]byte, error) {
	type plain BenchResult
	v := struct {
		plain
		Loss     *float64 `json:"loss,omitempty"`
		Syncs    *int64   `json:"host_syncs_per_step,omitempty"`
		Launches *int64   `json:"launches_per_step,omitempty"`
	}{plain: plain(r)}
	if !math.IsNaN(r.Loss) && !math.IsInf(r.Loss, 0) {
		v.Loss = &r.Loss
	}
	if r.PerStep != nil {
		v.Syncs, v.Launches = &r.PerStep.Syncs, &r.PerStep.Launches
	}
	return json.Marshal(v)
}

// WriteJSON writes r to path as indented JSON, atomically.
func (r BenchResult) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}

// AllocatorStats are a caching allocator's counters (cachealloc.Stats), as
// bench reports them.
type AllocatorStats struct {
	InUse        uint64 `json:"in_use_bytes"`
	Reserved     uint64 `json:"reserved_bytes"`
	LargestFree  uint64 `json:"largest_free_block_bytes"`
	PeakInUse    uint64 `json:"peak_in_use_bytes"`
	PeakReserved uint64 `json:"peak_reserved_bytes"`
	DriverAllocs uint64 `json:"driver_allocs"`
	DriverFrees  uint64 `json:"driver_frees"`
	// DriverCallsTimed are the driver's allocations and frees during the
	// timed steps: 0 when the steady state is served from the cache.
	DriverCallsTimed uint64 `json:"driver_calls_timed_steps"`
}

func allocatorStats(s cachealloc.Stats, timed func() uint64) *AllocatorStats {
	return &AllocatorStats{InUse: s.InUse, Reserved: s.Reserved, LargestFree: s.LargestFree, PeakInUse: s.PeakInUse,
		PeakReserved: s.PeakReserved, DriverAllocs: s.DriverAllocs, DriverFrees: s.DriverFrees, DriverCallsTimed: timed()}
}

// peakBF16 lists dense (no sparsity) bf16 tensor-core peaks with fp32
// accumulation from NVIDIA's datasheets, in TFLOP/s, keyed by a substring of
// the name the driver gives the card. More specific names come first.
var peakBF16 = []struct {
	name   string
	tflops float64
}{
	{"GH200", 989},
	{"H200 NVL", 835},
	{"H200", 989},
	{"H100 NVL", 835},
	{"H100 PCIe", 756},
	{"H100", 989}, // SXM: "NVIDIA H100 80GB HBM3"
	{"H800", 989},
	{"A100", 312},
	{"A800", 312},
	{"L40S", 362},
	{"L40", 181},
	{"L4", 121},
}

// PeakBF16TFLOPs returns the dense bf16 peak of the card that device (a
// backend description or a GPU name) names, and the table entry it matched;
// 0 and "" for a card the table does not know.
func PeakBF16TFLOPs(device string) (tflops float64, card string) {
	for _, p := range peakBF16 {
		if strings.Contains(device, p.name) {
			return p.tflops, p.name
		}
	}
	return 0, ""
}

// ForwardFLOPs is the arithmetic of a forward pass on B sequences of T
// tokens: 2 FLOPs per matrix parameter per token plus attention's products,
// which is a third of Config.TrainingFLOPs (backward costs twice the forward).
func ForwardFLOPs(c *model.Config, B, T int) float64 { return c.TrainingFLOPs(B, T) / 3 }

// benchModel loads a folder, or makes a random-weight model of a config.
// When planning (r.planning) it only builds the model from the config: a
// plan needs no weights. opts are the model's precision options
// (model.ForPrecision).
func benchModel(r roles, be kdrt.Backend, dir, config string, seed uint64, opts ...model.Option) (*model.Model, error) {
	if r.planning && (dir == "" || !gguf.IsGGUFPath(dir)) {
		if dir != "" {
			config = filepath.Join(dir, "config.json")
		}
		cfg, err := model.LoadConfig(config)
		if err != nil {
			return nil, err
		}
		return model.New(cfg, be, opts...)
	}
	if dir != "" {
		return model.LoadDir(dir, be, opts...)
	}
	cfg, err := model.LoadConfig(config)
	if err != nil {
		return nil, err
	}
	m, err := model.New(cfg, be, opts...)
	if err != nil {
		return nil, err
	}
	return m, m.InitRandom(seed)
}

func describeModel(cfg *model.Config) string {
	return fmt.Sprintf("%s, %d layers, width %d, %.1fM parameters", cfg.ModelType, cfg.Layers, cfg.Hidden, float64(cfg.NumParams())/1e6)
}

// precision names the dtypes the student's weights and activations are
// stored in.
func precision(m *model.Model) string {
	w := m.Params()[0].W.DType
	a := w
	if h, err := m.Hidden(0); err == nil {
		a = h.DType
	}
	if w == a {
		return w.String()
	}
	return fmt.Sprintf("weights %s, activations %s", w, a)
}

// benchRun is a benchmark's models, optimizer and batch, ready to step.
type benchRun struct {
	be         kdrt.Backend
	m, teacher *model.Model
	opt        *optim.AdamW
	b          model.Batch
	dh         *kdrt.Tensor
	kd         loss.KDConfig
	// sums keeps the step's loss on the device, read with the gradient
	// norm in one download, as the trainer does.
	sums *loss.Sums
	// log gets the note of a step graph that fell back for good (the
	// step is a graph where the backend can, as the trainer's is).
	log io.Writer
}

// newBenchRun builds what Bench steps: the student (and teacher), the
// gradients, the optimizer, a batch of random tokens and, for KD, the
// hidden state's gradient, at precision prec (the student with F32 master
// weights, the teacher for inference). r gives each part its backend: the
// same one for a run, views of the planner for a plan.
func newBenchRun(c BenchConfig, prec kdrt.Precision, r roles) (*benchRun, error) {
	r.phase(plan.PhaseModel)
	m, err := benchModel(r, r.student, c.Model, c.Config, 1, model.ForPrecision(prec, true)...)
	if err != nil {
		return nil, err
	}
	cfg := m.Config
	if c.T > cfg.MaxPositions {
		return nil, fmt.Errorf("bench: sequence %d is longer than the model allows (%d)", c.T, cfg.MaxPositions)
	}
	br := &benchRun{be: r.step, m: m, kd: loss.KDConfig{Divergence: kdrt.ForwardKL, Temperature: BenchTemperature}}
	if c.Teacher != "" || c.TeacherConfig != "" {
		if br.teacher, err = benchModel(r, r.frozen, c.Teacher, c.TeacherConfig, 2, model.ForPrecision(prec, false)...); err != nil {
			return nil, fmt.Errorf("teacher: %w", err)
		}
		if c.T > br.teacher.Config.MaxPositions {
			return nil, fmt.Errorf("bench: sequence %d is longer than the teacher allows (%d)", c.T, br.teacher.Config.MaxPositions)
		}
	}
	r.phase(plan.PhaseGradients)
	if err := m.ZeroGrad(); err != nil {
		return nil, err
	}
	r.phase(plan.PhaseOptimizer)
	var slots []optim.Slot
	for _, p := range m.Params() {
		slots = append(slots, optim.Slot{Name: p.Name, W: p.W, G: p.G, Master: p.Master, Decay: !p.NoDecay})
	}
	if br.opt, err = optim.NewAdamW(r.step, slots, optim.DefaultAdamW); err != nil {
		return nil, err
	}
	r.phase(plan.PhaseStep)
	vocab := cfg.Vocab
	if br.teacher != nil {
		vocab = min(vocab, br.teacher.Config.Vocab)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	br.b = model.Batch{B: c.B, T: c.T, IDs: make([]int32, c.B*c.T), Targets: make([]int32, c.B*c.T)}
	for i := range br.b.IDs {
		br.b.IDs[i], br.b.Targets[i] = int32(rng.IntN(vocab)), int32(rng.IntN(vocab))
	}
	{
		// The hidden state's gradient is in the student's storage dtype,
		// as its backward takes it.
		if br.dh, err = r.step.Alloc("grad.hidden", m.DType(), c.B*c.T, cfg.Hidden); err != nil {
			return nil, err
		}
	}
	if br.sums, err = loss.NewSums(r.step, 1); err != nil {
		return nil, err
	}
	return br, nil
}

// step is one training step: the student's forward, the teacher's (KD),
// the loss, the backward, clipping and AdamW. Like the trainer's, its loss
// stays on the device and is read with the gradient norm in one download,
// and where the backend captures steps (runtime.StepGraphs) the step up to
// that download is a graph. It returns the loss.
func (br *benchRun) step() (float64, error) {
	m, be := br.m, br.be
	end := kdrt.BeginGraph(be, "bench", func(line string) {
		if br.log != nil {
			fmt.Fprintln(br.log, line)
		}
	})
	defer end()
	if err := m.ZeroGrad(); err != nil {
		return 0, err
	}
	h, err := m.ForwardHidden(br.b)
	if err != nil {
		return 0, err
	}
	be.Zero(br.dh)
	br.sums.Reset()
	opt := loss.Options{Sums: br.sums}
	if br.teacher == nil {
		// The fused, chunked cross-entropy the trainer's sft term runs: no
		// [N × V] logits.
		if _, _, err = loss.CrossEntropy(be, h, loss.Head{W: m.Head().W, G: m.Head().G}, br.dh, br.b.Targets, 1, opt); err != nil {
			return 0, err
		}
	} else {
		th, err := br.teacher.InferHidden(br.b)
		if err != nil {
			return 0, fmt.Errorf("teacher: %w", err)
		}
		if _, err := loss.KD(be, h, loss.Head{W: m.Head().W, G: m.Head().G}, br.dh,
			loss.TeacherHidden{Hidden: th, Head: br.teacher.Head().W}, nil, br.kd, 1, opt); err != nil {
			return 0, err
		}
	}
	if err := m.BackwardHidden(br.dh); err != nil {
		return 0, err
	}
	br.opt.Launch(1e-5, br.sums.Head())
	end()
	head, err := br.sums.Read()
	if _, err = br.opt.Finish(float64(head), err); err != nil {
		return 0, err
	}
	return br.sums.Last().Value(), nil
}

// free releases the run's own buffer (the models' and the optimizer's
// tensors go with the backend).
func (br *benchRun) free() {
	if br.dh != nil {
		br.be.Free(br.dh)
	}
	if br.sums != nil {
		br.sums.Free()
	}
}

// Bench times full training steps (forward, backward, clipping, AdamW) on
// random tokens after one warm-up step, and reports tokens/s, the model
// FLOP rate and MFU, the memory the step's tensors take and, on a backend
// that keeps one, the device memory's high-water mark. With a teacher the
// step is a KD step (see BenchConfig). Before anything is allocated, the
// step's memory plan is compared with the backend's free memory: a step
// that cannot fit is refused with the plan's breakdown and the largest
// batch that fits.
func Bench(be kdrt.Backend, c BenchConfig, log io.Writer) (BenchResult, error) {
	var res BenchResult
	prec, err := kdrt.UsePrecision(be, c.Precision)
	if err != nil {
		return res, err
	}
	if c.Model == "" && c.Config == "" {
		return res, fmt.Errorf("bench: give --model or --config")
	}
	if c.B <= 0 || c.T <= 0 || c.Steps <= 0 {
		return res, fmt.Errorf("bench: batch %d, sequence %d and steps %d must be positive", c.B, c.T, c.Steps)
	}
	if err := CheckBenchMemory(be, c, prec); err != nil {
		return res, err
	}
	pm, hasPeak := be.(kdrt.PeakMemory)
	if hasPeak {
		pm.ResetPeak()
	}
	run, err := newBenchRun(c, prec, plainRoles(be))
	if err != nil {
		return res, err
	}
	defer run.free()
	m, teacher, opt, cfg := run.m, run.teacher, run.opt, run.m.Config
	run.log = log
	counting, hasCounters := be.(kdrt.Counting)
	res.Backend, res.Step, res.Model = be.Describe(), "train", describeModel(cfg)
	res.Batch, res.Seq, res.Steps = c.B, c.T, c.Steps
	if teacher != nil {
		res.Step, res.Teacher = "kd", describeModel(teacher.Config)
	}
	res.writeHead(log)
	// Each step's time is printed as it ends, so that a run stopped early
	// (a time limit) still shows what it measured.
	stepPlan := func() (MemoryPlan, error) { return PlanBench(c, prec, planRounding(be)) }
	t0 := time.Now()
	if _, err := run.step(); err != nil { // warm-up: allocations, caches
		return res, withPlan(err, stepPlan)
	}
	fmt.Fprintf(log, "warm-up step %.3f s\n", time.Since(t0).Seconds())
	driverCalls := func() uint64 { return 0 }
	if ar, ok := be.(cachealloc.Reporter); ok {
		before := ar.AllocatorStats()
		driverCalls = func() uint64 {
			s := ar.AllocatorStats()
			return s.DriverAllocs + s.DriverFrees - before.DriverAllocs - before.DriverFrees
		}
	}
	start := time.Now()
	for i := range c.Steps {
		if hasCounters {
			counting.ResetCounters()
		}
		t0 = time.Now()
		if res.Loss, err = run.step(); err != nil {
			return res, withPlan(err, stepPlan)
		}
		line := fmt.Sprintf("step %d/%d %.3f s", i+1, c.Steps, time.Since(t0).Seconds())
		if hasCounters {
			n := counting.Counters()
			res.PerStep = &n
			line += ": " + n.String()
		}
		fmt.Fprintln(log, line)
	}
	res.StepSeconds = time.Since(start).Seconds() / float64(c.Steps)
	res.Precision = precision(m)
	res.TokensPerSecond = float64(c.B*c.T) / res.StepSeconds
	res.ModelFLOPs = cfg.TrainingFLOPs(c.B, c.T)
	bytes := m.TensorBytes() + opt.TensorBytes()
	if teacher != nil {
		res.ModelFLOPs += ForwardFLOPs(teacher.Config, c.B, c.T)
		bytes += teacher.TensorBytes()
	}
	rate := res.ModelFLOPs / res.StepSeconds
	res.GFLOPs = rate / 1e9
	if res.PeakTFLOPs, res.PeakCard = PeakBF16TFLOPs(res.Backend); res.PeakTFLOPs > 0 {
		res.MFU = rate / (res.PeakTFLOPs * 1e12)
	}
	if c.GEMMTFLOPs > 0 {
		res.GEMMTFLOPs = c.GEMMTFLOPs
		res.MFUOfCeiling = rate / (c.GEMMTFLOPs * 1e12)
	}
	res.TensorMB = float64(bytes) / 1e6
	if hasPeak {
		res.PeakMB = float64(pm.PeakBytes()) / 1e6
	}
	if ar, ok := be.(cachealloc.Reporter); ok {
		res.Allocator = allocatorStats(ar.AllocatorStats(), driverCalls)
	}
	res.write(log)
	return res, nil
}

// writeHead prints what is measured, before the steps run.
func (r BenchResult) writeHead(w io.Writer) {
	fmt.Fprintf(w, "%s: %s; batch %d × %d tokens\n", r.Backend, r.Model, r.Batch, r.Seq)
	if r.Step == "kd" {
		fmt.Fprintf(w, "teacher (online, forward KL at T=%d, fused loss): %s\n", BenchTemperature, r.Teacher)
	}
}

// write prints the result for people.
func (r BenchResult) write(w io.Writer) {
	what := "training step"
	if r.Step == "kd" {
		what = "KD step"
	}
	fmt.Fprintf(w, "%s %.3f s (mean of %d), %.0f tokens/s, %.1f model GFLOP/s, precision %s, loss %.4g\n",
		what, r.StepSeconds, r.Steps, r.TokensPerSecond, r.GFLOPs, r.Precision, r.Loss)
	var mfu []string
	if r.PeakTFLOPs > 0 {
		mfu = append(mfu, fmt.Sprintf("%.1f%% of the %s's dense bf16 peak (%.0f TFLOP/s)", 100*r.MFU, r.PeakCard, r.PeakTFLOPs))
	}
	if r.GEMMTFLOPs > 0 {
		mfu = append(mfu, fmt.Sprintf("%.1f%% of the measured bf16 GEMM ceiling (%.0f TFLOP/s)", 100*r.MFUOfCeiling, r.GEMMTFLOPs))
	}
	if len(mfu) > 0 {
		fmt.Fprintf(w, "MFU %s\n", strings.Join(mfu, ", "))
	}
	if r.PerStep != nil {
		fmt.Fprintf(w, "per step: %v\n", *r.PerStep)
	}
	if r.PeakMB > 0 {
		fmt.Fprintf(w, "%.0f MB of tensors, peak device memory %.0f MB\n", r.TensorMB, r.PeakMB)
	} else {
		fmt.Fprintf(w, "%.0f MB of tensors\n", r.TensorMB)
	}
	if a := r.Allocator; a != nil {
		fmt.Fprintf(w, "allocator: %s reserved, %s in use, largest free block %s (peak %s in use, %s reserved); %d driver allocations and %d frees in all, %d during the timed steps\n",
			plan.MiB(a.Reserved), plan.MiB(a.InUse), plan.MiB(a.LargestFree), plan.MiB(a.PeakInUse), plan.MiB(a.PeakReserved),
			a.DriverAllocs, a.DriverFrees, a.DriverCallsTimed)
	}
}
