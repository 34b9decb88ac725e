package train

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/elicit"
	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/kd/rollout"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// On-policy distillation (objectives.onpolicy): for a fraction λ of the
// micro-batches the student samples the responses to the batch's prompts
// itself (all rows in one engine batch, kd/rollout), the teacher scores
// them, and the student learns from its own samples — GKD (Agarwal et al.
// 2024) with loss jsd, the Tinker/Qwen3 reverse-KL policy gradient with
// loss reverse_kl_pg. The other micro-batches take their responses from the
// data, or from the teacher's samples (seq_kd).

// OnPolicyTerm is the recipe's objectives.onpolicy.
type OnPolicyTerm struct {
	Weight float64 `yaml:"weight"`
	// Lambda is GKD's λ: the fraction of micro-batches whose responses the
	// student samples (default 1); the others use the data's responses, or
	// the teacher's samples under SeqKD.
	Lambda *float64 `yaml:"lambda,omitempty"`
	SeqKD  bool     `yaml:"seq_kd"`
	// Temperature is the sampling temperature and, for loss jsd, the
	// divergence's temperature, as in TRL's GKD (default 1).
	Temperature *float64 `yaml:"temperature,omitempty"`
	// TopP is the sampling nucleus (0 or 1: the whole distribution).
	TopP float64 `yaml:"top_p"`
	// MaxNewTokens bounds a sampled response (default 128).
	MaxNewTokens int `yaml:"max_new_tokens"`
	// Loss is jsd (GKD's generalized JSD over the whole vocabulary; needs
	// a local teacher) or reverse_kl_pg (a policy gradient with per-token
	// advantage −(log p_student − log p_teacher); needs only the teacher's
	// log-probability of each sampled token). Default jsd.
	Loss string `yaml:"loss"`
	// Beta is JSD's β (0: forward KL, 1: reverse KL; default 0.5).
	Beta *float64 `yaml:"beta,omitempty"`
	// Discount is reverse_kl_pg's γ: each token's advantage adds γ times
	// the next one's (0: each token alone).
	Discount float64 `yaml:"discount"`
	// Teacher is "" (the recipe's teacher), "self" (a frozen copy of the
	// student as it starts) or a model folder (an earlier checkpoint of
	// the student, or another teacher of the same tokenizer).
	Teacher string `yaml:"teacher"`
	// TeacherEndpoint is an OpenAI-compatible API root (kdnative serve,
	// vLLM) that scores the samples; TeacherModel is the model name it
	// serves and TeacherAPIKeyEnv the environment variable holding its key.
	TeacherEndpoint  string `yaml:"teacher_endpoint"`
	TeacherModel     string `yaml:"teacher_model"`
	TeacherAPIKeyEnv string `yaml:"teacher_api_key_env"`
	// PromptTokens, for rows without a prompt part ({"text"} lines, every
	// token learnt), takes each row's first PromptTokens tokens as its
	// prompt.
	PromptTokens int `yaml:"prompt_tokens"`
	// EvalSamples is how many validation prompts the student answers at
	// every evaluation (default 8; 0: none): their reverse KL to the
	// teacher is measured, a few are logged, all go to samples.jsonl.
	EvalSamples *int `yaml:"eval_samples,omitempty"`
}

const (
	lossJSD = "jsd"
	lossPG  = "reverse_kl_pg"
)

func (o *OnPolicyTerm) lambda() float64 {
	if o.Lambda == nil {
		return 1
	}
	return *o.Lambda
}

func (o *OnPolicyTerm) temperature() float64 {
	if o.Temperature == nil {
		return 1
	}
	return *o.Temperature
}

func (o *OnPolicyTerm) beta() float64 {
	if o.Beta == nil {
		return 0.5
	}
	return *o.Beta
}

func (o *OnPolicyTerm) lossName() string {
	if o.Loss == "" {
		return lossJSD
	}
	return o.Loss
}

func (o *OnPolicyTerm) maxNew() int {
	if o.MaxNewTokens == 0 {
		return 128
	}
	return o.MaxNewTokens
}

func (o *OnPolicyTerm) evalSamples() int {
	if o.EvalSamples == nil {
		return 8
	}
	return *o.EvalSamples
}

