package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/elicit"
	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/kd/rollout"
	"github.com/kdnative/kdnative/kd/serve"
	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// Reinforcement learning from a rule or the teacher's judgement
// (objectives.rl), GRPO as TRL's GRPOTrainer does it: the student answers
// each of a micro-batch's prompts group_size times (every answer of the
// step in one engine batch, kd/rollout), each answer gets a reward — from
// a rule on its extracted final answer (kd/tasks/answer, through elicit's
// RuleJudge) or from the teacher as a judge (elicit's TeacherJudge: the
// judging prompt of elicit self, a local model served in this process or
// an OpenAI-compatible endpoint) — and the student is trained with the
// group-relative clipped policy gradient and a KL penalty to the student as
// it started (kd/loss.GRPO). Under num_iterations μ > 1 a step's answers,
// rewards and advantages are trained on for μ optimizer steps in a row, on
// the same rows and micro-batches, as GRPOTrainer's buffered inputs are.

// RLTerm is the recipe's objectives.rl.
type RLTerm struct {
	Weight float64 `yaml:"weight"`
	// GroupSize is G, the answers per prompt whose rewards are compared
	// (default 4; at least 2). A micro-batch of batch_size prompts trains on
	// batch_size × G answers.
	GroupSize int `yaml:"group_size"`
	// Temperature and TopP shape the sampling (default 1 and the whole
	// distribution); the ratio and the KL are of the student's own
	// distribution (temperature 1).
	Temperature *float64 `yaml:"temperature,omitempty"`
	TopP        float64  `yaml:"top_p"`
	// MaxNewTokens bounds an answer (default 128).
	MaxNewTokens int `yaml:"max_new_tokens"`
	// PromptTokens, for rows learnt whole ({"text"} lines), takes each
	// row's first PromptTokens tokens as its prompt (the rest is its
	// reference).
	PromptTokens int `yaml:"prompt_tokens"`
	// Epsilon and EpsilonHigh bound the ratio to the sampling policy to
	// [1 − epsilon, 1 + epsilon_high] (default 0.2; epsilon_high defaults
	// to epsilon).
	Epsilon     *float64 `yaml:"epsilon,omitempty"`
	EpsilonHigh *float64 `yaml:"epsilon_high,omitempty"`
	// NumIterations is GRPO's μ (TRL's num_iterations, DeepSeekMath): the
	// answers sampled at one step, with their rewards and advantages, are
	// trained on for μ optimizer steps in a row — the same rows, in the
	// same micro-batches — so that from the second step on the ratio to
	// the sampling policy moves away from 1 and epsilon's clip acts
	// (default 1: every step samples afresh). As in TRL, the sampling
	// policy's log-probabilities are then the ones its first step computes
	// with the training forward (the weights have not moved yet). Under
	// epochs a row is still sampled once an epoch, so the run has μ times
	// the steps; max_steps counts optimizer steps.
	NumIterations int `yaml:"num_iterations"`
	// Beta weighs the KL penalty to the reference, the student as it
	// started (default 0.04; 0: no reference is loaded).
	Beta *float64 `yaml:"beta,omitempty"`
	// KLRatio multiplies each token's KL term by its ratio to the sampling
	// policy, which makes the KL gradient the unbiased reverse-KL gradient
	// (DeepSeek-V3.2; TRL's use_bias_correction_kl, its default). Default
	// true.
	KLRatio *bool `yaml:"kl_ratio,omitempty"`
	// ScaleRewards divides each advantage by its group's standard
	// deviation (default true; false is Dr. GRPO's unscaled advantage).
	ScaleRewards *bool `yaml:"scale_rewards,omitempty"`
	// LossType is grpo (the mean over each answer's tokens, then over the
	// answers; default) or token (the mean over all tokens: DAPO, TRL's
	// bnpo).
	LossType string `yaml:"loss_type"`
	// Reward is rule or judge.
	Reward string `yaml:"reward"`
	// Reference is where a row's reference answer is: response (the data's
	// response to the prompt, or a {"text"} row's text after its
	// prompt_tokens; default) or none (the rule checks must_match only).
	Reference string `yaml:"reference"`
	// The rule (reward: rule), as elicit self's: the final answer is
	// extracted from the answer (extract: boxed, gsm8k, last_number,
	// first_number or a regular expression; "" the whole answer) and
	// from the reference (reference_extract), and compared (match: exact
	// after normalize text, math or none; numeric within tolerance;
	// contains); must_match is a regular expression the extracted answer
	// must match. The reward is 1 or 0.
	Extract          string   `yaml:"extract"`
	ExtractLast      bool     `yaml:"extract_last"`
	ReferenceExtract string   `yaml:"reference_extract"`
	Match            string   `yaml:"match"`
	Normalize        string   `yaml:"normalize"`
	Tolerance        *float64 `yaml:"tolerance,omitempty"`
	RelTolerance     float64  `yaml:"rel_tolerance"`
	MustMatch        string   `yaml:"must_match"`
	// The teacher as judge (reward: judge) scores each answer from 0 to
	// max_score with elicit self's judging prompt (shown the reference when
	// there is one); the reward is score / max_score. Judge is the model
	// folder ("" the recipe's teacher), served in this process; or
	// JudgeEndpoint is an OpenAI-compatible API root with JudgeModel (and
	// JudgeAPIKeyEnv, the environment variable with its key).
	Judge string `yaml:"judge"`
	// JudgeTemplate is the chat template the local judge is served with
	// (serve's --template: chatml, a .jinja file; "" the model's own).
	JudgeTemplate    string `yaml:"judge_template"`
	JudgeEndpoint    string `yaml:"judge_endpoint"`
	JudgeModel       string `yaml:"judge_model"`
	JudgeAPIKeyEnv   string `yaml:"judge_api_key_env"`
	Criteria         string `yaml:"criteria"`
	JudgePrompt      string `yaml:"judge_prompt"`
	MaxScore         int    `yaml:"max_score"`
	JudgeMaxTokens   int    `yaml:"judge_max_tokens"`
	JudgeConcurrency int    `yaml:"judge_concurrency"`
	// EvalSamples is how many validation prompts the student answers once
	// at every evaluation (default 8; 0: none): their mean reward is
	// logged, a few answers shown, all written to samples.jsonl.
	EvalSamples *int `yaml:"eval_samples,omitempty"`
}

