package train

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/internal/ref"
	"github.com/kdnative/kdnative/kd/rollout"
	"github.com/kdnative/kdnative/model/safetensors"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// iterTerm is an RL term for the num_iterations tests whose rule rewards
// about half the answers — those whose first word starts with a to m —
// so that most groups have advantages to learn from.
func iterTerm(mu int) RLTerm {
	return RLTerm{Reward: "rule", Reference: "none", Extract: `^\s*(\S+)`, MustMatch: `^[a-mA-M]`,
		GroupSize: 4, NumIterations: mu, MaxNewTokens: 8, Temperature: ptr(0.9)}
}

// TestRLIterationsReuseAnswersAndClip: with num_iterations 2 (μ) over one
// epoch of 16 rows in steps of two micro-batches of 4 rows, the run has
// twice the steps of the epoch's 2 samplings, and each sampling's answers
// are trained on at two steps in a row in the same micro-batches, the
// sampled rows covering the epoch once. The first step of a pair trains
// with the ratio exactly 1 and its own log-probabilities, which agree with
// the sampler's (an independent computation, while decoding) and are the
// old ones the second step divides by. A learning rate large enough that
// Adam's first update moves the policy well out of the clip range makes
// the second step's ratios leave [0.8, 1.2] in the direction of the
// advantages, so the clip acts; its log-probabilities are those of the
// updated student scored afresh (rollout.Local), and its loss and clipped
// count are the float64 GRPO formula's from those log-probabilities and
// the stored old ones. The progress line and metrics say which iteration a
// step is, with its mean ratio and clip fraction.
func TestRLIterationsReuseAnswersAndClip(t *testing.T) {
	w := newDemoWorld(t, 16)
	r := w.rlRecipe(filepath.Join(w.dir, "iter"), iterTerm(2))
	r.Objectives.RL.Beta, r.Objectives.RL.EvalSamples = ptr(0.04), ptr(0)
	r.MaxSteps, r.Epochs, r.BatchSize, r.GradAccum, r.LogEvery = 0, 1, 4, 2, 1
	r.Optim.LR = 2e-2 // Adam's first step moves every weight by about this much
	var obs []rlObservation
	var scoreErr float64
	observe := func(o rlObservation) {
		if o.iter == 2 { // the step's own log-probabilities: the student before its update, scored afresh
			scores, err := rollout.Local{Model: o.student, Pad: 0}.Score(context.Background(), o.batch.Sequences())
			if err != nil {
				t.Error(err)
				return
			}
			lp, _ := o.batch.Scatter(scores)
			for i, tg := range o.batch.Targets {
				if tg != kdrt.IgnoreIndex {
					scoreErr = math.Max(scoreErr, math.Abs(lp[i]-o.res.LogProbs[i]))
				}
			}
		}
		obs = append(obs, o)
	}
	var log bytes.Buffer
	sum, err := Run(context.Background(), cpu.New(), r, Options{Log: &log, observeRL: observe})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if sum.Steps != 4 || len(obs) != 8 {
		t.Fatalf("%d steps and %d micro-batches; want 4 and 8 (one epoch of 16 rows is 2 samplings of 8 rows, trained on twice each)", sum.Steps, len(obs))
	}
	prompts := map[string]int{}
	for k, o := range obs {
		step, iter, micro := k/2+1, k/2%2+1, k%2
		if o.step != step || o.iter != iter {
			t.Fatalf("micro-batch %d: step %d iteration %d, want step %d iteration %d", k, o.step, o.iter, step, iter)
		}
		targets := make([]int, len(o.batch.Targets))
		for i, tg := range o.batch.Targets {
			targets[i] = int(tg)
			if tg == kdrt.IgnoreIndex {
				targets[i] = -1
			}
		}
		if iter == 1 {
			for _, s := range o.batch.Sequences() {
				prompts[fmt.Sprint(s.Tokens[:s.Start])]++
			}
			if o.old != nil || o.res.MeanRatio != 1 || o.res.ClipFraction != 0 {
				t.Fatalf("step %d: old %v, mean ratio %v, clip fraction %v: the first step on a sampling must train with the ratio exactly 1", step, o.old != nil, o.res.MeanRatio, o.res.ClipFraction)
			}
			moving := 0
			for i, tg := range targets {
				if tg < 0 {
					continue
				}
				if d := math.Abs(o.res.LogProbs[i] - o.batch.Sampled[i]); d > 1e-4 {
					t.Fatalf("step %d micro-batch %d row %d: the training forward's log-probability %g, the sampler's %g", step, micro, i, o.res.LogProbs[i], o.batch.Sampled[i])
				}
				if o.adv[i] != 0 {
					moving++
				}
			}
			if moving == 0 {
				t.Fatalf("step %d micro-batch %d: every advantage is 0, the case teaches nothing (the reward should split the groups)", step, micro)
			}
			continue
		}
		first := obs[k-2]
		if !slices.Equal(o.batch.IDs, first.batch.IDs) || !slices.Equal(o.batch.Targets, first.batch.Targets) || !slices.Equal(o.adv, first.adv) || !slices.Equal(o.ref, first.ref) {
			t.Fatalf("step %d micro-batch %d does not train on the answers, advantages and reference of step %d's", step, micro, step-1)
		}
		var moved float64
		far := false
		for i, tg := range targets {
			if tg < 0 {
				continue
			}
			if o.old[i] != first.res.LogProbs[i] {
				t.Fatalf("step %d row %d: old log-probability %v, the sampling policy's (step %d's own) %v", step, i, o.old[i], step-1, first.res.LogProbs[i])
			}
			lr := o.res.LogProbs[i] - o.old[i]
			moved += o.adv[i] * lr
			far = far || math.Abs(math.Exp(lr)-1) > 0.2
		}
		if !(moved > 0) || !far || o.res.MeanRatio == 1 {
			t.Fatalf("step %d micro-batch %d: Σ A·log r = %g, a ratio outside [0.8, 1.2]: %v, mean ratio %v — the first update did not move the policy along the advantages", step, micro, moved, far, o.res.MeanRatio)
		}
		c := o.cfg
		want, clipped := ref.GRPOLossLogProbs(o.res.LogProbs, targets, o.old, o.ref, o.adv, o.weights, c.EpsLow, c.EpsHigh, c.Beta, c.KLRatio)
		if math.Abs(o.res.Loss-want) > 1e-12*math.Max(1, math.Abs(want)) {
			t.Fatalf("step %d micro-batch %d: loss %.15g, float64 formula %.15g", step, micro, o.res.Loss, want)
		}
		if got := int(math.Round(o.res.ClipFraction * float64(o.res.Tokens))); got != clipped || clipped == 0 {
			t.Fatalf("step %d micro-batch %d: %d tokens clipped, the formula %d (want some)", step, micro, got, clipped)
		}
		t.Logf("step %d micro-batch %d: mean ratio %.3f, clip fraction %.3f (%d of %d tokens), loss %.6f", step, micro, o.res.MeanRatio, o.res.ClipFraction, clipped, o.res.Tokens, o.res.Loss)
	}
	if len(prompts) != 16 {
		t.Fatalf("the epoch's samplings answered %d distinct prompts, want its 16 rows once each: %v", len(prompts), prompts)
	}
	for p, n := range prompts {
		if n != 4 { // G answers to each
			t.Fatalf("prompt %s answered %d times, want 4 (once per row, G = 4)", p, n)
		}
	}
	if scoreErr > 1e-4 {
		t.Fatalf("the second steps' log-probabilities are off the student's own scores by %g", scoreErr)
	}
	m := metricLines(t, r.Output)
	for i, rec := range m {
		it, _ := rec["rl_iteration"].(float64)
		if it != float64(i%2+1) || (it == 1) != (rec["mean_ratio"] == 1.0) || (it == 2) != (rec["clip_fraction"].(float64) > 0) {
			t.Fatalf("step %d: rl_iteration %v, mean_ratio %v, clip_fraction %v", i+1, rec["rl_iteration"], rec["mean_ratio"], rec["clip_fraction"])
		}
	}
	if !strings.Contains(log.String(), "iter 1/2, ratio 1.0000, clip 0.000") || !strings.Contains(log.String(), "iter 2/2, ratio ") {
		t.Fatalf("the progress line does not say the iteration:\n%s", log.String())
	}
}

