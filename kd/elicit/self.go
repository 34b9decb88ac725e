package elicit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kdnative/kdnative/kd/data"
)

// The self-knowledge loop (STaR, Zelikman et al. 2022; rejection-sampling
// fine-tuning; self-rewarding models): the student answers each prompt N
// times, a judge — a rule on the answer, or the teacher — keeps the good
// answers, and the kept ones are SFT data the student is trained on next.

// SelfConfig says how the student's own answers become training data.
type SelfConfig struct {
	// Sampler writes the student's answers (ModelSampler: a local model).
	Sampler Sampler
	// Judge scores each answer (RuleJudge or TeacherJudge).
	Judge SelfJudge
	// Prompts is JSONL (or Parquet) of {"prompt"} or {"messages"} records,
	// with whatever the judge reads beside them (a reference answer).
	Prompts string
	// PromptField, when not "prompt", is the field holding the prompt text
	// instead (GSM8K's "question"; "messages" is then not read).
	PromptField string
	// Output receives the kept answers, one {"id", "prompt", "response"
	// [, "messages"], "finish_reason", "score", "sample"} record each, in
	// the prompts' order: what kdnative train reads as SFT data. An
	// existing output is continued.
	Output string
	// Journal receives every sample and every judgement as they are made
	// (default: Output with ".samples.jsonl" for ".jsonl"), so that a
	// stopped run redoes neither; it is also the place to read what the
	// student wrote and what the judge said of each answer.
	Journal string
	// N is how many answers each prompt gets (default 4).
	N int
	// System, when set, is the system message put before each prompt.
	System string
	// Seed makes the run reproducible: each answer is sampled with a seed
	// made from Seed and its id, whatever the batching, order or resumption.
	Seed uint64
	// Keep is "all" (default: every passing answer, best first, up to
	// MaxPerPrompt) or "best" (the one best-scored passing answer).
	Keep string
	// MaxPerPrompt bounds the answers kept per prompt under Keep "all"
	// (0: no bound).
	MaxPerPrompt int
	// Concurrency is how many answers are judged at once (default 4).
	Concurrency int
	// MaxFailures stops the run after this many judgements in a row failed
	// (default 10).
	MaxFailures int
	// StrictInput stops at the first bad prompt record instead of counting
	// and skipping it.
	StrictInput bool
	// Progress receives a progress line; Log notes on skipped records and
	// unjudged answers. Either may be nil.
	Progress, Log io.Writer
}

// SelfPrompt is one prompt of the loop.
type SelfPrompt struct {
	// Line is the record's line in the prompt file (row for Parquet); ids
	// are "p<Line>.s<sample>".
	Line int
	// Prompt is the prompt text (the last user turn of a message list).
	Prompt string
	// Messages are what the student is asked: the record's messages, or the
	// prompt as a user turn, after System when one is set.
	Messages []Message
	// Ref is what the judge read from the record (SelfJudge.Read).
	Ref any
	// chat: the record was a message list or System is set, so the output
	// records carry "messages".
	chat bool
}

// SampleJob is one answer to write: sample Sample of prompt Prompt.
type SampleJob struct {
	ID     string // "p<line>.s<sample>"
	Prompt int    // index into the loop's prompts
	Sample int
	// Messages are the prompt as the student is asked it.
	Messages []Message
	// Seed is the answer's own sampling seed.
	Seed uint64
}

// Sampled is a finished answer.
type Sampled struct {
	Response string
	// Finish is "stop" (the model ended it, or a stop string) or "length"
	// (cut at the token limit).
	Finish string
	// Tokens is how many tokens the student generated.
	Tokens int
}

// Sampler writes answers. Sample makes every job's answer, in any order,
// calling done (never concurrently) as each is finished — or with the
// reason a job cannot be done (a prompt longer than the model allows). An
// error from done, or ctx's end, stops it.
type Sampler interface {
	Sample(ctx context.Context, jobs []SampleJob, done func(SampleJob, Sampled, error) error) error
}

// SelfJudge scores answers.
type SelfJudge interface {
	// Read takes what the judge needs from a prompt record (a reference
	// answer); an error makes the record a bad one.
	Read(rec map[string]json.RawMessage) (ref any, err error)
	// Judge scores an answer to p. An error leaves the answer unjudged (a
	// later run judges it again); an error for which Fatal is true stops
	// the run.
	Judge(ctx context.Context, p *SelfPrompt, response string) (Verdict, error)
}