// check adds the term's problems to bad (Recipe.Validate).
func (o *OnPolicyTerm) check(r *Recipe, bad func(key, format string, a ...any)) {
	const k = "objectives.onpolicy"
	if !(o.Weight > 0) || math.IsInf(o.Weight, 0) {
		bad(k+".weight", "%g must be positive", o.Weight)
	}
	if l := o.lambda(); !(l >= 0 && l <= 1) {
		bad(k+".lambda", "%g must be in [0, 1] (the fraction of batches the student samples)", l)
	}
	name := o.lossName()
	if name != lossJSD && name != lossPG {
		bad(k+".loss", "%q is not one of [%s %s]", o.Loss, lossJSD, lossPG)
	}
	if T := o.temperature(); !(T > 0) {
		bad(k+".temperature", "%g must be positive (it divides the logits when sampling and, for jsd, in the loss)", T)
	}
	if !(o.TopP >= 0 && o.TopP <= 1) {
		bad(k+".top_p", "%g must be in (0, 1] (0 or 1: the whole distribution)", o.TopP)
	}
	if o.MaxNewTokens < 0 {
		bad(k+".max_new_tokens", "%d must be positive (0: 128)", o.MaxNewTokens)
	}
	if b := o.beta(); !(b >= 0 && b <= 1) {
		bad(k+".beta", "%g must be in [0, 1]", b)
	}
	if o.Beta != nil && name == lossPG {
		bad(k+".beta", "is JSD's β; loss %s has none", lossPG)
	}
	if !(o.Discount >= 0 && o.Discount <= 1) {
		bad(k+".discount", "%g must be in [0, 1]", o.Discount)
	} else if o.Discount != 0 && name != lossPG {
		bad(k+".discount", "applies to loss %s only", lossPG)
	}
	if o.PromptTokens < 0 {
		bad(k+".prompt_tokens", "%d must be ≥ 0", o.PromptTokens)
	}
	if o.EvalSamples != nil && *o.EvalSamples < 0 {
		bad(k+".eval_samples", "%d must be ≥ 0", *o.EvalSamples)
	}
	switch {
	case o.TeacherEndpoint != "" && o.Teacher != "":
		bad(k+".teacher_endpoint", "give either teacher_endpoint or teacher, not both")
	case o.TeacherEndpoint != "":
		if !strings.HasPrefix(o.TeacherEndpoint, "http://") && !strings.HasPrefix(o.TeacherEndpoint, "https://") {
			bad(k+".teacher_endpoint", "%q is not an http:// or https:// URL", o.TeacherEndpoint)
		}
		if o.TeacherModel == "" {
			bad(k+".teacher_model", "required with teacher_endpoint (the model name the endpoint serves, as in its /v1/models)")
		}
		if name == lossJSD {
			bad(k+".loss", "jsd compares the teacher's whole distribution with the student's and needs a local teacher; with teacher_endpoint use loss %s", lossPG)
		}
		if o.SeqKD {
			bad(k+".seq_kd", "the teacher samples on this machine; with teacher_endpoint it cannot (use a local teacher, or seq_kd: false)")
		}
	case o.Teacher == "" && r.Teacher == "":
		bad(k, "needs a teacher: the recipe's teacher (a model folder), objectives.onpolicy.teacher (self, or a model folder) or objectives.onpolicy.teacher_endpoint")
	}
	if o.TeacherEndpoint == "" && (o.TeacherModel != "" || o.TeacherAPIKeyEnv != "") {
		bad(k+".teacher_model", "teacher_model and teacher_api_key_env go with teacher_endpoint")
	}
	if r.Data.Pack {
		bad(k, "samples a response per row, and packed rows hold several examples: set data.pack false")
	}
}

// onpolicy is the term's state in a run.
type onpolicy struct {
	term    *OnPolicyTerm
	teacher *model.Model // the local teacher (nil with an endpoint)
	scorer  rollout.Scorer
	student *rollout.Sampler
	tsample *rollout.Sampler // the teacher's, under seq_kd
	params  rollout.Params
	pcg     *rand.PCG // the sampling random state (saved in checkpoints)
	rng     *rand.Rand
	pending []preparedBatch // the step's micro-batches not yet run
	samples *metricsLog     // samples.jsonl
	// mark is where the data and the sampling stood before the running
	// step, to undo a step the teacher endpoint failed.
	mark struct {
		data data.LoaderState
		rng  []byte
	}
}