// TestRLIterationsResumeMidSampling: with num_iterations 3, a run stopped
// (Ctrl-C) after the first step on a sampling, and one killed after a
// checkpoint made after its second step — between the steps that train on
// one sampling, the answers in the checkpoint — resume to the same final
// weights, losses and answers, bit for bit, as a run that went straight
// through (8 steps: samplings at steps 1, 4 and 7, the last trained on
// twice); checkpoints at a sampling's end hold no answers, only the
// sampling state, as checkpoints did before num_iterations.
func TestRLIterationsResumeMidSampling(t *testing.T) {
	w := newDemoWorld(t, 48)
	term := iterTerm(3)
	term.EvalSamples = ptr(4)
	base := w.rlRecipe("", term)
	base.Objectives.SFT = &SFTTerm{Weight: 0.2}
	base.MaxSteps, base.LogEvery, base.EvalEvery, base.GradAccum, base.BatchSize = 8, 1, 4, 2, 4
	base.Optim.LR = 5e-3

	straight := base
	straight.Output, straight.SaveEvery = filepath.Join(w.dir, "straight"), 3
	run(t, straight, false)
	for _, c := range []string{"checkpoint-3", "checkpoint-6"} {
		if st := rlCheckpointState(t, filepath.Join(straight.Output, c)); len(st) != 1 || st["rng"] == nil {
			t.Fatalf("%s (a sampling's last step) has RL state %v, want the sampling state alone", c, st)
		}
	}

	// Stopped after step 4, the first of the second sampling's three.
	stopped := base
	stopped.Output, stopped.SaveEvery = filepath.Join(w.dir, "stopped"), 0
	ctx, cancel := context.WithCancel(context.Background())
	var log bytes.Buffer
	if _, err := Run(ctx, cpu.New(), stopped, Options{Log: cancelAfter{&log, "step 4/8", cancel}}); err != ErrInterrupted {
		t.Fatalf("interrupted run: %v\n%s", err, log.String())
	}
	checkBuffered(t, filepath.Join(stopped.Output, "checkpoint-4"), 1)
	run(t, stopped, true)
	sameRun(t, straight.Output, stopped.Output)

	// Killed after checkpoint-5 (the second of its three steps) was
	// written: what a kill -9 leaves is that checkpoint, and resume reads
	// nothing else.
	killed := base
	killed.Output, killed.SaveEvery = filepath.Join(w.dir, "killed"), 5
	run(t, killed, false)
	checkBuffered(t, filepath.Join(killed.Output, "checkpoint-5"), 2)
	for _, f := range []string{"checkpoint-8", "model.safetensors", "config.json"} {
		if err := os.RemoveAll(filepath.Join(killed.Output, f)); err != nil {
			t.Fatal(err)
		}
	}
	if _, out := run(t, killed, true); !strings.Contains(out, "resumed from "+filepath.Join(killed.Output, "checkpoint-5")) || !strings.Contains(out, "iter 3/3") {
		t.Fatalf("the resumed run did not start from checkpoint-5 at the sampling's third step:\n%s", out)
	}
	sameRun(t, straight.Output, killed.Output)
}

