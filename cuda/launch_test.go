package cuda

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/optim"
	"github.com/kdnative/kdnative/model"
)

// stepLaunches runs one training step of the Qwen2-shaped fixture (GQA,
// q/k/v biases, RMSNorm, SwiGLU, RoPE, tied embeddings: a student's shape)
// on g and returns what each phase queued: the forward with its
// cross-entropy, the backward, and the AdamW update.
func stepLaunches(t *testing.T, g *Backend) (fwd, bwd, opt LaunchCounts) {
	t.Helper()
	m, err := model.LoadDir(fixtureDir("qwen2_bias"), g)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.ZeroGrad(); err != nil {
		t.Fatal(err)
	}
	batch := randomBatch(rand.New(rand.NewPCG(1, 2)), 2, 13, m.Config.Vocab)
	var slots []optim.Slot
	for _, p := range m.Params() {
		slots = append(slots, optim.Slot{Name: p.Name, W: p.W, G: p.G, Master: p.Master, Decay: !p.NoDecay})
	}
	o, err := optim.NewAdamW(g, slots, optim.DefaultAdamW)
	if err != nil {
		t.Fatal(err)
	}
	// A first step allocates and compiles; the second is the steady state.
	for range 2 {
		g.ResetLaunches()
		if _, err := m.Forward(batch); err != nil {
			t.Fatal(err)
		}
		fwd = g.Launches()
		g.ResetLaunches()
		if err := m.ZeroGrad(); err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(); err != nil {
			t.Fatal(err)
		}
		bwd = g.Launches()
		g.ResetLaunches()
		if _, err := o.Step(1e-3); err != nil {
			t.Fatal(err)
		}
		opt = g.Launches()
	}
	return fwd, bwd, opt
}

// TestStepLaunches counts the launches of one student training step (the
// model's forward and backward; the optimizer is kd/optim's, one set per
// parameter tensor) and holds them to the fused kernels' count: a change
// that adds launches to the step shows here. docs/performance.md has the
// before and after.
func TestStepLaunches(t *testing.T) {
	g := gpuOrSkip(t)
	fwd, bwd, opt := stepLaunches(t, g)
	var sb strings.Builder
	for _, ph := range []struct {
		name string
		c    LaunchCounts
	}{{"forward", fwd}, {"backward", bwd}, {"adamw", opt}} {
		fmt.Fprintf(&sb, "%-8s %3d = %d kernels + %d GEMMs + %d memsets + %d copies:", ph.name, ph.c.Total(), ph.c.Kernels, ph.c.GEMMs, ph.c.Memsets, ph.c.Copies)
		var names []string
		for k := range ph.c.ByKernel {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			fmt.Fprintf(&sb, " %s×%d", k, ph.c.ByKernel[k])
		}
		sb.WriteString("\n")
	}
	t.Logf("one step of the 2-layer Qwen2 fixture:\n%s", sb.String())
	if got, want := fwd.Total()+bwd.Total(), maxStepLaunches; got > want {
		t.Errorf("the model's forward and backward queue %d operations, more than the %d of the fused kernels", got, want)
	}
	// The optimizer is multi-tensor: the gradient norm's partial sums, the
	// clip factor and the update of every parameter, whatever their number.
	if got := opt.Total(); got > 3 {
		t.Errorf("the AdamW step queues %d operations, more than the 3 of the multi-tensor kernels", got)
	}
}

// maxStepLaunches is the forward-and-backward count TestStepLaunches
// allows for the 2-layer fixture: 73 with the fused kernels (24 + 49),
// from 158 (40 + 118) before them.
const maxStepLaunches = 73