// onpolicyStats are a step's on-policy numbers.
type onpolicyStats struct {
	loss      float64 // the term, before its weight
	rkl       float64 // mean log π − log p_teacher on the sampled tokens (reverse_kl_pg)
	rklTokens int
	sampled   int // rows the student sampled
	rows      int
	respToks  int // response tokens of the sampled rows
	gen       time.Duration
	score     time.Duration
}

// endpointBackoff is the teacher endpoint's first retry wait (doubled each
// retry, five retries: about 15 s in all before a step gives up); tests
// shorten it.
var endpointBackoff = 500 * time.Millisecond

// onpolicySeedStream names the sampling random stream (PCG's second word).
const onpolicySeedStream = 0x6f6e706f6c696379

// setupOnPolicy loads the term's teacher and checks the data (after
// loadData and the kd term's setup).
func (t *trainer) setupOnPolicy() error {
	o := t.r.Objectives.OnPolicy
	if o == nil {
		return nil
	}
	if t.loader == nil {
		return errors.New("objectives.onpolicy needs prompt/response, messages or text data")
	}
	op := &onpolicy{term: o}
	op.pcg = rand.NewPCG(t.r.Seed, onpolicySeedStream)
	op.rng = rand.New(op.pcg)
	if err := t.checkPrompts("objectives.onpolicy", o.PromptTokens); err != nil {
		return err
	}
	switch {
	case o.TeacherEndpoint != "":
		c := &elicit.Client{BaseURL: o.TeacherEndpoint, Model: o.TeacherModel, Backoff: endpointBackoff}
		if o.TeacherAPIKeyEnv != "" {
			if c.APIKey = os.Getenv(o.TeacherAPIKeyEnv); c.APIKey == "" {
				return fmt.Errorf("objectives.onpolicy.teacher_api_key_env: the environment variable %s is empty or not set", o.TeacherAPIKeyEnv)
			}
		}
		e := &rollout.Endpoint{Client: c}
		if err := t.checkEndpointTokenizer(e); err != nil {
			return err
		}
		op.scorer = e
	case o.Teacher == "self":
		m, err := model.LoadDir(t.r.Student, t.be, model.ForPrecision(t.prec, false)...)
		if err != nil {
			return fmt.Errorf("objectives.onpolicy.teacher self: %w", err)
		}
		op.teacher = m
		t.logf("on-policy teacher: a frozen copy of the student as it starts (%s)", t.r.Student)
	case o.Teacher != "":
		m, err := model.LoadDir(o.Teacher, t.be, model.ForPrecision(t.prec, false)...)
		if err != nil {
			return fmt.Errorf("objectives.onpolicy.teacher: %w", err)
		}
		ttok, err := tokenizer.LoadDir(o.Teacher)
		if err != nil {
			return fmt.Errorf("objectives.onpolicy.teacher: %w", err)
		}
		if ttok.Hash() != t.tok.Hash() {
			return fmt.Errorf("objectives.onpolicy.teacher %s has another tokenizer than the student's: token ids would not mean the same thing (cross-tokenizer distillation is not on-policy's)", o.Teacher)
		}
		op.teacher = m
	default:
		op.teacher = t.teacher // the recipe's, its tokenizer checked by loadTeacher
	}
	if op.teacher != nil {
		op.scorer = rollout.Local{Model: op.teacher, Pad: t.pad, Loss: t.lossOpt}
		if t.teacher == nil && !t.sparse {
			t.teacher = op.teacher // validation's KL to the teacher
		}
	}
	stops := []int32{}
	if sp := t.tok.Special(); sp.EOS >= 0 {
		stops = append(stops, sp.EOS)
	}
	tmpl, err := data.NewTemplate(t.tok, data.Options{Template: t.r.Data.Template, SystemPrompt: t.r.Data.SystemPrompt, MaxLen: t.r.Data.MaxLen})
	if err != nil {
		return err
	}
	stops = append(stops, tmpl.StopTokens()...)
	// A sampled sequence fits data.max_len, the student and the teacher; an
	// endpoint scores a sequence as a prompt that leaves room for the one
	// token it generates (vLLM's max_tokens ≥ 1).
	maxLen := min(t.r.Data.MaxLen, t.student.Config.MaxPositions)
	if op.teacher != nil {
		maxLen = min(maxLen, op.teacher.Config.MaxPositions)
	} else {
		maxLen = min(maxLen, t.student.Config.MaxPositions-1)
	}
	op.params = rollout.Params{Temperature: o.temperature(), TopP: o.TopP, MaxNewTokens: o.maxNew(), MaxLen: maxLen, StopTokens: stops}
	if op.params.TopP == 1 {
		op.params.TopP = 0
	}
	op.student = rollout.NewSampler(t.student)
	if o.SeqKD {
		op.tsample = rollout.NewSampler(op.teacher)
	}
	t.op = op
	return nil
}