const (
	rewardRule  = "rule"
	rewardJudge = "judge"
)

func (o *RLTerm) group() int {
	if o.GroupSize == 0 {
		return 4
	}
	return o.GroupSize
}

// iterations is μ, the optimizer steps each sampling is trained on.
func (o *RLTerm) iterations() int {
	if o.NumIterations == 0 {
		return 1
	}
	return o.NumIterations
}

func (o *RLTerm) temperature() float64 {
	if o.Temperature == nil {
		return 1
	}
	return *o.Temperature
}

func (o *RLTerm) maxNew() int {
	if o.MaxNewTokens == 0 {
		return 128
	}
	return o.MaxNewTokens
}

func (o *RLTerm) grpo() loss.GRPOConfig {
	c := loss.GRPOConfig{EpsLow: 0.2, Beta: 0.04}
	if o.Epsilon != nil {
		c.EpsLow = *o.Epsilon
	}
	c.EpsHigh = c.EpsLow
	if o.EpsilonHigh != nil {
		c.EpsHigh = *o.EpsilonHigh
	}
	if o.Beta != nil {
		c.Beta = *o.Beta
	}
	c.KLRatio = o.KLRatio == nil || *o.KLRatio
	return c
}

func (o *RLTerm) scale() bool { return o.ScaleRewards == nil || *o.ScaleRewards }

func (o *RLTerm) reference() string {
	if o.Reference == "" {
		return "response"
	}
	return o.Reference
}

func (o *RLTerm) evalSamples() int {
	if o.EvalSamples == nil {
		return 8
	}
	return *o.EvalSamples
}

func (o *RLTerm) maxScore() int {
	if o.MaxScore == 0 {
		return 10
	}
	return o.MaxScore
}

// rule is the term's rule as elicit's RuleJudge (compiled by Check).
func (o *RLTerm) rule() *elicit.RuleJudge {
	j := &elicit.RuleJudge{ReferenceExtract: o.ReferenceExtract, Extract: o.Extract, ExtractLast: o.ExtractLast, MustMatch: o.MustMatch}
	if o.reference() == "response" {
		j.AnswerField = "reference"
	}
	j.Match, j.Normalize, j.RelTolerance = o.Match, o.Normalize, o.RelTolerance
	j.Tolerance = 1e-6
	if o.Tolerance != nil {
		j.Tolerance = *o.Tolerance
	}
	return j
}