// Verdict is a judge's word on one answer.
type Verdict struct {
	// Score is the rule's 1 or 0, or the teacher's score on its scale.
	Score float64
	// Pass: the answer is good enough to keep.
	Pass bool
	// Note is the answer the rule extracted, or the teacher's reply.
	Note string
	// Usage counts a teacher's tokens.
	Usage Usage
}

// SelfSummary is what a self run did.
type SelfSummary struct {
	// Prompts counts the usable prompts; Resumed those the journal had
	// finished before this run; BadLines the prompt records skipped.
	Prompts, Resumed, BadLines int
	// Samples counts the answers the student wrote in this run (Tokens
	// their tokens, Cut those stopped at the token limit); Judged those
	// judged in this run.
	Samples, Tokens, Cut, Judged int
	// Passed counts the answers of the prompts finished in this run that
	// passed; Kept the records written (Duplicates: passing answers left
	// out as the same text as one kept); Solved the prompts with at least
	// one kept.
	Passed, Kept, Duplicates, Solved int
	// Unjudged counts answers whose judgement failed (after the client's
	// retries, or a reply without a score); their prompts are left for a
	// later run. Retries counts retried judge requests; SkippedPrompts the
	// prompts the student could not answer (too long for the model).
	Unjudged, Retries, SkippedPrompts int
	// JudgeTokens counts the teacher's prompt and completion tokens.
	JudgeTokens int
	Elapsed     time.Duration
}

func (s SelfSummary) String() string {
	parts := []string{count(s.Prompts, "prompt", "prompts")}
	if s.Resumed > 0 {
		parts[0] += fmt.Sprintf(" (%d finished before)", s.Resumed)
	}
	gen := fmt.Sprintf("%s sampled (%d tokens", count(s.Samples, "answer", "answers"), s.Tokens)
	if s.Cut > 0 {
		gen += fmt.Sprintf(", %d cut at the length limit", s.Cut)
	}
	parts = append(parts, gen+")", fmt.Sprintf("%d judged", s.Judged),
		fmt.Sprintf("%d passed", s.Passed), fmt.Sprintf("%s kept from %s", count(s.Kept, "answer", "answers"), count(s.Solved, "prompt", "prompts")))
	if s.Duplicates > 0 {
		parts = append(parts, count(s.Duplicates, "duplicate answer left out", "duplicate answers left out"))
	}
	parts = append(parts, fmt.Sprintf("%d unjudged", s.Unjudged), count(s.Retries, "retry", "retries"))
	if s.BadLines > 0 {
		parts = append(parts, count(s.BadLines, "bad prompt record skipped", "bad prompt records skipped"))
	}
	if s.SkippedPrompts > 0 {
		parts = append(parts, count(s.SkippedPrompts, "prompt too long for the student", "prompts too long for the student"))
	}
	if s.JudgeTokens > 0 {
		parts = append(parts, fmt.Sprintf("%d judge tokens", s.JudgeTokens))
	}
	return strings.Join(parts, ", ") + fmt.Sprintf(" in %v", s.Elapsed.Round(time.Millisecond))
}

// The keep policies.
const (
	KeepAll  = "all"
	KeepBest = "best"
)

// DefaultJournal is where a run's samples and judgements go for output.
func DefaultJournal(output string) string {
	if base, ok := strings.CutSuffix(output, ".jsonl"); ok {
		return base + ".samples.jsonl"
	}
	return output + ".samples.jsonl"
}

// sampleLine and judgedLine are the journal's two kinds of record: an
// answer (id "p<line>.s<k>") and its judgement (id "p<line>.s<k>.j").
type sampleLine struct {
	ID       string `json:"id"`
	Prompt   string `json:"prompt"`
	Sample   int    `json:"sample"`
	Response string `json:"response"`
	Finish   string `json:"finish_reason"`
	Tokens   int    `json:"tokens"`
}

type judgedLine struct {
	ID    string  `json:"id"`
	Score float64 `json:"score"`
	Pass  bool    `json:"pass"`
	Note  string  `json:"note,omitempty"`
}