// openSamples opens samples.jsonl (after the output folder is prepared; on
// resume, records past the checkpoint are dropped).
func (t *trainer) openSamples() error {
	var err error
	switch {
	case t.op != nil && t.op.term.evalSamples() > 0:
		t.op.samples, err = openMetrics(filepath.Join(t.r.Output, "samples.jsonl"), t.step)
	case t.rl != nil && t.rl.term.evalSamples() > 0:
		t.rl.samples, err = openMetrics(filepath.Join(t.r.Output, "samples.jsonl"), t.step)
	}
	return err
}

// promptOf is the length of a row's prompt: the tokens before the first
// learnt one (the first assistant turn, or the response), or for a row
// learnt whole its first prompt_tokens tokens (all but the last of a
// shorter row).
func promptOf(e data.Example, promptTokens int) int {
	for i, l := range e.Labels {
		if l != data.IgnoreIndex {
			if i == 0 {
				return min(promptTokens, len(e.Tokens)-1)
			}
			return i
		}
	}
	return len(e.Tokens)
}

// checkPrompts refuses data whose rows have no prompt to sample from;
// term is the objective's recipe key (objectives.onpolicy, objectives.rl).
func (t *trainer) checkPrompts(term string, promptTokens int) error {
	whole := 0
	for _, e := range t.train {
		if n := promptOf(e, promptTokens); n <= 0 || n >= len(e.Tokens) {
			whole++
		}
	}
	if whole == 0 {
		return nil
	}
	if promptTokens == 0 {
		return fmt.Errorf("%s: %d of %d rows of %s have no prompt part (every token is learnt, as in {\"text\"} lines): give prompt/response or messages data, or set %s.prompt_tokens to take each row's first tokens as its prompt",
			term, whole, len(t.train), t.r.Data.Train, term)
	}
	return fmt.Errorf("%s: %d of %d rows of %s are too short for a prompt of %d tokens and a response", term, whole, len(t.train), t.r.Data.Train, promptTokens)
}

// checkEndpointTokenizer asks the endpoint how it tokenizes a probe text
// and refuses a teacher whose ids differ from the student's.
func (t *trainer) checkEndpointTokenizer(e *rollout.Endpoint) error {
	// A plain sentence and the start of the first response (the data's own
	// script), short enough for any model's positions.
	probe := "The quick brown fox jumps over the lazy dog, 1234567890 times."
	if len(t.train) > 0 {
		r := t.train[0]
		text := []rune(t.tok.Decode(r.Tokens[promptOf(r, t.r.Objectives.OnPolicy.PromptTokens):]))
		probe += " " + string(text[:min(len(text), 40)])
	}
	want := t.tok.Encode(probe)
	for len(want) > t.student.Config.MaxPositions/2 && len(probe) > 1 {
		probe = string([]rune(probe)[:len([]rune(probe))/2])
		want = t.tok.Encode(probe)
	}
	got, err := e.Tokenize(context.Background(), probe)
	if err != nil {
		return fmt.Errorf("objectives.onpolicy.teacher_endpoint: %w", err)
	}
	if sp := t.tok.Special(); sp.BOS >= 0 && len(got) == len(want)+1 && got[0] == sp.BOS {
		got = got[1:] // the endpoint's tokenizer adds a BOS to text
	}
	if !slices.Equal(got, want) {
		at := 0
		for at < min(len(got), len(want)) && got[at] == want[at] {
			at++
		}
		return fmt.Errorf("objectives.onpolicy.teacher_endpoint %s tokenizes differently from the student's tokenizer (%s): at token %d of a probe text it has %v, the student %v; token ids would not mean the same thing, and scoring is by token ids (cross-tokenizer distillation is not on-policy's)",
			e.Client.BaseURL, t.tokDir(), at, got[at:min(at+4, len(got))], want[at:min(at+4, len(want))])
	}
	t.logf("on-policy teacher: %s (model %s), same tokenizer as the student", e.Client.BaseURL, e.Client.Model)
	return nil
}