// check adds the term's problems to bad (Recipe.Validate).
func (o *RLTerm) check(r *Recipe, bad func(key, format string, a ...any)) {
	const k = "objectives.rl"
	if !(o.Weight > 0) || math.IsInf(o.Weight, 0) {
		bad(k+".weight", "%g must be positive", o.Weight)
	}
	if g := o.group(); g < 2 {
		bad(k+".group_size", "%d: GRPO compares the rewards of several answers to one prompt and needs 2 or more", g)
	}
	if T := o.temperature(); !(T > 0) || math.IsInf(T, 0) {
		bad(k+".temperature", "%g must be positive (sampling at 0 would give a group the same answer G times)", T)
	}
	if !(o.TopP >= 0 && o.TopP <= 1) {
		bad(k+".top_p", "%g must be in (0, 1] (0 or 1: the whole distribution)", o.TopP)
	}
	if o.MaxNewTokens < 0 {
		bad(k+".max_new_tokens", "%d must be positive (0: 128)", o.MaxNewTokens)
	}
	if o.PromptTokens < 0 {
		bad(k+".prompt_tokens", "%d must be ≥ 0", o.PromptTokens)
	}
	if o.NumIterations < 0 {
		bad(k+".num_iterations", "%d must be ≥ 1: the optimizer steps each sampling of answers is trained on (0 or unset: 1)", o.NumIterations)
	}
	c := o.grpo()
	if !(c.EpsLow >= 0 && c.EpsLow < 1) {
		bad(k+".epsilon", "%g must be in [0, 1)", c.EpsLow)
	}
	if !(c.EpsHigh >= 0) || math.IsInf(c.EpsHigh, 0) {
		bad(k+".epsilon_high", "%g must be finite and ≥ 0", c.EpsHigh)
	}
	if !(c.Beta >= 0) || math.IsInf(c.Beta, 0) {
		bad(k+".beta", "%g must be finite and ≥ 0", c.Beta)
	}
	switch o.LossType {
	case "", "grpo", "token":
	default:
		bad(k+".loss_type", "%q is not one of [grpo token]", o.LossType)
	}
	switch o.reference() {
	case "response", "none":
	default:
		bad(k+".reference", "%q is not one of [response none]", o.Reference)
	}
	if o.EvalSamples != nil && *o.EvalSamples < 0 {
		bad(k+".eval_samples", "%d must be ≥ 0", *o.EvalSamples)
	}
	ruleKeys := o.Extract != "" || o.ReferenceExtract != "" || o.Match != "" || o.Normalize != "" || o.Tolerance != nil || o.RelTolerance != 0 || o.MustMatch != "" || o.ExtractLast
	judgeKeys := o.Judge != "" || o.JudgeTemplate != "" || o.JudgeEndpoint != "" || o.JudgeModel != "" || o.JudgeAPIKeyEnv != "" || o.Criteria != "" || o.JudgePrompt != "" || o.MaxScore != 0 || o.JudgeMaxTokens != 0 || o.JudgeConcurrency != 0
	switch o.Reward {
	case rewardRule:
		if judgeKeys {
			bad(k+".reward", "is rule: the judge's keys (judge, judge_endpoint, judge_model, criteria, judge_prompt, max_score, …) do not apply")
		}
		if o.reference() == "none" && o.MustMatch == "" {
			bad(k+".must_match", "reference: none leaves the rule nothing to check: give must_match (a regular expression), or reference: response")
		}
		if err := o.rule().Check(); err != nil {
			bad(k, "%v", err)
		}
	case rewardJudge:
		if ruleKeys {
			bad(k+".reward", "is judge: the rule's keys (extract, match, normalize, must_match, …) do not apply")
		}
		if o.MaxScore < 0 {
			bad(k+".max_score", "%d must be ≥ 1", o.MaxScore)
		}
		if o.JudgeMaxTokens < 0 || o.JudgeConcurrency < 0 {
			bad(k+".judge_max_tokens", "judge_max_tokens and judge_concurrency must be ≥ 0")
		}
		switch {
		case o.JudgeEndpoint != "" && o.Judge != "":
			bad(k+".judge_endpoint", "give either judge_endpoint or judge (a model folder), not both")
		case o.JudgeEndpoint != "":
			if !strings.HasPrefix(o.JudgeEndpoint, "http://") && !strings.HasPrefix(o.JudgeEndpoint, "https://") {
				bad(k+".judge_endpoint", "%q is not an http:// or https:// URL", o.JudgeEndpoint)
			}
			if o.JudgeModel == "" {
				bad(k+".judge_model", "required with judge_endpoint (the model name the endpoint serves)")
			}
		case o.Judge == "" && r.Teacher == "":
			bad(k+".judge", "reward judge needs a judge: the recipe's teacher, objectives.rl.judge (a model folder) or objectives.rl.judge_endpoint")
		}
		if o.JudgeEndpoint == "" && (o.JudgeModel != "" || o.JudgeAPIKeyEnv != "") {
			bad(k+".judge_model", "judge_model and judge_api_key_env go with judge_endpoint")
		}
		if o.JudgeEndpoint != "" && o.JudgeTemplate != "" {
			bad(k+".judge_template", "is the local judge's chat template; an endpoint applies its own")
		}
	case "":
		bad(k+".reward", "required: rule (the extracted answer against the reference, or a regular expression) or judge (the teacher scores each answer)")
	default:
		bad(k+".reward", "%q is not one of [rule judge]", o.Reward)
	}
	if r.Data.Pack {
		bad(k, "samples answers per row, and packed rows hold several examples: set data.pack false")
	}
	if r.Objectives.OnPolicy != nil {
		bad(k, "cannot be mixed with objectives.onpolicy in one run (both sample the student's answers to the rows)")
	}
}

// rlRun is the term's state in a run.
type rlRun struct {
	term    *RLTerm
	ref     *model.Model // the frozen reference (nil when beta is 0)
	judge   elicit.SelfJudge
	scale   float64 // what a judgement's score is divided by (1 for the rule)
	student *rollout.Sampler
	params  rollout.Params
	stops   []int32
	pcg     *rand.PCG // the sampling random state (saved in checkpoints)
	rng     *rand.Rand
	pending []*rlBatch
	// buf are the micro-batches of the last sampling while it has steps
	// left to train (num_iterations > 1): used steps have trained on them,
	// and their rows begin at bufData in the data. Saved in checkpoints.
	buf     []*rlBatch
	used    int
	bufData data.LoaderState
	// observe, when set (tests), is shown every micro-batch's GRPO inputs
	// and result.
	observe func(rlObservation)
	// skip are the training rows (by their first token's address) whose
	// reference the reward cannot read: the term leaves them out.
	skip    map[*int32]bool
	samples *metricsLog
	closers []func()
	mark    struct {
		data data.LoaderState
		rng  []byte
	}
}

// rlBatch is one micro-batch's answers, sampled and rewarded when the step
// began: G consecutive rollouts per row, with their rewards and advantages.
type rlBatch struct {
	rs       []rollout.Rollout
	rewards  []float64
	adv      []float64
	unjudged int
	// old[i] are answer i's tokens' log-probabilities under the policy
	// that sampled them, from the training forward of the first step that
	// trained on them (num_iterations > 1; nil before that step).
	old [][]float64
	// ref are the reference's log-probabilities in the batch's layout
	// (the reference is frozen: computed once for the μ steps).
	ref []float64
}

// rlObservation is what a test's rlRun.observe is shown of a micro-batch:
// the optimizer step (from 1) and which of its sampling's iterations it is
// (from 1), the answers' batch, GRPO's inputs (old nil: the policy is the
// sampling one) and result, and the student before the step's update.
type rlObservation struct {
	step, iter             int
	batch                  rollout.Batch
	old, ref, adv, weights []float64
	cfg                    loss.GRPOConfig
	res                    loss.GRPOResult
	student                *model.Model
}

// rlStats are a step's RL numbers.
type rlStats struct {
	loss, reward, kl, clip, ratio float64
	answers, judged, respToks     int
	unjudged                      int
	micro                         int
	iter                          int // which step of its sampling's num_iterations (from 1)
	gen, score                    time.Duration
}

// rlSeedStream names the sampling random stream (PCG's second word).
const rlSeedStream = 0x67727070_6f5f726c

