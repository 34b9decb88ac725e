package train

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/kd/optim"
	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
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
func benchModel(be kdrt.Backend, dir, config string, seed uint64, opts ...model.Option) (*model.Model, error) {
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

// Bench times full training steps (forward, backward, clipping, AdamW) on
// random tokens after one warm-up step, and reports tokens/s, the model
// FLOP rate and MFU, the memory the step's tensors take and, on a backend
// that keeps one, the device memory's high-water mark. With a teacher the
// step is a KD step (see BenchConfig).
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
	pm, hasPeak := be.(kdrt.PeakMemory)
	if hasPeak {
		pm.ResetPeak()
	}
	m, err := benchModel(be, c.Model, c.Config, 1, model.ForPrecision(prec, true)...)
	if err != nil {
		return res, err
	}
	cfg := m.Config
	if c.T > cfg.MaxPositions {
		return res, fmt.Errorf("bench: sequence %d is longer than the model allows (%d)", c.T, cfg.MaxPositions)
	}
	var teacher *model.Model
	if c.Teacher != "" || c.TeacherConfig != "" {
		if teacher, err = benchModel(be, c.Teacher, c.TeacherConfig, 2, model.ForPrecision(prec, false)...); err != nil {
			return res, fmt.Errorf("teacher: %w", err)
		}
		if c.T > teacher.Config.MaxPositions {
			return res, fmt.Errorf("bench: sequence %d is longer than the teacher allows (%d)", c.T, teacher.Config.MaxPositions)
		}
	}
	if err := m.ZeroGrad(); err != nil {
		return res, err
	}
	var slots []optim.Slot
	for _, p := range m.Params() {
		slots = append(slots, optim.Slot{Name: p.Name, W: p.W, G: p.G, Master: p.Master, Decay: !p.NoDecay})
	}
	opt, err := optim.NewAdamW(be, slots, optim.DefaultAdamW)
	if err != nil {
		return res, err
	}
	vocab := cfg.Vocab
	if teacher != nil {
		vocab = min(vocab, teacher.Config.Vocab)
	}
	r := rand.New(rand.NewPCG(1, 2))
	b := model.Batch{B: c.B, T: c.T, IDs: make([]int32, c.B*c.T), Targets: make([]int32, c.B*c.T)}
	for i := range b.IDs {
		b.IDs[i], b.Targets[i] = int32(r.IntN(vocab)), int32(r.IntN(vocab))
	}
	var dh *kdrt.Tensor
	if teacher != nil {
		if dh, err = be.Alloc("grad.hidden", m.DType(), c.B*c.T, cfg.Hidden); err != nil {
			return res, err
		}
		defer be.Free(dh)
	}
	kd := loss.KDConfig{Divergence: kdrt.ForwardKL, Temperature: BenchTemperature}
	// As the trainer does, the KD step's loss stays on the device and is
	// read with the gradient norm in one download.
	sums, err := loss.NewSums(be, 1)
	if err != nil {
		return res, err
	}
	defer sums.Free()
	// The KD step, as the trainer's, is a graph where the backend can.
	sg, graphed := be.(kdrt.StepGraphs)
	graphed = graphed && teacher != nil
	step := func() (float64, error) {
		ended := !graphed
		end := func() {
			if !ended {
				ended = true
				if note := sg.EndGraph(); note != "" {
					fmt.Fprintln(log, note)
				}
			}
		}
		if graphed {
			sg.BeginGraph("bench")
			defer end()
		}
		if err := m.ZeroGrad(); err != nil {
			return 0, err
		}
		var l float64
		if teacher == nil {
			var err error
			if l, err = m.Forward(b); err != nil {
				return 0, err
			}
			if err := m.Backward(); err != nil {
				return 0, err
			}
		} else {
			h, err := m.ForwardHidden(b)
			if err != nil {
				return 0, err
			}
			th, err := teacher.InferHidden(b)
			if err != nil {
				return 0, fmt.Errorf("teacher: %w", err)
			}
			be.Zero(dh)
			sums.Reset()
			if _, err := loss.KD(be, h, loss.Head{W: m.Head().W, G: m.Head().G}, dh,
				loss.TeacherHidden{Hidden: th, Head: teacher.Head().W}, nil, kd, 1, loss.Options{Sums: sums}); err != nil {
				return 0, err
			}
			if err := m.BackwardHidden(dh); err != nil {
				return 0, err
			}
			opt.Launch(1e-5, sums.Head())
			end()
			head, err := sums.Read()
			if _, err = opt.Finish(float64(head), err); err != nil {
				return 0, err
			}
			return sums.Last().Value(), nil
		}
		_, err := opt.Step(1e-5)
		return l, err
	}
	counting, hasCounters := be.(kdrt.Counting)
	res.Backend, res.Step, res.Model = be.Describe(), "train", describeModel(cfg)
	res.Batch, res.Seq, res.Steps = c.B, c.T, c.Steps
	if teacher != nil {
		res.Step, res.Teacher = "kd", describeModel(teacher.Config)
	}
	res.writeHead(log)
	// Each step's time is printed as it ends, so that a run stopped early
	// (a time limit) still shows what it measured.
	t0 := time.Now()
	if _, err := step(); err != nil { // warm-up: allocations, caches
		return res, err
	}
	fmt.Fprintf(log, "warm-up step %.3f s\n", time.Since(t0).Seconds())
	start := time.Now()
	for i := range c.Steps {
		if hasCounters {
			counting.ResetCounters()
		}
		t0 = time.Now()
		if res.Loss, err = step(); err != nil {
			return res, err
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
}
