package train

import (
	"context"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/kd/rollout"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/safetensors"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestGRPOMatchesTRL: on six answers in two groups of three (one answer
// unscorable), laid out by kd/rollout as objectives.rl lays them out, the
// group advantages are TRL's, the reference's log-probabilities (scored by
// rollout.Local) are the ones TRL was given, and kd/loss.GRPO — with the
// sampling policy's log-probabilities moved so that the ratios fall on
// both sides of the clip range — gives the loss of TRL's
// GRPOTrainer._compute_loss called directly and the same gradient for
// every policy parameter, for loss_type grpo with and without the KL
// penalty (times the ratio, TRL's use_bias_correction_kl) and bnpo with
// the plain one (testdata/grpo,
// scripts/fixtures/make_grpo_fixtures.py; float64 references against
// float32 arithmetic).
func TestGRPOMatchesTRL(t *testing.T) {
	be := cpu.New()
	policy, err := model.LoadDir("testdata/onpolicy/student", be)
	if err != nil {
		t.Fatal(err)
	}
	reference, err := model.LoadDir("testdata/onpolicy/teacher", be)
	if err != nil {
		t.Fatal(err)
	}
	fx, err := safetensors.Open("testdata/grpo/grpo.safetensors")
	if err != nil {
		t.Fatalf("%v (make it with scripts/fixtures/make_grpo_fixtures.py)", err)
	}
	defer fx.Close()
	ints := func(name string) []int32 {
		v, err := fx.Int32(name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	f32 := func(name string) []float32 {
		v, err := fx.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	ids, mask := ints("ids"), ints("completion_mask")
	P, G := int(ints("prompt_len")[0]), int(ints("group_size")[0])
	B := len(f32("rewards"))
	C := len(mask) / B
	T := P + C
	old, refLP := f32("old"), f32("ref")

	rewards := make([]float64, B)
	for i, r := range f32("rewards") {
		rewards[i] = float64(r)
	}
	adv, err := loss.GroupAdvantages(rewards, G, true)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range f32("advantages") {
		if math.Abs(adv[i]-float64(want)) > 1e-6 {
			t.Fatalf("answer %d: advantage %g, TRL %g", i, adv[i], want)
		}
	}

	// The answers as rollouts: the prompt, then the completion through its
	// mask (its EOS included), with the sampling log-probabilities TRL got.
	var rs []rollout.Rollout
	for r := range B {
		row := ids[r*T : (r+1)*T]
		n := 0
		for n < C && mask[r*C+n] == 1 {
			n++
		}
		ro := rollout.Rollout{Prompt: row[:P], Response: row[P : P+n], LogProbs: old[r*C : r*C+n]}
		ro.SampleLogProbs = ro.LogProbs
		rs = append(rs, ro)
	}
	b, err := rollout.MakeBatch(rs, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	scores, err := rollout.Local{Model: reference}.Score(context.Background(), b.Sequences())
	if err != nil {
		t.Fatal(err)
	}
	ref, err := b.Scatter(scores)
	if err != nil {
		t.Fatal(err)
	}
	perRow := make([]float64, len(b.Targets))
	for i, tg := range b.Targets {
		if tg == kdrt.IgnoreIndex {
			continue
		}
		r, j := i/b.T, i%b.T-b.Starts[i/b.T]+1 // answer r's completion token j
		if want := float64(refLP[r*C+j]); math.Abs(ref[i]-want) > 1e-4 {
			t.Fatalf("answer %d token %d: reference log-probability %g, TRL was given %g", r, j, ref[i], want)
		}
		ref[i] = float64(refLP[r*C+j]) // the very numbers TRL used
		perRow[i] = adv[r]
	}

	for _, c := range []struct {
		lossType string
		beta     float64
		klRatio  bool
	}{{"grpo", 0.04, true}, {"grpo", 0, true}, {"bnpo", 0.1, false}} {
		name := c.lossType + ".beta=" + trimFloat(c.beta) + ".kl_ratio=0"
		if c.klRatio {
			name = name[:len(name)-1] + "1"
		}
		if err := policy.ZeroGrad(); err != nil {
			t.Fatal(err)
		}
		weights, err := loss.GRPOTokenWeights(b.Targets, b.T, c.lossType == "grpo", 1)
		if err != nil {
			t.Fatal(err)
		}
		h, err := policy.ForwardHidden(b.Batch)
		if err != nil {
			t.Fatal(err)
		}
		dh, err := be.Alloc("dh", kdrt.F32, h.Shape...)
		if err != nil {
			t.Fatal(err)
		}
		res, err := loss.GRPO(be, h, loss.Head{W: policy.Head().W, G: policy.Head().G}, dh, b.Targets, b.Sampled, ref, perRow, weights,
			loss.GRPOConfig{EpsLow: 0.2, EpsHigh: 0.28, Beta: c.beta, KLRatio: c.klRatio}, loss.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := policy.BackwardHidden(dh); err != nil {
			t.Fatal(err)
		}
		be.Free(dh)
		if res.ClipFraction == 0 || res.ClipFraction == 1 {
			t.Fatalf("%s: clip fraction %g: the case must clip some tokens and not others", name, res.ClipFraction)
		}
		want := float64(f32(name + ".loss")[0])
		if e := math.Abs(res.Loss-want) / math.Abs(want); e > 1e-5 {
			t.Fatalf("%s: loss %.8g, TRL %.8g (relative error %.2g)", name, res.Loss, want, e)
		}
		grads, _, err := policy.ExportTensors(true)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, n := range fx.Names() {
			if p, ok := strings.CutPrefix(n, name+".grad."); ok {
				names = append(names, p)
			}
		}
		sort.Strings(names)
		if len(names) != len(grads) {
			t.Fatalf("%s: %d gradients, TRL %d", name, len(grads), len(names))
		}
		worst := 0.0
		for _, n := range names {
			e := relErr(grads[n], f32(name+".grad."+n))
			worst = math.Max(worst, e)
			if e > 1e-4 {
				t.Errorf("%s: gradient of %s: relative error %.2g", name, n, e)
			}
		}
		t.Logf("%s: loss %.6f (TRL %.6f), clip fraction %.2f, worst gradient relative error %.2g", name, res.Loss, want, res.ClipFraction, worst)
	}
}