// judgeFailure is a judge that failed for good (after its client's
// retries): the step is undone and a checkpoint written, as for a failing
// on-policy teacher endpoint.
type judgeFailure struct{ err error }

func (e *judgeFailure) Error() string { return "the judge: " + e.err.Error() }
func (e *judgeFailure) Unwrap() error { return e.err }

// setupRL loads the reference and the judge and checks the data (after
// loadData).
func (t *trainer) setupRL() error {
	o := t.r.Objectives.RL
	if o == nil {
		return nil
	}
	if t.loader == nil {
		return errors.New("objectives.rl needs prompt/response, messages or text data")
	}
	rl := &rlRun{term: o, pcg: rand.NewPCG(t.r.Seed, rlSeedStream), scale: 1}
	rl.rng = rand.New(rl.pcg)
	t.rl = rl
	if err := t.checkPrompts("objectives.rl", o.PromptTokens); err != nil {
		return err
	}
	if o.grpo().Beta > 0 {
		m, err := model.LoadDir(t.r.Student, t.be, model.ForPrecision(t.prec, false)...) // the student as it started, also on resume
		if err != nil {
			return fmt.Errorf("objectives.rl reference (the student as it starts): %w", err)
		}
		rl.ref = m
	}
	switch o.Reward {
	case rewardRule:
		j := o.rule()
		if err := j.Check(); err != nil {
			return fmt.Errorf("objectives.rl: %w", err)
		}
		rl.judge = j
	case rewardJudge:
		c, err := t.judgeClient()
		if err != nil {
			return err
		}
		j := &elicit.TeacherJudge{Client: c, Criteria: o.Criteria, Prompt: o.JudgePrompt, MaxScore: o.maxScore(), MaxTokens: o.JudgeMaxTokens}
		if err := j.Check(); err != nil {
			return fmt.Errorf("objectives.rl: %w", err)
		}
		rl.judge, rl.scale = j, float64(j.MaxScore)
	}
	stops := []int32{}
	if sp := t.tok.Special(); sp.EOS >= 0 {
		stops = append(stops, sp.EOS)
	}
	tmpl, err := data.NewTemplate(t.tok, data.Options{Template: t.r.Data.Template, SystemPrompt: t.r.Data.SystemPrompt, MaxLen: t.r.Data.MaxLen})
	if err != nil {
		return err
	}
	rl.stops = append(stops, tmpl.StopTokens()...)
	if err := t.checkReferences(); err != nil {
		return err
	}
	maxLen := min(t.r.Data.MaxLen, t.student.Config.MaxPositions)
	rl.params = rollout.Params{Temperature: o.temperature(), TopP: o.TopP, MaxNewTokens: o.maxNew(), MaxLen: maxLen, StopTokens: rl.stops}
	if rl.params.TopP == 1 {
		rl.params.TopP = 0
	}
	rl.student = rollout.NewSampler(t.student)
	return t.checkRLMemory()
}

