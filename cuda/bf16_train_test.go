package cuda

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/kd/optim"
	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// trainHidden trains the built-in tiny Llama at precision p on be through the
// hidden-state path the trainer takes (ForwardHidden, the fused chunked
// cross-entropy with its head gradient, BackwardHidden, the multi-tensor
// AdamW with clipping), from the same initial weights every time, and
// returns the losses.
func trainHidden(t *testing.T, be kdrt.Backend, p kdrt.Precision, steps int) []float64 {
	t.Helper()
	cfg := model.BuiltinTiny()
	batch := randomBatch(rand.New(rand.NewPCG(3, 4)), 4, 32, cfg.Vocab)
	m, err := model.New(cfg, be, model.ForPrecision(p, true)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.InitRandom(11); err != nil {
		t.Fatal(err)
	}
	if err := m.ZeroGrad(); err != nil {
		t.Fatal(err)
	}
	var slots []optim.Slot
	for _, q := range m.Params() {
		slots = append(slots, optim.Slot{Name: q.Name, W: q.W, G: q.G, Master: q.Master, Decay: !q.NoDecay})
	}
	cfgOpt := optim.DefaultAdamW
	cfgOpt.MaxGradNorm = 0.5 // clipping active in most steps
	opt, err := optim.NewAdamW(be, slots, cfgOpt)
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Free()
	var losses []float64
	for range steps {
		if err := m.ZeroGrad(); err != nil {
			t.Fatal(err)
		}
		h, err := m.ForwardHidden(batch)
		if err != nil {
			t.Fatal(err)
		}
		dh, err := be.Alloc("dh", h.DType, h.Shape...)
		if err != nil {
			t.Fatal(err)
		}
		l, _, err := loss.CrossEntropy(be, h, loss.Head{W: m.Head().W, G: m.Head().G}, dh, batch.Targets, 1, loss.Options{ChunkRows: 48})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.BackwardHidden(dh); err != nil {
			t.Fatal(err)
		}
		be.Free(dh)
		if _, err := opt.Step(3e-3); err != nil {
			t.Fatal(err)
		}
		losses = append(losses, l)
	}
	return losses
}

// TestTrainingBF16FollowsFP32: a bf16 training run on the GPU (or the
// emulator) — BF16 weights and activations, F32 master weights, gradients,
// moments, logits and losses, clipping on the device — follows the CPU's
// bf16 run closely and the CPU's fp32 run within 2% at every step.
func TestTrainingBF16FollowsFP32(t *testing.T) {
	g := gpuOrSkip(t)
	const steps = 20
	gpu := trainHidden(t, g, kdrt.PrecisionBF16, steps)
	cpu16 := trainHidden(t, cpu.New(), kdrt.PrecisionBF16, steps)
	cpu32 := trainHidden(t, cpu.New(), kdrt.PrecisionFP32, steps)
	t.Logf("loss: GPU bf16 %.4f → %.4f; CPU bf16 %.4f → %.4f; CPU fp32 %.4f → %.4f",
		gpu[0], gpu[steps-1], cpu16[0], cpu16[steps-1], cpu32[0], cpu32[steps-1])
	if !(gpu[steps-1] < gpu[0]*0.8) {
		t.Errorf("GPU bf16 loss went from %.4f to %.4f: it did not fall", gpu[0], gpu[steps-1])
	}
	for i := range gpu {
		if e := math.Abs(gpu[i]-cpu32[i]) / cpu32[i]; e > 0.02 {
			t.Errorf("step %d: GPU bf16 loss %.5f, CPU fp32 %.5f (%.2f%% apart, at most 2%%)", i, gpu[i], cpu32[i], 100*e)
		}
		if e := math.Abs(gpu[i]-cpu16[i]) / cpu16[i]; e > 5e-3 {
			t.Errorf("step %d: GPU bf16 loss %.5f, CPU bf16 %.5f (%.2g apart)", i, gpu[i], cpu16[i], e)
		}
	}
}