// selfRecord is a kept answer, as the output holds it.
type selfRecord struct {
	ID       string    `json:"id"`
	Prompt   string    `json:"prompt"`
	Response string    `json:"response"`
	Messages []Message `json:"messages,omitempty"`
	Finish   string    `json:"finish_reason"`
	Score    float64   `json:"score"`
	Sample   int       `json:"sample"`
}

// promptState is one prompt's answers and judgements during a run.
type promptState struct {
	samples  []*Sampled
	verdicts []*Verdict
	// left counts the answers neither judged nor failed in this run.
	left     int
	unjudged int
	skipped  bool // the student cannot answer it
	resumed  bool
	// done: ready to be flushed (kept holds what to write).
	done bool
	kept []selfRecord
}

// Self runs the loop: every prompt gets cfg.N answers from cfg.Sampler, each
// answer is judged by cfg.Judge as soon as it is written, and when a
// prompt's answers are all judged, the passing ones it keeps are written to
// cfg.Output in one write, in the prompts' order. Samples and judgements go
// to the journal as they come, so an interrupted run, started again with the
// same command, samples only the missing answers, judges only the unjudged
// ones, and writes every kept record exactly once (a torn last line in
// either file is cut off). With the same Seed, the output is the same
// whatever the batching, the concurrency and the interruptions.
func Self(ctx context.Context, cfg SelfConfig) (SelfSummary, error) {
	start := time.Now()
	var sum SelfSummary
	switch {
	case cfg.Sampler == nil:
		return sum, errors.New("self: no sampler (the student)")
	case cfg.Judge == nil:
		return sum, errors.New("self: no judge")
	}
	if cfg.N <= 0 {
		cfg.N = 4
	}
	if cfg.PromptField == "" {
		cfg.PromptField = "prompt"
	}
	if c, ok := cfg.Judge.(interface{ Check() error }); ok {
		if err := c.Check(); err != nil {
			return sum, err
		}
	}
	switch cfg.Keep {
	case "":
		cfg.Keep = KeepAll
	case KeepAll:
	case KeepBest:
		if cfg.MaxPerPrompt > 1 {
			return sum, fmt.Errorf("self: keep best keeps one answer per prompt; max-per-prompt %d applies to keep all", cfg.MaxPerPrompt)
		}
	default:
		return sum, fmt.Errorf("self: keep %q: want all or best", cfg.Keep)
	}
	if cfg.MaxPerPrompt < 0 {
		return sum, fmt.Errorf("self: max-per-prompt %d: want 0 (no bound) or more", cfg.MaxPerPrompt)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 10
	}
	if cfg.Journal == "" {
		cfg.Journal = DefaultJournal(cfg.Output)
	}
	if cfg.Journal == cfg.Output {
		return sum, errors.New("self: the journal and the output must be different files")
	}
	prompts, bad, err := readSelfPrompts(cfg)
	sum.BadLines = bad
	if err != nil {
		return sum, err
	}
	sum.Prompts = len(prompts)
	journal, err := openResumable(cfg.Journal)
	if err != nil {
		return sum, fmt.Errorf("self: journal: %w", err)
	}
	defer journal.f.Close()
	out, err := openResumable(cfg.Output)
	if err != nil {
		return sum, err
	}
	defer out.f.Close()
	// A prompt with any record in the output is written whole (one write).
	for _, rec := range out.recs {
		id, _ := rec["id"].(string)
		if g, _, ok := strings.Cut(id, ".s"); ok {
			out.have[g] = true
		}
	}

	byLine := make(map[int]int, len(prompts))
	states := make([]*promptState, len(prompts))
	for i, p := range prompts {
		byLine[p.Line] = i
		states[i] = &promptState{samples: make([]*Sampled, cfg.N), verdicts: make([]*Verdict, cfg.N)}
	}
	if err := readJournal(cfg, journal, prompts, byLine, states); err != nil {
		return sum, err
	}

	r := &selfRun{cfg: cfg, prompts: prompts, states: states, out: out, journal: journal, sum: &sum}
	ctx, r.cancel = context.WithCancel(ctx)
	defer r.cancel()
	if tj, ok := cfg.Judge.(*TeacherJudge); ok {
		prev := tj.Client.OnRetry
		tj.Client.OnRetry = func(err error) {
			r.mu.Lock()
			sum.Retries++
			r.mu.Unlock()
			if prev != nil {
				prev(err)
			}
		}
		defer func() { tj.Client.OnRetry = prev }()
	}
	// What is left: answers to sample, answers to judge.
	var jobs []SampleJob
	var toJudge []judgeTask
	for i, p := range prompts {
		st := states[i]
		judged := 0
		for k := range cfg.N {
			switch {
			case st.samples[k] == nil:
				jobs = append(jobs, SampleJob{ID: sampleID(p.Line, k), Prompt: i, Sample: k, Messages: p.Messages, Seed: uint64(requestSeed(int64(cfg.Seed), sampleID(p.Line, k)))})
			case st.verdicts[k] == nil:
				toJudge = append(toJudge, judgeTask{i, k})
			default:
				judged++
			}
		}
		st.left = cfg.N - judged
		if st.left == 0 {
			st.resumed = true
			sum.Resumed++
		}
	}
	r.bar = newProgress(cfg.Progress, "prompts", len(prompts), sum.Resumed)
	r.bar.failedOne, r.bar.failedMany = "prompt with unjudged answers", "prompts with unjudged answers"
	defer r.bar.end()
	r.mu.Lock()
	for i, st := range states {
		if st.left == 0 {
			r.finish(i)
		}
	}
	err = r.flush()
	r.mu.Unlock()
	if err != nil {
		return sum, err
	}

	queue := make(chan judgeTask, len(jobs)+len(toJudge))
	for _, t := range toJudge {
		queue <- t
	}
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range queue {
				r.judge(ctx, t)
			}
		}()
	}
	var sampleErr error
	if len(jobs) > 0 {
		sampleErr = cfg.Sampler.Sample(ctx, jobs, func(job SampleJob, s Sampled, err error) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.stopErr != nil {
				return r.stopErr
			}
			st := states[job.Prompt]
			if err != nil {
				if !st.skipped {
					st.skipped = true
					sum.SkippedPrompts++
					if cfg.Log != nil {
						fmt.Fprintf(cfg.Log, "%s line %d skipped: %v\n", cfg.Prompts, prompts[job.Prompt].Line, err)
					}
				}
				st.left--
				if st.left == 0 {
					r.finish(job.Prompt)
					return r.flush()
				}
				return nil
			}
			line := sampleLine{ID: job.ID, Prompt: prompts[job.Prompt].Prompt, Sample: job.Sample, Response: s.Response, Finish: s.Finish, Tokens: s.Tokens}
			if _, err := journal.write(job.ID, line); err != nil {
				r.stop(fmt.Errorf("self: writing the journal: %w", err))
				return r.stopErr
			}
			st.samples[job.Sample] = &s
			sum.Samples++
			sum.Tokens += s.Tokens
			if s.Finish == "length" {
				sum.Cut++
			}
			queue <- judgeTask{job.Prompt, job.Sample}
			return nil
		})
	}
	close(queue)
	wg.Wait()
	r.mu.Lock()
	stopErr := r.stopErr
	r.mu.Unlock()
	if cerr := journal.close(); err == nil {
		err = cerr
	}
	if cerr := out.close(); err == nil {
		err = cerr
	}
	sum.Elapsed = time.Since(start)
	switch {
	case stopErr != nil:
		return sum, stopErr
	case sampleErr != nil:
		return sum, sampleErr
	case ctx.Err() != nil:
		return sum, ctx.Err()
	case err != nil:
		return sum, err
	case sum.Unjudged > 0:
		return sum, fmt.Errorf("%s could not be judged (last: %v); run again with the same output to judge them", count(sum.Unjudged, "answer", "answers"), r.lastErr)
	}
	return sum, nil
}