// judgeClient is the judge's API client: the endpoint, or the local judge
// model served on a loopback port of this process.
func (t *trainer) judgeClient() (*elicit.Client, error) {
	o := t.r.Objectives.RL
	if o.JudgeEndpoint != "" {
		c := &elicit.Client{BaseURL: o.JudgeEndpoint, Model: o.JudgeModel, Backoff: endpointBackoff}
		if o.JudgeAPIKeyEnv != "" {
			if c.APIKey = os.Getenv(o.JudgeAPIKeyEnv); c.APIKey == "" {
				return nil, fmt.Errorf("objectives.rl.judge_api_key_env: the environment variable %s is empty or not set", o.JudgeAPIKeyEnv)
			}
		}
		t.logf("rl judge: %s (model %s)", o.JudgeEndpoint, o.JudgeModel)
		return c, nil
	}
	dir := o.Judge
	if dir == "" {
		dir = t.r.Teacher
	}
	s, err := serve.New(t.be, serve.Config{Model: dir, ModelName: "judge", Template: o.JudgeTemplate, MaxQueue: 1 << 20})
	if err != nil {
		return nil, fmt.Errorf("objectives.rl judge %s: %w", dir, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("objectives.rl judge: %w", err)
	}
	hs := &http.Server{Handler: s}
	go hs.Serve(ln)
	t.rl.closers = append(t.rl.closers, func() { hs.Close(); s.Close() })
	t.logf("rl judge: %s, served in this process", dir)
	return &elicit.Client{BaseURL: "http://" + ln.Addr().String() + "/v1", Model: "judge", Backoff: endpointBackoff}, nil
}

// textOf decodes tokens without the stop tokens (EOS, the template's end of
// turn), which are not part of an answer's text.
func (rl *rlRun) textOf(t *trainer, toks []int32) string {
	keep := make([]int32, 0, len(toks))
	for _, x := range toks {
		if !slices.Contains(rl.stops, x) {
			keep = append(keep, x)
		}
	}
	return t.tok.Decode(keep)
}

// rowPrompt is what the judge reads of a row: its prompt's text and, under
// reference: response, its reference (the response's text), read by the
// judge as elicit self reads a prompt record.
func (t *trainer) rowPrompt(r rollout.Rollout) (*elicit.SelfPrompt, error) {
	rl := t.rl
	p := &elicit.SelfPrompt{Prompt: rl.textOf(t, r.Prompt)}
	if rl.term.reference() != "response" {
		return p, nil
	}
	refText := rl.textOf(t, r.Response)
	if strings.TrimSpace(refText) == "" {
		return nil, errors.New("has an empty response: no reference answer")
	}
	if _, isTeacher := rl.judge.(*elicit.TeacherJudge); isTeacher {
		p.Ref = refText
		return p, nil
	}
	raw, _ := json.Marshal(refText)
	ref, err := rl.judge.Read(map[string]json.RawMessage{"reference": raw})
	if err != nil {
		return nil, err
	}
	p.Ref = ref
	return p, nil
}

// checkReferences finds the rows whose reference the reward cannot read
// (an empty response, nothing to extract, not a number). Under
// data.on_bad_line skip the term leaves them out (other terms still train
// on them) and they are reported; under stop — or when no row is left —
// the run is refused, naming how many and the first.
func (t *trainer) checkReferences() error {
	bad, first := 0, ""
	skip := map[*int32]bool{}
	for i, e := range t.train {
		r := rowsAsRollouts([]data.Example{e}, t.rl.term.PromptTokens, t.r.Data.MaxLen)[0]
		if _, err := t.rowPrompt(r); err != nil {
			bad++
			skip[&e.Tokens[0]] = true
			if first == "" {
				first = fmt.Sprintf("row %d (%q…): %v", i+1, clipRunes(t.tok.Decode(r.Prompt), 40), err)
			}
		}
	}
	if bad == 0 {
		return nil
	}
	msg := fmt.Sprintf("objectives.rl: %d of %d rows of %s have no usable reference answer for reward %s (reference: response is the row's response); first: %s",
		bad, len(t.train), t.r.Data.Train, t.rl.term.Reward, first)
	if t.r.Data.OnBadLine == "stop" || bad == len(t.train) {
		return errors.New(msg)
	}
	t.logf("%s — left out of objectives.rl (data.on_bad_line: skip)", msg)
	t.rl.skip = skip
	return nil
}

// usable are the rows of a micro-batch the term trains on (checkReferences).
func (rl *rlRun) usable(rows []data.Example) []data.Example {
	if len(rl.skip) == 0 {
		return rows
	}
	var out []data.Example
	for _, e := range rows {
		if !rl.skip[&e.Tokens[0]] {
			out = append(out, e)
		}
	}
	return out
}

// checkRLMemory refuses, before the first step, a micro-batch of
// batch_size × group_size answers whose student activations (with the
// reference's forward and weights) cannot fit in the backend's free memory.
func (t *trainer) checkRLMemory() error {
	G, T := t.rl.term.group(), t.r.Data.MaxLen
	B := int(min(kdrt.MulBytes(int64(G), int64(t.r.BatchSize)), int64(^uint(0)>>1)))
	need := t.student.Config.ActivationBytes(B, T)
	if t.rl.ref != nil {
		need = kdrt.AddBytes(need, kdrt.AddBytes(t.rl.ref.Config.ActivationBytes(B, T), t.rl.ref.Config.WeightBytes()))
	}
	return kdrt.CheckFree(t.be, fmt.Sprintf("objectives.rl with batch_size %d × group_size %d answers × data.max_len %d", t.r.BatchSize, G, T), need,
		"lower batch_size or objectives.rl.group_size (raise grad_accum to keep the answers per step), or data.max_len")
}

func clipRunes(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n])
}

// rlBeginStep samples and rewards a step's answers: it remembers where the
// data and the sampling stand, reads the rows of all GradAccum
// micro-batches ahead, samples G answers to every prompt of the step in
// one engine batch, has the judge reward each, computes each group's
// advantages, and puts the data position back for the micro-batches.
// While the last sampling has steps of its num_iterations left, it puts
// the data back where that sampling's rows begin instead, and the step
// trains on the same answers in the same micro-batches.
func (t *trainer) rlBeginStep(st *stepStats) error {
	rl := t.rl
	if rl == nil {
		return nil
	}
	mu := rl.term.iterations()
	if rl.buf != nil && rl.used < mu {
		if err := t.loader.Restore(rl.bufData); err != nil {
			return err
		}
		rl.pending = append(rl.pending[:0], rl.buf...)
		rl.used++
		st.rl.iter = rl.used
		return nil
	}
	rl.buf = nil // a failing judge must leave nothing to train on again in its checkpoint
	G := rl.term.group()
	rl.mark.data = t.loader.State()
	rl.mark.rng, _ = rl.pcg.MarshalBinary()
	rl.pending = rl.pending[:0]
	var prompts [][]int32
	var refs []*elicit.SelfPrompt
	var sizes []int
	for range t.r.GradAccum {
		rows, _, err := t.loader.NextRows(t.r.BatchSize)
		if err != nil {
			return err
		}
		rows = rl.usable(rows)
		for _, r := range rowsAsRollouts(rows, rl.term.PromptTokens, rl.params.MaxLen) {
			p, err := t.rowPrompt(r)
			if err != nil {
				return fmt.Errorf("objectives.rl: a row's reference: %w", err)
			}
			prompts, refs = append(prompts, r.Prompt), append(refs, p)
		}
		sizes = append(sizes, len(rows))
	}
	if err := t.loader.Restore(rl.mark.data); err != nil {
		return err
	}
	seeds := make([]uint64, len(prompts)*G)
	for i := range seeds {
		seeds[i] = rl.rng.Uint64()
	}
	start := time.Now()
	var groups [][]rollout.Rollout
	if len(prompts) > 0 {
		var err error
		if groups, err = rl.student.SampleGroups(context.Background(), prompts, G, seeds, rl.params); err != nil {
			return err
		}
	}
	st.rl.gen += time.Since(start)
	start = time.Now()
	rewards, unjudged, err := rl.rewards(t, refs, groups, G)
	if err != nil {
		return err
	}
	st.rl.score += time.Since(start)
	at := 0
	for _, n := range sizes {
		b := &rlBatch{}
		for i := at; i < at+n; i++ {
			b.rs = append(b.rs, groups[i]...)
			b.rewards = append(b.rewards, rewards[i*G:(i+1)*G]...)
			b.unjudged += unjudged[i]
		}
		at += n
		if b.adv, err = loss.GroupAdvantages(b.rewards, G, rl.term.scale()); err != nil {
			return err
		}
		rl.pending = append(rl.pending, b)
	}
	if mu > 1 {
		rl.buf, rl.bufData = slices.Clone(rl.pending), rl.mark.data
	}
	rl.used = 1
	st.rl.iter = 1
	return nil
}