// preparedBatch is one micro-batch's rollouts, sampled when the step began.
type preparedBatch struct {
	rs      []rollout.Rollout
	sampled bool // by the student (else the data's, or the teacher's under seq_kd)
}

// beginStep prepares a step's on-policy micro-batches: it remembers where
// the data and the sampling stand (to undo a step the teacher endpoint
// fails), reads the rows of all GradAccum micro-batches ahead, decides for
// each whether the student samples it (λ), and samples every such row of
// the step in one call — one engine batch, one forward pass per decoding
// step for all of them (the teacher's rows likewise under seq_kd). The
// weights do not change within a step, so this is what sampling each
// micro-batch in turn would give. The data position is then put back, and
// the micro-batches read the same rows.
func (t *trainer) beginStep(st *stepStats) error {
	if t.op == nil {
		return nil
	}
	op, o := t.op, t.op.term
	op.mark.data = t.loader.State()
	op.mark.rng, _ = op.pcg.MarshalBinary()
	op.pending = op.pending[:0]
	var studentP, teacherP [][]int32
	var studentS, teacherS []uint64
	var who []int // per micro-batch: 1 student, 2 teacher, 0 data
	for range t.r.GradAccum {
		rows, _, err := t.loader.NextRows(t.r.BatchSize)
		if err != nil {
			return err
		}
		from := rowsAsRollouts(rows, o.PromptTokens, op.params.MaxLen)
		u := op.rng.Float64()
		k := 0
		switch {
		case u < o.lambda():
			k = 1
		case o.SeqKD:
			k = 2
		}
		for _, r := range from {
			seed := op.rng.Uint64()
			switch k {
			case 1:
				studentP, studentS = append(studentP, r.Prompt), append(studentS, seed)
			case 2:
				teacherP, teacherS = append(teacherP, r.Prompt), append(teacherS, seed)
			}
		}
		who = append(who, k)
		op.pending = append(op.pending, preparedBatch{rs: from, sampled: k == 1})
	}
	if err := t.loader.Restore(op.mark.data); err != nil {
		return err
	}
	start := time.Now()
	ctx := context.Background()
	var studentR, teacherR []rollout.Rollout
	var err error
	if len(studentP) > 0 {
		if studentR, err = op.student.Sample(ctx, studentP, studentS, op.params); err != nil {
			return err
		}
	}
	if len(teacherP) > 0 {
		if teacherR, err = op.tsample.Sample(ctx, teacherP, teacherS, op.params); err != nil {
			return err
		}
		for i := range teacherR { // the teacher's samples: not the student's policy
			teacherR[i].SampleLogProbs, teacherR[i].LogProbs = nil, nil
		}
	}
	st.op.gen += time.Since(start)
	for i, k := range who {
		n := len(op.pending[i].rs)
		switch k {
		case 1:
			op.pending[i].rs, studentR = studentR[:n], studentR[n:]
			st.op.sampled += n
			for _, r := range op.pending[i].rs {
				st.op.respToks += len(r.Response)
			}
		case 2:
			op.pending[i].rs, teacherR = teacherR[:n], teacherR[n:]
		}
	}
	return nil
}

