package train

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// rlRecipe is an RL run of the demo world whose student is the demo's
// teacher (a model that already writes Moby-Dick, so it earns some reward
// to learn from): prompts are each line's first 24 tokens, and the rule
// rewards an answer whose first word completes the line as the text does.
func (w *demoWorld) rlRecipe(out string, term RLTerm) Recipe {
	r := w.recipe(out, OnPolicyTerm{})
	r.Objectives.OnPolicy = nil
	r.Student, r.Teacher = w.teacher, ""
	r.Optim.LR = 1e-3
	if term.Weight == 0 {
		term.Weight = 1
	}
	if term.Reward == "" {
		term.Reward = "rule"
		term.Extract, term.ReferenceExtract = `^\s*(\S+)`, `^\s*(\S+)`
	}
	if term.PromptTokens == 0 {
		term.PromptTokens = 24
	}
	if term.MaxNewTokens == 0 {
		term.MaxNewTokens = 12
	}
	r.Objectives.RL = &term
	return r
}

// TestRLRuleRewardRises: GRPO with the rule's reward raises the reward of
// the student's answers: against a control run that samples the same
// prompts with the same seeds but whose learning rate is negligible (so
// the answers differ only by what was learnt), the trained student's mean
// reward over the later steps is clearly higher, while its KL to the
// reference (the student as it started) grows from 0; the progress line
// and the metrics carry the reward and the generation/reward/training
// split, and the evaluations' answers go to samples.jsonl.
func TestRLRuleRewardRises(t *testing.T) {
	w := newDemoWorld(t, 96)
	mean := func(recs []map[string]any, key string) float64 {
		var s float64
		for _, rec := range recs {
			s += rec[key].(float64)
		}
		return s / float64(len(recs))
	}
	var reward, kl [2]float64
	var log string
	var out string
	for i, lr := range []float64{1e-12, 5e-4} {
		r := w.rlRecipe(filepath.Join(w.dir, fmt.Sprintf("rl-%d", i)), RLTerm{GroupSize: 8, MaxNewTokens: 6})
		r.MaxSteps, r.BatchSize, r.LogEvery, r.Optim.LR = 30, 8, 1, lr
		_, log = run(t, r, false)
		out = r.Output
		m := metricLines(t, r.Output)
		if len(m) != 30 || m[0]["kl_ref"].(float64) > 1e-4 || mean(m, "mean_ratio") < 0.999 || mean(m, "mean_ratio") > 1.001 {
			t.Fatalf("metrics: %d steps, first KL %v, mean ratio %v (want 30, ≈0, ≈1)", len(m), m[0]["kl_ref"], mean(m, "mean_ratio"))
		}
		reward[i], kl[i] = mean(m[10:], "reward"), mean(m[20:], "kl_ref")
		t.Logf("lr %g: mean reward %.3f (steps 1-10) → %.3f (steps 11-30); KL to the reference %.4f (steps 21-30)", lr, mean(m[:10], "reward"), reward[i], kl[i])
	}
	// measured: 0.149 (control) and 0.333 (trained)
	if !(reward[1] > reward[0]+0.08) || !(kl[1] > 0.01) {
		t.Fatalf("the trained student's reward %.3f is not clearly above the control's %.3f (KL %.4f)", reward[1], reward[0], kl[1])
	}
	for _, want := range []string{"reward ", "gen ", "score ", "train ", "kl ", "64 answers", "mean reward", "answer 1 (reward "} {
		if !strings.Contains(log, want) {
			t.Errorf("the log has no %q:\n%s", want, log)
		}
	}
	last := metricLines(t, out)[29]
	for _, k := range []string{"gen_s", "score_s", "train_s", "rl", "reward", "clip_fraction", "sampled_rows"} {
		if _, ok := last[k]; !ok {
			t.Errorf("metrics record has no %s: %v", k, last)
		}
	}
	// one answer per validation prompt with a reference (of the first 8), at
	// step 0 and at the end
	mm := regexp.MustCompile(`mean reward [0-9.]+ on (\d+) validation prompts`).FindStringSubmatch(log)
	samples, err := os.ReadFile(filepath.Join(out, "samples.jsonl"))
	n := 0
	if mm != nil {
		n, _ = strconv.Atoi(mm[1])
	}
	if n < 5 || err != nil || strings.Count(string(samples), "\n") != 2*n || !strings.Contains(string(samples), `"reward":`) {
		t.Fatalf("samples.jsonl (%v):\n%s", err, samples)
	}
}