// rewards judges every answer (judge_concurrency at a time for the
// teacher), G to a prompt: out[i·G + k] is the reward of prompt i's answer
// k — NaN for an answer the judge gave no score to (GroupAdvantages leaves
// it out of its group and gives it advantage 0, as TRL does an unscorable
// completion) — and unjudged[i] counts prompt i's such answers.
func (rl *rlRun) rewards(t *trainer, prompts []*elicit.SelfPrompt, groups [][]rollout.Rollout, G int) ([]float64, []int, error) {
	out := make([]float64, len(prompts)*G)
	unjudged := make([]int, len(prompts))
	conc := 1
	if _, ok := rl.judge.(*elicit.TeacherJudge); ok {
		conc = rl.term.JudgeConcurrency
		if conc == 0 {
			conc = 8
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	sem := make(chan struct{}, conc)
	for i, grp := range groups {
		for k, r := range grp {
			text := rl.textOf(t, r.Response)
			if strings.TrimSpace(text) == "" {
				continue // nothing to judge: reward 0
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				v, err := rl.judge.Judge(ctx, prompts[i], text)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					out[i*G+k] = v.Score / rl.scale
				case errors.Is(err, elicit.ErrNoScore):
					out[i*G+k] = math.NaN()
					unjudged[i]++
				case failed == nil:
					failed = &judgeFailure{err}
					cancel()
				}
			}()
		}
	}
	wg.Wait()
	if failed != nil {
		return nil, nil, failed
	}
	return out, unjudged, nil
}

// rlMicroBatch trains on one micro-batch's answers (weight w of the step).
func (t *trainer) rlMicroBatch(st *stepStats, w float64, rows []data.Example) error {
	rl, o := t.rl, t.rl.term
	if len(rl.pending) == 0 {
		return errors.New("rl: a micro-batch the step did not prepare")
	}
	mb := rl.pending[0]
	rl.pending = rl.pending[1:]
	G := o.group()
	rows = rl.usable(rows)
	if len(rows) == 0 && len(mb.rs) == 0 {
		return nil // every row of the micro-batch was left out (checkReferences)
	}
	if len(mb.rs) != len(rows)*G || len(rows) > 0 && !slices.Equal(mb.rs[0].Prompt, rows[0].Tokens[:len(mb.rs[0].Prompt)]) {
		return errors.New("rl: the micro-batch's rows are not the ones the step sampled for")
	}
	b, err := rollout.MakeBatch(mb.rs, t.pad, 0)
	if err != nil {
		return err
	}
	// The ratio's denominator. With one step per sampling, the sampler's
	// log-probabilities recorded while decoding (at temperature 1); under
	// num_iterations, as TRL's GRPOTrainer, the training forward's: its
	// first step's own (nil: the ratio is exactly 1, the weights having not
	// moved since the sampling), kept for the steps after — so that the
	// ratio measures how far the updates moved the policy, not how the
	// decoding engine's arithmetic differs from the training forward's.
	mu := o.iterations()
	old := b.Sampled
	if mu > 1 {
		old = nil
		if mb.old != nil {
			if old, err = b.Scatter(mb.old); err != nil {
				return fmt.Errorf("rl: the sampling policy's log-probabilities: %w", err)
			}
		}
	}
	adv := make([]float64, len(b.Targets))
	n := 0
	for i, tg := range b.Targets {
		if tg == kdrt.IgnoreIndex {
			continue
		}
		if mu == 1 && math.IsNaN(b.Sampled[i]) {
			return errors.New("rl: an answer without its sampling log-probabilities")
		}
		adv[i] = mb.adv[i/b.T]
		n++
	}
	st.tokens += n
	t.teacherFor = nil
	cfg := o.grpo()
	refLP := mb.ref
	if cfg.Beta > 0 && refLP == nil {
		scores, err := rollout.Local{Model: rl.ref, Pad: t.pad, Loss: t.lossOpt}.Score(context.Background(), b.Sequences())
		if err != nil {
			return fmt.Errorf("rl reference: %w", err)
		}
		if refLP, err = b.Scatter(scores); err != nil {
			return err
		}
		mb.ref = refLP
	}
	weights, err := loss.GRPOTokenWeights(b.Targets, b.T, o.LossType != "token", o.Weight*w)
	if err != nil {
		return err
	}
	h, err := t.student.ForwardHidden(b.Batch)
	if err != nil {
		return err
	}
	dh, err := t.be.Alloc("grad.hidden", h.DType, h.Shape...)
	if err != nil {
		return err
	}
	defer t.be.Free(dh)
	head := loss.Head{W: t.student.Head().W, G: t.student.Head().G}
	res, err := loss.GRPO(t.be, h, head, dh, b.Targets, old, refLP, adv, weights, cfg, t.lossOpt)
	if err != nil {
		return err
	}
	if err := t.student.BackwardHidden(dh); err != nil {
		return err
	}
	if mu > 1 && mb.old == nil {
		mb.old = responseValues(b, res.LogProbs)
	}
	if rl.observe != nil {
		rl.observe(rlObservation{step: t.step + 1, iter: rl.used, batch: b, old: old, ref: refLP, adv: adv, weights: weights, cfg: cfg, res: res, student: t.student})
	}
	st.rl.loss += res.Loss / o.Weight
	st.loss += res.Loss
	st.rl.kl += res.KL
	st.rl.clip += res.ClipFraction
	st.rl.ratio += res.MeanRatio
	st.rl.micro++
	for i, r := range mb.rs {
		if !math.IsNaN(mb.rewards[i]) {
			st.rl.reward += mb.rewards[i]
			st.rl.judged++
		}
		st.rl.respToks += len(r.Response)
	}
	st.rl.answers += len(mb.rs)
	st.rl.unjudged += mb.unjudged
	return nil
}

// responseValues gathers x, laid out as the batch (a value at each
// position that predicts a response token), into each row's response
// tokens: Scatter's inverse.
func responseValues(b rollout.Batch, x []float64) [][]float64 {
	out := make([][]float64, b.B)
	for r := range b.B {
		at := r*b.T + b.Starts[r] - 1
		out[r] = slices.Clone(x[at : at+b.Lens[r]-b.Starts[r]])
	}
	return out
}

// rlState is the RL part of a checkpoint's training state: the sampling
// random state and, in a checkpoint made between the num_iterations steps
// that train on one sampling, that sampling's answers (the policy that
// sampled them is gone: they cannot be drawn again). Checkpoints made
// without it (one step per sampling, or before num_iterations) read as
// before.
type rlState struct {
	samplingState
	Buffer *rlBufferState `json:"buffer,omitempty"`
}

// rlBufferState is rlRun.buf in a checkpoint.
type rlBufferState struct {
	// Data is where the sampling's rows begin; Used counts the steps that
	// have trained on it.
	Data    data.LoaderState `json:"data"`
	Used    int              `json:"used"`
	Batches []rlBatchState   `json:"batches"`
}

// rlBatchState is one micro-batch's answers: per answer its prompt and
// response tokens, reward (null: unjudged), advantage and the sampling
// policy's log-probabilities of its response tokens. (JSON writes a
// float64 in the fewest digits that read back to the same bits.)
type rlBatchState struct {
	Prompts    [][]int32   `json:"prompts"`
	Responses  [][]int32   `json:"responses"`
	Rewards    []*float64  `json:"rewards"`
	Advantages []float64   `json:"advantages"`
	Old        [][]float64 `json:"old"`
	Unjudged   int         `json:"unjudged"`
}

func (t *trainer) saveRL() *rlState {
	if t.rl == nil {
		return nil
	}
	rl := t.rl
	s := &rlState{samplingState: *saveSampling(rl.pcg)}
	if rl.buf == nil || rl.used >= rl.term.iterations() {
		return s
	}
	s.Buffer = &rlBufferState{Data: rl.bufData, Used: rl.used}
	for _, b := range rl.buf {
		bs := rlBatchState{Advantages: b.adv, Old: b.old, Unjudged: b.unjudged}
		for i, r := range b.rs {
			bs.Prompts, bs.Responses = append(bs.Prompts, r.Prompt), append(bs.Responses, r.Response)
			var reward *float64
			if !math.IsNaN(b.rewards[i]) {
				reward = &b.rewards[i]
			}
			bs.Rewards = append(bs.Rewards, reward)
		}
		s.Buffer.Batches = append(s.Buffer.Batches, bs)
	}
	return s
}

func (t *trainer) restoreRL(s *rlState) error {
	if t.rl == nil {
		return nil
	}
	var ss *samplingState
	if s != nil {
		ss = &s.samplingState
	}
	if err := restoreSampling(t.rl.pcg, ss, "RL", "objectives.rl"); err != nil {
		return err
	}
	rl := t.rl
	rl.buf, rl.used = nil, 0
	if s.Buffer == nil || s.Buffer.Used >= rl.term.iterations() {
		return nil
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("resume: the checkpoint's RL answers (objectives.rl.num_iterations): "+format, a...)
	}
	if s.Buffer.Used < 1 || len(s.Buffer.Batches) != t.r.GradAccum {
		return bad("%d micro-batches trained %d times; want grad_accum %d, trained at least once", len(s.Buffer.Batches), s.Buffer.Used, t.r.GradAccum)
	}
	for k, bs := range s.Buffer.Batches {
		n := len(bs.Prompts)
		if len(bs.Responses) != n || len(bs.Rewards) != n || len(bs.Advantages) != n || (n > 0 && len(bs.Old) != n) {
			return bad("micro-batch %d has %d prompts, %d responses, %d rewards, %d advantages and %d log-probability rows", k, n, len(bs.Responses), len(bs.Rewards), len(bs.Advantages), len(bs.Old))
		}
		b := &rlBatch{adv: bs.Advantages, old: bs.Old, unjudged: bs.Unjudged}
		for i := range n {
			if len(bs.Old[i]) != len(bs.Responses[i]) || len(bs.Prompts[i]) == 0 || len(bs.Responses[i]) == 0 {
				return bad("micro-batch %d answer %d: %d prompt tokens, %d response tokens and %d log-probabilities", k, i, len(bs.Prompts[i]), len(bs.Responses[i]), len(bs.Old[i]))
			}
			b.rs = append(b.rs, rollout.Rollout{Prompt: bs.Prompts[i], Response: bs.Responses[i]})
			reward := math.NaN()
			if bs.Rewards[i] != nil {
				reward = *bs.Rewards[i]
			}
			b.rewards = append(b.rewards, reward)
		}
		rl.buf = append(rl.buf, b)
	}
	rl.used, rl.bufData = s.Buffer.Used, s.Buffer.Data
	return nil
}

// rlLine is the progress line's RL part.
func (t *trainer) rlLine(st stepStats) string {
	if t.rl == nil || st.rl.answers == 0 {
		return ""
	}
	s := fmt.Sprintf(" (rl %.4f, reward %.3f", st.rl.loss, st.rl.reward/float64(max(st.rl.judged, 1)))
	if t.rl.ref != nil {
		s += fmt.Sprintf(", kl %.4f", st.rl.kl/float64(st.rl.micro))
	}
	s += fmt.Sprintf(", %d answers, %.0f tok/answer", st.rl.answers, float64(st.rl.respToks)/float64(st.rl.answers))
	if mu := t.rl.term.iterations(); mu > 1 {
		m := float64(st.rl.micro)
		s += fmt.Sprintf(", iter %d/%d, ratio %.4f, clip %.3f", st.rl.iter, mu, st.rl.ratio/m, st.rl.clip/m)
	}
	if st.rl.unjudged > 0 {
		s += fmt.Sprintf(", %d unjudged", st.rl.unjudged)
	}
	s += ")"
	if st.wall > 0 {
		g := st.rl.gen.Seconds() / st.wall.Seconds()
		sc := st.rl.score.Seconds() / st.wall.Seconds()
		s += fmt.Sprintf("  gen %.0f%% score %.0f%% train %.0f%%", 100*g, 100*sc, 100*max(0, 1-g-sc))
	}
	return s
}

// rlRecord adds the step's RL numbers to its metrics record.
func (t *trainer) rlRecord(rec map[string]any, st stepStats) {
	if t.rl == nil || st.rl.answers == 0 {
		return
	}
	m := float64(st.rl.micro)
	rec["rl"] = st.rl.loss
	rec["reward"] = st.rl.reward / float64(max(st.rl.judged, 1)) // over the judged answers
	if t.rl.ref != nil {
		rec["kl_ref"] = st.rl.kl / m
	}
	rec["clip_fraction"] = st.rl.clip / m
	rec["mean_ratio"] = st.rl.ratio / m
	if t.rl.term.iterations() > 1 {
		rec["rl_iteration"] = st.rl.iter
	}
	rec["sampled_rows"] = st.rl.answers
	rec["response_tokens"] = float64(st.rl.respToks) / float64(st.rl.answers)
	rec["unjudged"] = st.rl.unjudged
	rec["gen_s"] = st.rl.gen.Seconds()
	rec["score_s"] = st.rl.score.Seconds()
	rec["train_s"] = max(0, st.wall.Seconds()-st.rl.gen.Seconds()-st.rl.score.Seconds())
}

// evalRL answers the first eval_samples validation prompts once each
// (seeds fixed across evaluations), rewards them, logs the mean reward and
// a few answers, and writes them all to samples.jsonl.
func (t *trainer) evalRL(step int, rec map[string]any) error {
	if t.rl == nil || t.rl.term.evalSamples() == 0 || len(t.val) == 0 {
		return nil
	}
	rl := t.rl
	rows := t.val[:min(len(t.val), rl.term.evalSamples())]
	from := rowsAsRollouts(rows, rl.term.PromptTokens, rl.params.MaxLen)
	var prompts [][]int32
	var refs []*elicit.SelfPrompt
	var seeds []uint64
	for i, r := range from {
		if len(r.Prompt) == 0 || len(r.Response) == 0 {
			continue
		}
		p, err := t.rowPrompt(r)
		if err != nil {
			continue // a validation row without a usable reference is not scored
		}
		prompts, refs, seeds = append(prompts, r.Prompt), append(refs, p), append(seeds, evalSeed(t.r.Seed, i))
	}
	if len(prompts) == 0 {
		return nil
	}
	rs, err := rl.student.Sample(context.Background(), prompts, seeds, rl.params)
	if err != nil {
		return fmt.Errorf("step %d: rl evaluation: %w", step, err)
	}
	groups := make([][]rollout.Rollout, len(rs))
	for i := range rs {
		groups[i] = rs[i : i+1]
	}
	rewards, _, err := rl.rewards(t, refs, groups, 1)
	if err != nil {
		return fmt.Errorf("step %d: rl evaluation: %w", step, err)
	}
	var mean float64
	judged := 0
	for _, v := range rewards {
		if !math.IsNaN(v) {
			mean += v
			judged++
		}
	}
	mean /= float64(max(judged, 1))
	if ev, ok := rec["eval"].(map[string]any); ok {
		ev["reward"] = mean
	}
	t.logf("step %d: mean reward %.3f on %d validation prompts (one answer each; %d judged)", step, mean, len(rs), judged)
	for i, r := range rs {
		if i < 3 {
			t.logf("  answer %d (reward %.2f): %q → %q", i+1, rewards[i], t.tok.Decode(r.Prompt), t.tok.Decode(r.Response))
		}
		if rl.samples != nil {
			var reward any = rewards[i]
			if math.IsNaN(rewards[i]) {
				reward = nil // unjudged
			}
			rl.samples.write(map[string]any{"step": step, "prompt": t.tok.Decode(r.Prompt), "response": t.tok.Decode(r.Response), "finish": r.Finish, "reward": reward})
		}
	}
	return nil
}

// closeRL frees the sampler and the judge and closes samples.jsonl; it may
// be called again (Run calls it on every way out, so that a failed run
// leaves no judge server listening).
func (t *trainer) closeRL() error {
	if t.rl == nil {
		return nil
	}
	if t.rl.student != nil {
		t.rl.student.Close()
	}
	for _, c := range t.rl.closers {
		c()
	}
	t.rl.closers = nil
	if t.rl.samples != nil {
		err := t.rl.samples.close()
		t.rl.samples = nil
		return err
	}
	return nil
}