// stepFailed turns a failed step into the run's error. When the teacher
// endpoint failed (after its retries), the step is undone — the data and
// the sampling put back where it began — and a checkpoint is written, so
// that --resume continues as if nothing had happened.
func (t *trainer) stepFailed(err error) error {
	err = fmt.Errorf("step %d: %w", t.step+1, err)
	var ee *rollout.EndpointError
	var jf *judgeFailure
	var markData data.LoaderState
	var markRNG []byte
	var pcg *rand.PCG
	what := "the teacher endpoint"
	switch {
	case t.op != nil && errors.As(err, &ee):
		markData, markRNG, pcg = t.op.mark.data, t.op.mark.rng, t.op.pcg
	case t.rl != nil && errors.As(err, &jf):
		markData, markRNG, pcg, what = t.rl.mark.data, t.rl.mark.rng, t.rl.pcg, "the judge"
	default:
		return err
	}
	if rerr := t.loader.Restore(markData); rerr != nil {
		return fmt.Errorf("%w (and the data position could not be put back for a checkpoint: %v)", err, rerr)
	}
	if rerr := pcg.UnmarshalBinary(markRNG); rerr != nil {
		return fmt.Errorf("%w (and the sampling state could not be put back for a checkpoint: %v)", err, rerr)
	}
	dir, cerr := t.checkpoint()
	if cerr != nil {
		return fmt.Errorf("%w (and the checkpoint failed: %v)", err, cerr)
	}
	t.endLine()
	return fmt.Errorf("%w\n%s failed; %s holds the run at step %d: continue with --resume once it answers", err, what, dir, t.step)
}

// samplingState is a sampling objective's part of a checkpoint's training
// state (objectives.onpolicy, objectives.rl).
type samplingState struct {
	// RNG is the sampling random state (math/rand/v2 PCG, base64).
	RNG string `json:"rng"`
}

// onpolicyState is the on-policy part of a checkpoint's training state.
type onpolicyState = samplingState

func saveSampling(pcg *rand.PCG) *samplingState {
	b, _ := pcg.MarshalBinary()
	return &samplingState{RNG: base64.StdEncoding.EncodeToString(b)}
}

// restoreSampling puts a checkpoint's sampling state back into pcg; what
// names the objective ("on-policy", "RL"), key its recipe key.
func restoreSampling(pcg *rand.PCG, s *samplingState, what, key string) error {
	if s == nil {
		return fmt.Errorf("resume: the checkpoint has no %s sampling state (it was made without %s)", what, key)
	}
	b, err := base64.StdEncoding.DecodeString(s.RNG)
	if err == nil {
		err = pcg.UnmarshalBinary(b)
	}
	if err != nil {
		return fmt.Errorf("resume: the checkpoint's %s sampling state: %v", what, err)
	}
	return nil
}

func (t *trainer) saveOnPolicy() *onpolicyState {
	if t.op == nil {
		return nil
	}
	return saveSampling(t.op.pcg)
}

func (t *trainer) restoreOnPolicy(s *onpolicyState) error {
	if t.op == nil {
		return nil
	}
	return restoreSampling(t.op.pcg, s, "on-policy", "objectives.onpolicy")
}

// rowsAsRollouts are data rows as rollouts: the prompt and the data's
// response (not sampled), cut to maxLen tokens in all.
func rowsAsRollouts(rows []data.Example, promptTokens, maxLen int) []rollout.Rollout {
	out := make([]rollout.Rollout, len(rows))
	for i, r := range rows {
		n := min(promptOf(r, promptTokens), maxLen-1)
		out[i] = rollout.Rollout{Prompt: r.Tokens[:n], Response: r.Tokens[n:min(len(r.Tokens), maxLen)]}
	}
	return out
}