// rlCheckpointState is a checkpoint's training state's rl object.
func rlCheckpointState(t *testing.T, dir string) map[string]any {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st struct{ RL map[string]any }
	if err := json.Unmarshal([]byte(f.Metadata()[stateKey]), &st); err != nil {
		t.Fatal(err)
	}
	return st.RL
}

// checkBuffered checks that a checkpoint holds a sampling's answers, used
// by that many steps.
func checkBuffered(t *testing.T, dir string, used int) {
	t.Helper()
	buf, _ := rlCheckpointState(t, dir)["buffer"].(map[string]any)
	if buf == nil || buf["used"] != float64(used) || len(buf["batches"].([]any)) != 2 {
		t.Fatalf("%s: RL buffer %v, want the sampling's 2 micro-batches used by %d steps", dir, buf != nil, used)
	}
}

// TestRLIterationsRecipe: num_iterations below 1 is refused naming the key;
// a checkpoint's answers that do not fit the run are refused on resume,
// an unjudged answer's reward comes back NaN, and a checkpoint made before
// num_iterations (the sampling state alone) restores with no answers.
func TestRLIterationsRecipe(t *testing.T) {
	r := DefaultRecipe()
	r.Student, r.Data.Train, r.Output, r.MaxSteps = "s", "d.jsonl", "o", 1
	r.Objectives.RL = &RLTerm{Weight: 1, Reward: "rule", NumIterations: -2}
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "objectives.rl.num_iterations: -2 must be ≥ 1") {
		t.Fatalf("%v", err)
	}
	tr := &trainer{r: r, rl: &rlRun{term: &RLTerm{NumIterations: 2}}}
	tr.r.GradAccum = 1
	tr.rl.pcg = rand.NewPCG(1, 2)
	good := tr.saveRL()
	if good.Buffer != nil {
		t.Fatal("a run without a sampling saves answers")
	}
	bad := *good
	bad.Buffer = &rlBufferState{Used: 1, Batches: []rlBatchState{{Prompts: [][]int32{{1, 2}}, Responses: [][]int32{{3}}, Rewards: []*float64{nil}, Advantages: []float64{0}, Old: [][]float64{{-1, -2}}}}}
	if err := tr.restoreRL(&bad); err == nil || !strings.Contains(err.Error(), "resume: the checkpoint's RL answers") || !strings.Contains(err.Error(), "1 response tokens and 2 log-probabilities") {
		t.Fatalf("%v", err)
	}
	bad.Buffer.Batches[0].Old = [][]float64{{-1}}
	if err := tr.restoreRL(&bad); err != nil || len(tr.rl.buf) != 1 || !math.IsNaN(tr.rl.buf[0].rewards[0]) || tr.rl.used != 1 {
		t.Fatalf("a whole buffer: %v", err)
	}
	// A checkpoint made before num_iterations: the sampling state alone.
	var old rlState
	if err := json.Unmarshal([]byte(fmt.Sprintf(`{"rng": %q}`, good.RNG)), &old); err != nil {
		t.Fatal(err)
	}
	if err := tr.restoreRL(&old); err != nil || tr.rl.buf != nil {
		t.Fatalf("a checkpoint without answers: %v, buffer %v", err, tr.rl.buf)
	}
}
