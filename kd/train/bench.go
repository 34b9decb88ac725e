package train

import (
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/kdnative/kdnative/kd/optim"
	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// BenchConfig is a training-step measurement: a model folder (or a bare
// config.json with random weights), a batch shape and a number of steps.
type BenchConfig struct {
	Model, Config string
	B, T, Steps   int
	// Precision is auto, bf16, fp32 or tf32 (runtime.UsePrecision).
	Precision string
}

// BenchResult is what Bench measured.
type BenchResult struct {
	StepSeconds, TokensPerSecond, GFLOPs float64
	TensorMB                             float64
}

// Bench times full training steps (forward, backward, clipping, AdamW) on
// random tokens after one warm-up step, and reports tokens/s, the model
// FLOP rate (Config.TrainingFLOPs) and the memory the step's tensors take.
func Bench(be kdrt.Backend, c BenchConfig, log io.Writer) (BenchResult, error) {
	var res BenchResult
	var m *model.Model
	prec, err := kdrt.UsePrecision(be, c.Precision)
	if err != nil {
		return res, err
	}
	opts := model.ForPrecision(prec, true)
	switch {
	case c.Model != "":
		m, err = model.LoadDir(c.Model, be, opts...)
	case c.Config != "":
		var cfg *model.Config
		if cfg, err = model.LoadConfig(c.Config); err == nil {
			if m, err = model.New(cfg, be, opts...); err == nil {
				err = m.InitRandom(1)
			}
		}
	default:
		err = fmt.Errorf("bench: give --model or --config")
	}
	if err != nil {
		return res, err
	}
	if c.B <= 0 || c.T <= 0 || c.Steps <= 0 {
		return res, fmt.Errorf("bench: batch %d, sequence %d and steps %d must be positive", c.B, c.T, c.Steps)
	}
	cfg := m.Config
	if c.T > cfg.MaxPositions {
		return res, fmt.Errorf("bench: sequence %d is longer than the model allows (%d)", c.T, cfg.MaxPositions)
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
	r := rand.New(rand.NewPCG(1, 2))
	b := model.Batch{B: c.B, T: c.T, IDs: make([]int32, c.B*c.T), Targets: make([]int32, c.B*c.T)}
	for i := range b.IDs {
		b.IDs[i], b.Targets[i] = int32(r.IntN(cfg.Vocab)), int32(r.IntN(cfg.Vocab))
	}
	step := func() error {
		if err := m.ZeroGrad(); err != nil {
			return err
		}
		if _, err := m.Forward(b); err != nil {
			return err
		}
		if err := m.Backward(); err != nil {
			return err
		}
		_, err := opt.Step(1e-5)
		return err
	}
	if err := step(); err != nil { // warm-up: allocations, caches
		return res, err
	}
	start := time.Now()
	for range c.Steps {
		if err := step(); err != nil {
			return res, err
		}
	}
	res.StepSeconds = time.Since(start).Seconds() / float64(c.Steps)
	res.TokensPerSecond = float64(c.B*c.T) / res.StepSeconds
	res.GFLOPs = cfg.TrainingFLOPs(c.B, c.T) / res.StepSeconds / 1e9
	res.TensorMB = float64(m.TensorBytes()+opt.TensorBytes()) / 1e6
	fmt.Fprintf(log, "%s: %s, %d layers, width %d, %.1fM parameters; batch %d × %d tokens\n",
		be.Describe(), cfg.ModelType, cfg.Layers, cfg.Hidden, float64(cfg.NumParams())/1e6, c.B, c.T)
	fmt.Fprintf(log, "training step %.3f s (mean of %d), %.0f tokens/s, %.1f model GFLOP/s, %.0f MB of tensors\n",
		res.StepSeconds, c.Steps, res.TokensPerSecond, res.GFLOPs, res.TensorMB)
	return res, nil
}