// onpolicyMicroBatch runs the on-policy term on rows (weight w of the step).
func (t *trainer) onpolicyMicroBatch(st *stepStats, w float64, rows []data.Example) error {
	op, o := t.op, t.op.term
	ctx := context.Background()
	if len(op.pending) == 0 {
		return errors.New("on-policy: a micro-batch the step did not prepare")
	}
	mb := op.pending[0]
	op.pending = op.pending[1:]
	if len(mb.rs) != len(rows) || len(rows) > 0 && !slices.Equal(mb.rs[0].Prompt, rows[0].Tokens[:len(mb.rs[0].Prompt)]) {
		return errors.New("on-policy: the micro-batch's rows are not the ones the step sampled for")
	}
	rs, sampled := mb.rs, mb.sampled
	st.op.rows += len(rs)
	b, err := rollout.MakeBatch(rs, t.pad, 0)
	if err != nil {
		return err
	}
	if !sampled && !o.SeqKD {
		// The data's labels say which response tokens are learnt (a later
		// user turn of a conversation is not).
		for r, row := range rows {
			for j := b.Starts[r]; j < b.Lens[r]; j++ {
				if row.Labels[j] == data.IgnoreIndex {
					b.Targets[r*b.T+j-1] = kdrt.IgnoreIndex
				}
			}
		}
	}
	n := 0
	for _, tg := range b.Targets {
		if tg != kdrt.IgnoreIndex {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	st.tokens += n
	t.teacherFor = nil
	weight := o.Weight * w
	var term float64
	switch o.lossName() {
	case lossJSD:
		l, took, err := onpolicyJSD(t.be, t.student, op.teacher, b, o.beta(), o.temperature(), weight, t.lossOpt)
		if err != nil {
			return err
		}
		term = l
		st.op.score += took
	case lossPG:
		start := time.Now()
		scores, err := op.scorer.Score(ctx, b.Sequences())
		if err != nil {
			return err
		}
		lt, err := b.Scatter(scores)
		if err != nil {
			return err
		}
		st.op.score += time.Since(start)
		h, err := t.student.ForwardHidden(b.Batch)
		if err != nil {
			return err
		}
		behaviour, student := b.Behaviour, b.Sampled
		if !b.AllSampled() {
			// Not the student's samples (the data's, the teacher's): the
			// student now is the policy, importance weight 1.
			cur, err := loss.TokenLogProbs(t.be, h, loss.Head{W: t.student.Head().W}, b.Targets, t.lossOpt)
			if err != nil {
				return err
			}
			behaviour, student = cur, cur
		}
		adv, err := loss.ReverseKLAdvantages(student, lt, b.Targets, b.T, o.Discount)
		if err != nil {
			return err
		}
		for i, tg := range b.Targets {
			if tg != kdrt.IgnoreIndex {
				st.op.rkl += student[i] - lt[i]
				st.op.rklTokens++
			}
		}
		dh, err := t.be.Alloc("grad.hidden", h.DType, h.Shape...)
		if err != nil {
			return err
		}
		defer t.be.Free(dh)
		head := loss.Head{W: t.student.Head().W, G: t.student.Head().G}
		res, err := loss.PolicyGradient(t.be, h, head, dh, b.Targets, behaviour, adv, weight, t.lossOpt)
		if err != nil {
			return err
		}
		term = res.Loss
		if err := t.student.BackwardHidden(dh); err != nil {
			return err
		}
	}
	st.add(&st.op.loss, o.Weight, term)
	return nil
}

// onpolicyJSD is the jsd term on a batch of rollouts: the teacher's and the
// student's forward passes, GKD's generalized JSD(β) at temperature T over
// the whole vocabulary at every response position (as TRL's
// GKDTrainer.generalized_jsd_loss: the mean over the response tokens, no
// T²), times weight, and the student's backward. It returns the loss and
// the time the teacher took.
func onpolicyJSD(be kdrt.Backend, student, teacher *model.Model, b rollout.Batch, beta, T, weight float64, opt loss.Options) (float64, time.Duration, error) {
	start := time.Now()
	th, err := teacher.InferHidden(b.Batch)
	if err != nil {
		return 0, 0, fmt.Errorf("teacher: %w", err)
	}
	took := time.Since(start)
	h, err := student.ForwardHidden(b.Batch)
	if err != nil {
		return 0, 0, err
	}
	dh, err := be.Alloc("grad.hidden", h.DType, h.Shape...)
	if err != nil {
		return 0, 0, err
	}
	defer be.Free(dh)
	cfg := loss.KDConfig{Divergence: kdrt.JSD, Temperature: T, Beta: beta, NoTSquared: true, Tail: kdrt.TailBucket}
	head := loss.Head{W: student.Head().W, G: student.Head().G}
	res, err := loss.KD(be, h, head, dh, loss.TeacherHidden{Hidden: th, Head: teacher.Head().W}, targetMask(b.Targets), cfg, weight, opt)
	if err != nil {
		return 0, 0, err
	}
	return res.Loss, took, student.BackwardHidden(dh)
}

// onpolicyLine is the progress line's on-policy part.
func (t *trainer) onpolicyLine(st stepStats) string {
	if t.op == nil {
		return ""
	}
	s := fmt.Sprintf(" (onpolicy %.4f", st.op.loss)
	if st.op.rklTokens > 0 {
		s += fmt.Sprintf(", rkl %.4f", st.op.rkl/float64(st.op.rklTokens))
	}
	if st.op.sampled > 0 {
		s += fmt.Sprintf(", %d sampled, %.0f tok/row", st.op.sampled, float64(st.op.respToks)/float64(st.op.sampled))
	}
	s += ")"
	if st.wall > 0 {
		g := st.op.gen.Seconds() / st.wall.Seconds()
		sc := st.op.score.Seconds() / st.wall.Seconds()
		s += fmt.Sprintf("  gen %.0f%% score %.0f%% train %.0f%%", 100*g, 100*sc, 100*max(0, 1-g-sc))
	}
	return s
}

// onpolicyRecord adds the step's on-policy numbers to its metrics record.
func (t *trainer) onpolicyRecord(rec map[string]any, st stepStats) {
	if t.op == nil {
		return
	}
	rec["onpolicy"] = st.op.loss
	if st.op.rklTokens > 0 {
		rec["reverse_kl_sampled"] = st.op.rkl / float64(st.op.rklTokens)
	}
	rec["sampled_rows"] = st.op.sampled
	if st.op.sampled > 0 {
		rec["response_tokens"] = float64(st.op.respToks) / float64(st.op.sampled)
	}
	rec["gen_s"] = st.op.gen.Seconds()
	rec["score_s"] = st.op.score.Seconds()
	rec["train_s"] = max(0, st.wall.Seconds()-st.op.gen.Seconds()-st.op.score.Seconds())
}

// evalSeed is the seed of validation prompt i's sample: the same at every
// evaluation (the numbers compare across steps) and apart from the
// training samples' stream.
func evalSeed(seed uint64, i int) uint64 { return seed*0x9e3779b97f4a7c15 + uint64(i) + 1 }

// evalOnPolicy answers the first eval_samples validation prompts with the
// student (temperature 1, the whole distribution), measures the reverse KL
// of the student to the teacher on those samples, logs a few and writes
// them all to samples.jsonl.
func (t *trainer) evalOnPolicy(step int, rec map[string]any) error {
	if t.op == nil || t.op.term.evalSamples() == 0 || len(t.val) == 0 {
		return nil
	}
	o := t.op.term
	rows := t.val[:min(len(t.val), o.evalSamples())]
	from := rowsAsRollouts(rows, o.PromptTokens, t.op.params.MaxLen)
	prompts := make([][]int32, len(from))
	seeds := make([]uint64, len(from))
	for i, r := range from {
		prompts[i], seeds[i] = r.Prompt, evalSeed(t.r.Seed, i)
	}
	p := t.op.params
	p.Temperature, p.TopP = 1, 0
	rkl, tokens, rs, err := rollout.ReverseKLOnSamples(context.Background(), t.op.student, t.student, t.op.teacher, t.op.scorer, prompts, seeds, p, t.pad, t.lossOpt)
	if err != nil {
		return fmt.Errorf("step %d: on-policy evaluation: %w", step, err)
	}
	how := "full vocabulary"
	if t.op.teacher == nil {
		how = "sampled tokens' log-ratio"
	}
	if ev, ok := rec["eval"].(map[string]any); ok {
		ev["reverse_kl_samples"] = rkl
		ev["sample_tokens"] = tokens
	}
	t.logf("step %d: reverse KL(student‖teacher) %.4f nats/token on %d student samples (%d tokens, %s)", step, rkl, len(rs), tokens, how)
	for i, r := range rs {
		if i < 3 {
			t.logf("  sample %d: %q → %q", i+1, t.tok.Decode(r.Prompt), t.tok.Decode(r.Response))
		}
		if t.op.samples != nil {
			t.op.samples.write(map[string]any{"step": step, "prompt": t.tok.Decode(r.Prompt), "response": t.tok.Decode(r.Response), "finish": r.Finish})
		}
	}
	return nil
}

// closeOnPolicy frees the samplers and closes samples.jsonl.
func (t *trainer) closeOnPolicy() error {
	if t.op == nil {
		return nil
	}
	t.op.student.Close()
	if t.op.tsample != nil {
		t.op.tsample.Close()
	}
	if t.op.samples != nil {
		return t.op.samples.close()
	}
	return nil
}