func sampleID(line, k int) string { return fmt.Sprintf("p%d.s%d", line, k) }

// judgeTask is answer k of prompt i.
type judgeTask struct{ prompt, sample int }

// selfRun is a run's shared state; mu guards it and the files' writes.
type selfRun struct {
	cfg          SelfConfig
	prompts      []SelfPrompt
	states       []*promptState
	out, journal *resumable
	sum          *SelfSummary
	bar          *progress
	cancel       context.CancelFunc

	mu      sync.Mutex
	next    int // the first prompt not yet flushed
	inARow  int
	lastErr error
	stopErr error
}

// stop ends the run with err (the first one wins).
func (r *selfRun) stop(err error) {
	if r.stopErr == nil {
		r.stopErr = err
	}
	r.cancel()
}

// judge judges one answer and records the outcome.
func (r *selfRun) judge(ctx context.Context, t judgeTask) {
	if ctx.Err() != nil {
		return
	}
	p := &r.prompts[t.prompt]
	st := r.states[t.prompt]
	r.mu.Lock()
	s := st.samples[t.sample]
	r.mu.Unlock()
	var v Verdict
	var err error
	if strings.TrimSpace(s.Response) == "" {
		// Nothing to judge, nothing to learn.
		v = Verdict{Note: "empty answer"}
	} else {
		v, err = r.cfg.Judge.Judge(ctx, p, s.Response)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if ctx.Err() != nil || r.stopErr != nil {
		return
	}
	id := sampleID(p.Line, t.sample)
	if err != nil {
		if Fatal(err) {
			r.stop(fmt.Errorf("self: the judge: %w", err))
			return
		}
		r.sum.Unjudged++
		st.unjudged++
		r.lastErr = fmt.Errorf("%s: %w", id, err)
		if r.cfg.Log != nil {
			fmt.Fprintf(r.cfg.Log, "%s unjudged: %v\n", id, err)
		}
		r.inARow++
		if r.inARow >= r.cfg.MaxFailures {
			r.stop(fmt.Errorf("self: %d judgements in a row failed; last: %w", r.inARow, r.lastErr))
			return
		}
	} else {
		r.inARow = 0
		if _, err := r.journal.write(id+".j", judgedLine{ID: id + ".j", Score: v.Score, Pass: v.Pass, Note: v.Note}); err != nil {
			r.stop(fmt.Errorf("self: writing the journal: %w", err))
			return
		}
		st.verdicts[t.sample] = &v
		r.sum.Judged++
		r.sum.JudgeTokens += v.Usage.PromptTokens + v.Usage.CompletionTokens
	}
	st.left--
	if st.left == 0 {
		r.finish(t.prompt)
		if err := r.flush(); err != nil {
			r.stop(err)
		}
	}
}

// finish decides what prompt i keeps, once its answers are all judged (or
// have failed).
func (r *selfRun) finish(i int) {
	st, p := r.states[i], &r.prompts[i]
	st.done = true
	switch {
	case st.skipped:
		r.bar.add(unitSkipped)
		return
	case st.unjudged > 0:
		r.bar.add(unitFailed)
		return
	}
	if !st.resumed {
		r.bar.add(unitWritten)
	}
	var pass []int
	for k, v := range st.verdicts {
		if v.Pass {
			pass = append(pass, k)
		}
	}
	// Best first; among equal scores the earlier sample.
	sort.SliceStable(pass, func(a, b int) bool { return st.verdicts[pass[a]].Score > st.verdicts[pass[b]].Score })
	var keep []int
	seen := map[string]bool{}
	dups := 0
	for _, k := range pass {
		text := st.samples[k].Response
		if seen[text] {
			dups++
			continue
		}
		seen[text] = true
		keep = append(keep, k)
	}
	limit := r.cfg.MaxPerPrompt
	if r.cfg.Keep == KeepBest {
		limit = 1
	}
	if limit > 0 && len(keep) > limit {
		keep = keep[:limit]
	}
	slices.Sort(keep)
	for _, k := range keep {
		s := st.samples[k]
		rec := selfRecord{ID: sampleID(p.Line, k), Prompt: p.Prompt, Response: s.Response, Finish: s.Finish, Score: st.verdicts[k].Score, Sample: k}
		if p.chat {
			rec.Messages = append(slices.Clone(p.Messages), Message{Role: "assistant", Content: s.Response})
		}
		st.kept = append(st.kept, rec)
	}
	if !st.resumed || !r.out.have[fmt.Sprintf("p%d", p.Line)] {
		r.sum.Passed += len(pass)
		r.sum.Duplicates += dups
		if len(keep) > 0 {
			r.sum.Solved++
		}
	}
}

// flush writes the finished prompts at the head of the order, each
// prompt's kept answers in one write.
func (r *selfRun) flush() error {
	for r.next < len(r.states) && r.states[r.next].done {
		st := r.states[r.next]
		if len(st.kept) > 0 {
			g := group{}
			for _, rec := range st.kept {
				g.ids = append(g.ids, rec.ID)
				g.recs = append(g.recs, rec)
			}
			wrote, err := r.out.writeGroup(fmt.Sprintf("p%d", r.prompts[r.next].Line), g.ids, g.recs)
			if err != nil {
				return fmt.Errorf("self: writing the output: %w", err)
			}
			if wrote {
				r.sum.Kept += len(st.kept)
			}
		}
		st.kept = nil
		r.next++
	}
	return nil
}

// readSelfPrompts reads the prompt file: prompt or messages, and what the
// judge needs, per record.
func readSelfPrompts(cfg SelfConfig) ([]SelfPrompt, int, error) {
	var out []SelfPrompt
	bad := 0
	err := data.ForEachRecord(cfg.Prompts, 256<<20, func(rec []byte, at data.LineError, err error) error {
		var p SelfPrompt
		if err == nil {
			var pl promptLine
			if pl, err = parsePrompt(string(rec), cfg.PromptField); err == nil {
				var obj map[string]json.RawMessage
				_ = json.Unmarshal(rec, &obj) // parsePrompt read it
				p = SelfPrompt{Line: at.Line, Prompt: pl.prompt, Messages: pl.messages, chat: pl.messages != nil || cfg.System != ""}
				p.Ref, err = cfg.Judge.Read(obj)
			}
		}
		if err != nil {
			if err := skipRecord(cfg.Log, at, err, cfg.StrictInput); err != nil {
				return err
			}
			bad++
			return nil
		}
		if p.Messages == nil {
			p.Messages = []Message{{Role: "user", Content: p.Prompt}}
		}
		if cfg.System != "" && p.Messages[0].Role != "system" {
			p.Messages = append([]Message{{Role: "system", Content: cfg.System}}, p.Messages...)
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		return nil, bad, err
	}
	if len(out) == 0 {
		return nil, bad, fmt.Errorf("self: %s has no usable prompt", cfg.Prompts)
	}
	return out, bad, nil
}

// readJournal puts the journal's answers and judgements into the states.
// An answer made for another prompt text, or a line that is neither, is an
// error: the journal belongs to another run.
func readJournal(cfg SelfConfig, j *resumable, prompts []SelfPrompt, byLine map[int]int, states []*promptState) error {
	for n, rec := range j.recs {
		id, _ := rec["id"].(string)
		sid, judged := strings.CutSuffix(id, ".j")
		line, k, ok := parseSampleID(sid)
		if !ok {
			return fmt.Errorf("self: journal %s record %d has id %q, not an answer's: not a journal this command wrote; give another --journal", cfg.Journal, n+1, id)
		}
		i, ok := byLine[line]
		if !ok || k >= cfg.N {
			continue // a prompt now skipped, or a larger N before
		}
		b, _ := json.Marshal(rec)
		if judged {
			var v judgedLine
			if err := json.Unmarshal(b, &v); err != nil {
				return fmt.Errorf("self: journal %s record %d (%s): %v", cfg.Journal, n+1, id, err)
			}
			states[i].verdicts[k] = &Verdict{Score: v.Score, Pass: v.Pass, Note: v.Note}
			continue
		}
		var s sampleLine
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("self: journal %s record %d (%s): %v", cfg.Journal, n+1, id, err)
		}
		if s.Prompt != prompts[i].Prompt {
			return fmt.Errorf("self: journal %s holds %s for the prompt %q, but line %d of %s is now %q: the journal is another run's; give another --output (or --journal)",
				cfg.Journal, id, clipText(s.Prompt), line, cfg.Prompts, clipText(prompts[i].Prompt))
		}
		states[i].samples[k] = &Sampled{Response: s.Response, Finish: s.Finish, Tokens: s.Tokens}
	}
	// A judgement without its answer (cannot happen unless edited) is
	// dropped, and the answer made again.
	for _, st := range states {
		for k := range st.verdicts {
			if st.samples[k] == nil {
				st.verdicts[k] = nil
			}
		}
	}
	return nil
}

// parseSampleID reads "p<line>.s<k>".
func parseSampleID(id string) (line, k int, ok bool) {
	a, b, found := strings.Cut(id, ".s")
	if !found || !strings.HasPrefix(a, "p") {
		return 0, 0, false
	}
	line, err1 := strconv.Atoi(a[1:])
	k, err2 := strconv.Atoi(b)
	return line, k, err1 == nil && err2 == nil && k >= 0
}

func clipText(s string) string {
	if r := []rune(s); len(r) > 60 {
		return string(r[:60]) + "…"
	}
	return s
}