// TestRLResumeIsBitIdentical: a run stopped after a checkpoint and resumed
// samples the same answers as one that ran straight through — the sampling
// state is in the checkpoint, the reference is the student as it started —
// so its final weights, losses and logged answers are the same bytes; sft
// mixes in on the same rows, over two micro-batches a step.
func TestRLResumeIsBitIdentical(t *testing.T) {
	w := newDemoWorld(t, 48)
	base := w.rlRecipe("", RLTerm{GroupSize: 2, Temperature: ptr(0.9), TopP: 0.95, EvalSamples: ptr(4)})
	base.Objectives.SFT = &SFTTerm{Weight: 0.2}
	base.MaxSteps, base.LogEvery, base.SaveEvery, base.EvalEvery, base.GradAccum, base.BatchSize = 8, 1, 4, 4, 2, 4

	straight := base
	straight.Output = filepath.Join(w.dir, "straight")
	run(t, straight, false)

	stopped := base
	stopped.Output = filepath.Join(w.dir, "stopped")
	ctx, cancel := context.WithCancel(context.Background())
	var log bytes.Buffer
	_, err := Run(ctx, cpu.New(), stopped, Options{Log: cancelAfter{&log, "step 4/8", cancel}})
	if err != ErrInterrupted {
		t.Fatalf("interrupted run: %v\n%s", err, log.String())
	}
	run(t, stopped, true)
	sameRun(t, straight.Output, stopped.Output)
}

// judgeServer is an OpenAI-compatible chat endpoint that judges as a
// teacher would be asked by elicit's judging prompt: it reads the answer
// from the prompt and scores it 8 when it holds an "e", 2 otherwise, "I
// cannot say" (no score) when it holds a "q"; every request after the
// first okRequests gets 503.
func judgeServer(t *testing.T, okRequests int64) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		if n.Add(1) > okRequests {
			rw.WriteHeader(http.StatusServiceUnavailable)
			rw.Write([]byte(`{"error":{"message":"the judge is down for maintenance","type":"server_error"}}`))
			return
		}
		var req struct {
			Messages []struct{ Content string } `json:"messages"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		p := req.Messages[0].Content
		i, j := strings.Index(p, "Response:\n"), strings.LastIndex(p, "\n\nRate the response")
		if i < 0 || j < i || !strings.Contains(p, "Reference answer:\n") {
			rw.WriteHeader(http.StatusBadRequest)
			return
		}
		answer := p[i+len("Response:\n") : j]
		reply := "Score: 2"
		switch {
		case strings.Contains(answer, "q"):
			reply = "I cannot say"
		case strings.Contains(answer, "e"):
			reply = "Score: 8"
		}
		out, _ := json.Marshal(map[string]any{"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": reply}, "finish_reason": "stop"}},
			"usage": map[string]any{"prompt_tokens": 10, "completion_tokens": 3}})
		rw.Write(out)
	}))
	t.Cleanup(ts.Close)
	return ts, &n
}

// TestRLJudgeEndpointFailsThenResumes: with the teacher as judge behind an
// endpoint, every answer is scored by elicit's judging prompt (shown the
// reference), the rewards are score / max_score, and an unscored judgement
// counts as unjudged; an endpoint that stops answering stops the run with
// an error naming the judge after writing a checkpoint of the last whole
// step, and --resume against the endpoint back up ends with the same
// weights, losses and answers as a run that never failed.
func TestRLJudgeEndpointFailsThenResumes(t *testing.T) {
	w := newDemoWorld(t, 48)
	base := w.rlRecipe("", RLTerm{Reward: "judge", GroupSize: 2, JudgeModel: "judge", EvalSamples: ptr(4), JudgeConcurrency: 3})
	base.MaxSteps, base.LogEvery, base.SaveEvery, base.BatchSize = 6, 1, 0, 4

	healthy, n := judgeServer(t, 1<<40)
	straight := base
	straight.Objectives.RL = ptr(*base.Objectives.RL)
	straight.Objectives.RL.JudgeEndpoint = healthy.URL + "/v1"
	straight.Output = filepath.Join(w.dir, "straight")
	run(t, straight, false)
	m := metricLines(t, straight.Output)
	unjudged := 0.0
	for _, rec := range m {
		if r := rec["reward"].(float64); r < 0.2 || r > 0.8 {
			t.Fatalf("a step's mean reward %g is outside the judge's 2/10 … 8/10", r)
		}
		unjudged += rec["unjudged"].(float64)
	}
	// 6 steps of 8 answers and 2 evaluations of 4, less the empty answers
	if got := n.Load(); got > 6*8+2*4 || got < 6*8 {
		t.Errorf("%d judgements asked, want about %d", got, 6*8+2*4)
	}
	t.Logf("%d judgements, %g unjudged", n.Load(), unjudged)

	// The judge answers the evaluation and two steps, then fails in the third.
	failing, _ := judgeServer(t, 4+2*8)
	stopped := base
	stopped.Objectives.RL = ptr(*base.Objectives.RL)
	stopped.Objectives.RL.JudgeEndpoint = failing.URL + "/v1"
	stopped.Output = filepath.Join(w.dir, "stopped")
	var flog bytes.Buffer
	_, err := Run(context.Background(), cpu.New(), stopped, Options{Log: &flog})
	if err == nil {
		t.Fatalf("the run did not fail\n%s", flog.String())
	}
	msg := err.Error()
	for _, want := range []string{"step 3", "the judge", "503", "down for maintenance", "--resume"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q: %v", want, msg)
		}
	}
	ckpts, _ := filepath.Glob(filepath.Join(stopped.Output, "checkpoint-*"))
	if len(ckpts) != 1 || !strings.HasSuffix(ckpts[0], "checkpoint-2") {
		t.Fatalf("checkpoints %v; error %v", ckpts, msg)
	}
	back, _ := judgeServer(t, 1<<40)
	stopped.Objectives.RL.JudgeEndpoint = back.URL + "/v1"
	run(t, stopped, true)
	sameRun(t, straight.Output, stopped.Output)
}

// TestRLRefusesData: rows whose reference the rule cannot read are left
// out and reported under data.on_bad_line skip and refuse the run under
// stop (or when no row is left), saying how many and which; rows learnt
// whole without prompt_tokens are refused.
func TestRLRefusesData(t *testing.T) {
	w := newDemoWorld(t, 16)
	math := filepath.Join(w.dir, "math.jsonl")
	var b strings.Builder
	for i := range 6 {
		resp := fmt.Sprintf("%d and %d make %d.\n#### %d", i, i, 2*i, 2*i)
		if i%3 == 1 {
			resp = "I do not know."
		}
		line, _ := json.Marshal(map[string]string{"prompt": fmt.Sprintf("What is %d + %d? ", i, i), "response": resp})
		b.Write(append(line, '\n'))
	}
	os.WriteFile(math, []byte(b.String()), 0o644)
	term := RLTerm{Reward: "rule", Extract: "gsm8k", ReferenceExtract: "gsm8k", Match: "numeric", GroupSize: 2, EvalSamples: ptr(0)}
	r := w.rlRecipe(filepath.Join(w.dir, "math-stop"), term)
	r.Data.Train, r.Data.Val, r.Data.ValFraction, r.Data.OnBadLine, r.MaxSteps, r.BatchSize = math, "", 0, "stop", 2, 2
	r.Objectives.RL.PromptTokens = 0
	_, err := Run(context.Background(), cpu.New(), r, Options{})
	if err == nil || !regexp.MustCompile(`objectives.rl: 2 of 6 rows of .*math.jsonl have no usable reference answer for reward rule .*first: row \d \("What is [14] \+ [14]\? "…\): "reference" "I do not know." has no answer to extract with "gsm8k"`).MatchString(err.Error()) {
		t.Fatalf("%v", err)
	}
	r.Data.OnBadLine, r.Output = "skip", filepath.Join(w.dir, "math-skip")
	if _, log := run(t, r, false); !strings.Contains(log, "have no usable reference answer") || !strings.Contains(log, "left out of objectives.rl") {
		t.Fatalf("the log does not report the rows left out:\n%s", log)
	}

	// A {"text"} line no longer than its prompt_tokens (and its EOS, which is
	// not text) has an empty reference.
	short := filepath.Join(w.dir, "short.jsonl")
	os.WriteFile(short, []byte(`{"text": "Call me Ishmael. Some years ago, never mind how long."}`+"\n"+`{"text": "Call me Ishmael. Some ye"}`+"\n"), 0o644)
	r = w.rlRecipe(filepath.Join(w.dir, "short"), RLTerm{})
	r.Data.Train, r.Data.Val, r.Data.ValFraction, r.Data.OnBadLine, r.MaxSteps = short, "", 0, "stop", 1
	if _, err = Run(context.Background(), cpu.New(), r, Options{}); err == nil || !strings.Contains(err.Error(), "1 of 2 rows") || !strings.Contains(err.Error(), "has an empty response") {
		t.Fatalf("%v", err)
	}

	r = w.rlRecipe(filepath.Join(w.dir, "np"), RLTerm{})
	r.Objectives.RL.PromptTokens = 0 // (rlRecipe's default is 24)
	_, err = Run(context.Background(), cpu.New(), r, Options{})
	if err == nil || !strings.Contains(err.Error(), "16 of 16 rows") || !strings.Contains(err.Error(), "objectives.rl.prompt_tokens") {
		t.Fatalf("%v", err)
	}
}

// TestRLRecipeChecks: every objectives.rl key out of its domain, and
// combinations that cannot work, are reported naming the key.
func TestRLRecipeChecks(t *testing.T) {
	base := DefaultRecipe()
	base.Student, base.Data.Train, base.Output, base.MaxSteps = "s", "d.jsonl", "o", 1
	for _, c := range []struct {
		edit func(r *Recipe, o *RLTerm)
		want string
	}{
		{func(r *Recipe, o *RLTerm) { o.Reward = "" }, "objectives.rl.reward: required"},
		{func(r *Recipe, o *RLTerm) { o.Reward = "vibes" }, `objectives.rl.reward: "vibes" is not one of [rule judge]`},
		{func(r *Recipe, o *RLTerm) { o.GroupSize = 1 }, "objectives.rl.group_size: 1: GRPO compares"},
		{func(r *Recipe, o *RLTerm) { o.Weight = -1 }, "objectives.rl.weight: -1 must be positive"},
		{func(r *Recipe, o *RLTerm) { o.Temperature = ptr(0.0) }, "objectives.rl.temperature: 0 must be positive"},
		{func(r *Recipe, o *RLTerm) { o.Epsilon = ptr(1.0) }, "objectives.rl.epsilon: 1 must be in [0, 1)"},
		{func(r *Recipe, o *RLTerm) { o.Beta = ptr(-0.1) }, "objectives.rl.beta: -0.1 must be finite and ≥ 0"},
		{func(r *Recipe, o *RLTerm) { o.LossType = "sum" }, `objectives.rl.loss_type: "sum" is not one of`},
		{func(r *Recipe, o *RLTerm) { o.Reference = "field" }, `objectives.rl.reference: "field" is not one of [response none]`},
		{func(r *Recipe, o *RLTerm) { o.Reference = "none" }, "objectives.rl.must_match: reference: none leaves the rule nothing to check"},
		{func(r *Recipe, o *RLTerm) { o.Extract = "(a)(b)" }, `extract "(a)(b)" has 2 groups`},
		{func(r *Recipe, o *RLTerm) { o.Match = "fuzzy" }, `match "fuzzy"`},
		{func(r *Recipe, o *RLTerm) { o.Criteria = "wit" }, "objectives.rl.reward: is rule: the judge's keys"},
		{func(r *Recipe, o *RLTerm) { o.Reward, o.Extract = "judge", "boxed" }, "objectives.rl.reward: is judge: the rule's keys"},
		{func(r *Recipe, o *RLTerm) { o.Reward = "judge" }, "objectives.rl.judge: reward judge needs a judge"},
		{func(r *Recipe, o *RLTerm) { o.Reward, o.JudgeEndpoint = "judge", "http://x/v1" }, "objectives.rl.judge_model: required"},
		{func(r *Recipe, o *RLTerm) { o.Reward, o.JudgeEndpoint, o.JudgeModel = "judge", "x:8000", "m" }, "not an http:// or https:// URL"},
		{func(r *Recipe, o *RLTerm) { o.Reward, o.Judge, o.JudgeModel = "judge", "t", "m" }, "go with judge_endpoint"},
		{func(r *Recipe, o *RLTerm) { r.Data.Pack = true }, "objectives.rl: samples answers per row"},
		{func(r *Recipe, o *RLTerm) { r.Teacher, r.Objectives.OnPolicy = "t", &OnPolicyTerm{Weight: 1} }, "cannot be mixed with objectives.onpolicy"},
		{func(r *Recipe, o *RLTerm) { r.Objectives.DPO = &DPOTerm{Weight: 1} }, "cannot be mixed with sft, kd, feature, onpolicy or rl"},
	} {
		r := base
		o := &RLTerm{Weight: 1, Reward: "rule"}
		r.Objectives.RL = o
		c.edit(&r, o)
		err := r.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, want an error saying %q", err, c.want)
		}
	}
	ok := base
	ok.Objectives.RL = &RLTerm{Weight: 1, Reward: "rule", Extract: "gsm8k", ReferenceExtract: "gsm8k", Match: "numeric"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("a valid rule: %v", err)
	}
	_, err := ParseRecipe([]byte("objectives:\n  rl: {weight: 1, reward: rule, group_sise: 4}\n"), "r.yaml")
	if err == nil || !strings.Contains(err.Error(), "unknown key objectives.rl.group_sise (did you mean group_size?)") {
		t.Fatalf("%v", err)
	}
}

// TestRLGroupOverMemory: a micro-batch trains on batch_size × group_size
// answers, and a group too large for the memory is refused before
// training, naming group_size, instead of failing in the first step's
// sampling.
func TestRLGroupOverMemory(t *testing.T) {
	w := newDemoWorld(t, 16)
	r := w.rlRecipe(filepath.Join(w.dir, "big"), RLTerm{GroupSize: 1_000_000_000})
	_, err := Run(context.Background(), cpu.New(), r, Options{})
	var oom *kdrt.OutOfMemoryError
	if !errors.As(err, &oom) || !strings.Contains(err.Error(), "objectives.rl with batch_size 8 × group_size 1000000000 answers × data.max_len 128") ||
		!strings.Contains(err.Error(), "objectives.rl.group_size") {
		t.Fatalf("%v, want an out-of-memory error naming group_size", err)
	}
}
