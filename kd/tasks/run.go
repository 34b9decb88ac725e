package tasks

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/kdnative/kdnative/internal/atomicfile"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// Options say how a model is evaluated on a task.
type Options struct {
	// Template renders generate prompts: "auto" (the model's chat template
	// when it has one, else plain text), "chatml", "qwen3" or "none".
	// Choice and perplexity examples are always plain text, as in the
	// harness.
	Template string
	// BatchSize is the rows per forward pass or generation batch (default 8).
	BatchSize int
	// MaxLen caps the tokens a choice or perplexity input may have (default
	// and maximum: the model's positions).
	MaxLen int
	// MaxExamples, when > 0, evaluates only the task's first examples.
	MaxExamples int
	// Seed drives sampling (sample i of the task draws with Seed + i) and
	// the bootstrap.
	Seed uint64
	// Bootstrap is the resamples per bootstrap interval (default 2000).
	Bootstrap int
	// Judge scores examples with score "judge" (required when there are).
	Judge *Judge
	// Log receives progress; Terminal redraws it in place.
	Log      io.Writer
	Terminal bool
	// Label names the model in progress lines.
	Label string
}

// Metric is one number with its 95% confidence interval.
type Metric struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Lo    float64 `json:"ci_lo"`
	Hi    float64 `json:"ci_hi"`
	// Interval is how it was computed: "wilson" or "bootstrap".
	Interval string `json:"interval"`
	// N is the examples it is over.
	N int `json:"n"`
	// LowerIsBetter marks perplexities and bits.
	LowerIsBetter bool `json:"lower_is_better,omitempty"`
	// Unscored examples (a judge that failed) are not in N.
	Unscored int `json:"unscored,omitempty"`
}

// MarshalJSON writes a value that is not a number (a judged metric with
// every example unscored) as null, which JSON can hold.
func (m Metric) MarshalJSON() ([]byte, error) {
	type plain Metric
	type nullable struct {
		plain
		Value *float64 `json:"value"`
		Lo    *float64 `json:"ci_lo"`
		Hi    *float64 `json:"ci_hi"`
	}
	num := func(v float64) *float64 {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil
		}
		return &v
	}
	return json.Marshal(nullable{plain(m), num(m.Value), num(m.Lo), num(m.Hi)})
}

// Result is one model on one task.
type Result struct {
	Task     string   `json:"task"`
	File     string   `json:"file"`
	Model    string   `json:"model"`
	Examples int      `json:"examples"`
	Metrics  []Metric `json:"metrics"`
	// Notes say what was changed to fit the model (prompts cut).
	Notes []string `json:"notes,omitempty"`
	// Records are the per-example outputs, in file order.
	Records []map[string]any `json:"-"`
}

// Metric returns the named metric, or nil.
func (r *Result) Metric(name string) *Metric {
	for i := range r.Metrics {
		if r.Metrics[i].Name == name {
			return &r.Metrics[i]
		}
	}
	return nil
}

// NeedsJudge reports the first example that is scored by a judge.
func (t *Task) NeedsJudge() *Example {
	for _, ex := range t.Examples {
		if ex.Kind == KindGenerate && ex.Score == ScoreJudge {
			return ex
		}
	}
	return nil
}

// Evaluate runs one model on one task and scores it.
func Evaluate(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, t *Task, opt Options) (*Result, error) {
	if opt.BatchSize <= 0 {
		opt.BatchSize = 8
	}
	exs := t.Examples
	if opt.MaxExamples > 0 && opt.MaxExamples < len(exs) {
		exs = exs[:opt.MaxExamples]
	}
	if ex := (&Task{Examples: exs}).NeedsJudge(); ex != nil && opt.Judge == nil {
		return nil, fmt.Errorf("%s:%d is scored by a judge: give a judge endpoint (--judge-endpoint, --judge-model)", t.Path, ex.Line)
	}
	res := &Result{Task: t.Name, File: t.Path, Model: opt.Label, Examples: len(exs), Records: make([]map[string]any, len(exs))}
	at := map[*Example]int{}
	byKind := map[string][]*Example{}
	for i, ex := range exs {
		at[ex] = i
		byKind[ex.Kind] = append(byKind[ex.Kind], ex)
	}
	what := t.Name
	if opt.Label != "" {
		what += " × " + opt.Label
	}
	if g := byKind[KindGenerate]; len(g) > 0 {
		if err := evalGenerate(ctx, m, tok, g, at, res, opt, what); err != nil {
			return nil, fmt.Errorf("%s: %w", t.Path, err)
		}
	}
	if c := byKind[KindChoice]; len(c) > 0 {
		if err := evalChoice(ctx, m, tok, c, at, res, opt, what); err != nil {
			return nil, fmt.Errorf("%s: %w", t.Path, err)
		}
	}
	if p := byKind[KindPerplexity]; len(p) > 0 {
		if err := evalPerplexity(ctx, m, tok, p, at, res, opt, what); err != nil {
			return nil, fmt.Errorf("%s: %w", t.Path, err)
		}
	}
	return res, nil
}

func record(ex *Example) map[string]any {
	return map[string]any{"id": ex.ID, "line": ex.Line, "kind": ex.Kind}
}

// proportion is a metric over 0/1 outcomes, with the Wilson interval.
func proportion(name string, hits []float64) Metric {
	var s float64
	for _, h := range hits {
		s += h
	}
	lo, hi := Wilson(s, len(hits))
	return Metric{Name: name, Value: s / float64(len(hits)), Lo: lo, Hi: hi, Interval: "wilson", N: len(hits)}
}

// mean is a metric over per-example values, with a bootstrap interval.
func mean(name string, xs []float64, opt Options) Metric {
	var s float64
	for _, x := range xs {
		s += x
	}
	lo, hi := BootstrapMean(xs, opt.Bootstrap, opt.Seed)
	return Metric{Name: name, Value: s / float64(len(xs)), Lo: lo, Hi: hi, Interval: "bootstrap", N: len(xs)}
}

func evalGenerate(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, exs []*Example, at map[*Example]int, res *Result, opt Options, what string) error {
	template := opt.Template
	if template == "" {
		template = "auto"
	}
	g, err := newGenerator(m, tok, template, opt.BatchSize, opt.Seed)
	if err != nil {
		return err
	}
	rows, err := g.rows(exs)
	if err != nil {
		return err
	}
	p := newProgress(opt.Log, opt.Terminal, what, "samples", len(rows))
	samples, err := g.generate(ctx, rows, p.add)
	p.end()
	if err != nil {
		return err
	}
	if g.truncated > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d prompts were cut to their last tokens to leave room for the answer in the model's %d positions", g.truncated, m.Config.MaxPositions))
	}
	if g.clamped > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d examples ask for more tokens than the model's %d positions: answers were cut to %d tokens", g.clamped, m.Config.MaxPositions, m.Config.MaxPositions/2))
	}
	var judged []int
	for i, r := range rows {
		if r.ex.Score == ScoreJudge {
			judged = append(judged, i)
			continue
		}
		j := r.ex.Check(samples[i].Output)
		samples[i].Extracted, samples[i].Found, samples[i].Correct = j.Extracted, j.Found, j.Correct
	}
	if len(judged) > 0 {
		jrows, jsamples := make([]genRow, len(judged)), make([]Sample, len(judged))
		for k, i := range judged {
			jrows[k], jsamples[k] = rows[i], samples[i]
		}
		jp := newProgress(opt.Log, opt.Terminal, what+" (judge)", "answers", len(jrows))
		err := opt.Judge.judgeAll(ctx, jrows, jsamples, jp.add)
		jp.end()
		if err != nil {
			return err
		}
		for k, i := range judged {
			samples[i] = jsamples[k]
		}
	}
	// Per example: its samples, correct count and pass@k.
	type outcome struct {
		n, c     int
		score    float64 // judged: the mean score of its scored samples
		scored   int
		unscored string
	}
	outs := map[*Example]*outcome{}
	bySample := map[*Example][]Sample{}
	for i, r := range rows {
		o := outs[r.ex]
		if o == nil {
			o = &outcome{}
			outs[r.ex] = o
		}
		s := samples[i]
		bySample[r.ex] = append(bySample[r.ex], s)
		o.n++
		if s.Correct {
			o.c++
		}
		if s.Score != nil {
			o.score += *s.Score
			o.scored++
		} else if s.Unscored != "" {
			o.unscored = s.Unscored
		}
	}
	passK := map[int][]float64{}
	var hits, judgeScores []float64
	allSingle, judgeBinary, unscored := true, true, 0
	for _, ex := range exs {
		o := outs[ex]
		rec := record(ex)
		if ex.Prompt != nil {
			rec["prompt"] = *ex.Prompt
		} else {
			rec["messages"] = ex.Messages
		}
		if ex.Answers != nil {
			rec["answer"] = ex.Answers
		}
		rec["samples"] = bySample[ex]
		if ex.Score == ScoreJudge {
			if o.scored == 0 {
				unscored++
				rec["unscored"] = o.unscored
			} else {
				sc := o.score / float64(o.scored)
				rec["score"] = sc
				judgeScores = append(judgeScores, sc)
				judgeBinary = judgeBinary && ex.MaxScore == 1 && ex.N == 1
			}
		} else {
			rec["correct"], rec["n"] = o.c, o.n
			pk := map[string]float64{}
			for _, k := range ex.PassAt {
				v := PassAtK(o.n, o.c, k)
				pk[fmt.Sprintf("pass@%d", k)] = v
				passK[k] = append(passK[k], v)
			}
			rec["pass_at"] = pk
			if ex.N > 1 {
				allSingle = false
			}
			hits = append(hits, float64(o.c)/float64(o.n))
		}
		res.Records[at[ex]] = rec
	}
	if len(hits) > 0 {
		if allSingle {
			res.Metrics = append(res.Metrics, proportion("accuracy", hits))
		} else {
			ks := make([]int, 0, len(passK))
			for k := range passK {
				ks = append(ks, k)
			}
			sort.Ints(ks)
			for _, k := range ks {
				res.Metrics = append(res.Metrics, mean(fmt.Sprintf("pass@%d", k), passK[k], opt))
			}
		}
	}
	if len(judgeScores) > 0 || unscored > 0 {
		var mt Metric
		switch {
		case len(judgeScores) == 0:
			mt = Metric{Name: "judge_score", Value: math.NaN(), Lo: math.NaN(), Hi: math.NaN()}
		case judgeBinary:
			mt = proportion("judge_score", judgeScores)
		default:
			mt = mean("judge_score", judgeScores, opt)
		}
		mt.Unscored = unscored
		res.Metrics = append(res.Metrics, mt)
	}
	return nil
}

func evalChoice(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, exs []*Example, at map[*Example]int, res *Result, opt Options, what string) error {
	s := newScorer(m, tok, opt.MaxLen, opt.BatchSize)
	var reqs []lmRequest
	for _, ex := range exs {
		for i, c := range ex.Choices {
			r, err := s.encodePair(ex.Context, ex.Delimiter+c)
			if err != nil {
				return fmt.Errorf("line %d, choices[%d]: %w", ex.Line, i, err)
			}
			reqs = append(reqs, r)
		}
	}
	p := newProgress(opt.Log, opt.Terminal, what, "choices", len(reqs))
	lls, err := s.loglikelihoods(ctx, reqs, p.add)
	p.end()
	if err != nil {
		return err
	}
	var acc, accNorm []float64
	k := 0
	for _, ex := range exs {
		ll := lls[k : k+len(ex.Choices)]
		k += len(ex.Choices)
		pred, predNorm := argmax(ll, func(i int) float64 { return 1 }), argmax(ll, func(i int) float64 {
			// acc_norm divides by the choice's length in characters
			// (Python's len of the choice, without the delimiter).
			return float64(utf8.RuneCountInString(ex.Choices[i]))
		})
		a, an := b2f(pred == ex.Gold), b2f(predNorm == ex.Gold)
		acc, accNorm = append(acc, a), append(accNorm, an)
		rec := record(ex)
		rec["context"], rec["choices"], rec["answer"] = ex.Context, ex.Choices, ex.Gold
		rec["loglikelihoods"], rec["pred"], rec["pred_norm"], rec["acc"], rec["acc_norm"] = slices.Clone(ll), pred, predNorm, a, an
		res.Records[at[ex]] = rec
	}
	res.Metrics = append(res.Metrics, proportion("acc", acc), proportion("acc_norm", accNorm))
	return nil
}

// argmax is numpy's argmax of ll[i]/div(i): the first maximum.
func argmax(ll []float64, div func(int) float64) int {
	best := 0
	for i := range ll {
		if ll[i]/div(i) > ll[best]/div(best) {
			best = i
		}
	}
	return best
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var reWords = regexp.MustCompile(`\s+`)

func evalPerplexity(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, exs []*Example, at map[*Example]int, res *Result, opt Options, what string) error {
	s := newScorer(m, tok, opt.MaxLen, opt.BatchSize)
	if !s.hasPrefix {
		return errors.New("perplexity needs a BOS or EOS token to condition the first token on, and the tokenizer has neither")
	}
	var reqs []lmRequest
	owner := []int{}
	toks := make([]int, len(exs))
	for i, ex := range exs {
		// The text alone, no BOS: the harness's tok_encode would add one
		// where the tokenizer does and then score it too.
		ids := tok.Encode(ex.Text)
		if len(ids) == 0 {
			return fmt.Errorf("line %d: the text has no tokens", ex.Line)
		}
		toks[i] = len(ids)
		for _, w := range rollingWindows(ids, s.prefix, s.maxLen) {
			reqs = append(reqs, w)
			owner = append(owner, i)
		}
	}
	p := newProgress(opt.Log, opt.Terminal, what, "windows", len(reqs))
	lls, err := s.loglikelihoods(ctx, reqs, p.add)
	p.end()
	if err != nil {
		return err
	}
	ll := make([]float64, len(exs))
	for k, i := range owner {
		ll[i] += lls[k]
	}
	nbytes, words := make([]float64, len(exs)), make([]float64, len(exs))
	for i, ex := range exs {
		nbytes[i] = float64(len(ex.Text))
		words[i] = float64(len(reWords.Split(ex.Text, -1))) // the harness's len(re.split(r"\s+", text))
		rec := record(ex)
		rec["loglikelihood"], rec["tokens"], rec["bytes"], rec["words"] = ll[i], toks[i], int(nbytes[i]), int(words[i])
		rec["bits_per_byte"] = -ll[i] / nbytes[i] / math.Ln2
		res.Records[at[ex]] = rec
	}
	tokf := make([]float64, len(exs))
	for i, t := range toks {
		tokf[i] = float64(t)
	}
	ratio := func(name string, den []float64, f func(float64) float64) Metric {
		stat := func(idx []int) float64 {
			var a, b float64
			for _, i := range idx {
				a, b = a+ll[i], b+den[i]
			}
			return f(-a / b)
		}
		all := make([]int, len(exs))
		for i := range all {
			all[i] = i
		}
		lo, hi := Bootstrap(len(exs), opt.Bootstrap, opt.Seed, stat)
		return Metric{Name: name, Value: stat(all), Lo: lo, Hi: hi, Interval: "bootstrap", N: len(exs), LowerIsBetter: true}
	}
	bits := func(x float64) float64 { return x / math.Ln2 }
	res.Metrics = append(res.Metrics, ratio("bits_per_byte", nbytes, bits), ratio("bits_per_token", tokf, bits),
		ratio("word_perplexity", words, math.Exp))
	return nil
}

// Config is what `kdnative eval --task` was asked.
type Config struct {
	Tasks  []string
	Models []string
	// Tokenizer is the folder of the tokenizer for models whose folder has
	// none.
	Tokenizer string
	// Output, when set, is a folder for results.json and the per-example
	// outputs, <task>/<model>.jsonl.
	Output string
	// Precision is auto (the backend's default), bf16, fp32 or tf32: how the
	// models are stored and multiplied (runtime.UsePrecision).
	Precision string
	Options
}

// Report is every model's results on every task.
type Report struct {
	Models  []string  `json:"models"`
	Labels  []string  `json:"labels"`
	Results []*Result `json:"results"`
}

// Run checks every task file, then evaluates each model on each task,
// prints one table (a row per task and metric, a column per model) on
// c.Log, and writes the outputs.
func Run(ctx context.Context, be kdrt.Backend, c Config, out io.Writer) (*Report, error) {
	if len(c.Tasks) == 0 || len(c.Models) == 0 {
		return nil, errors.New("eval: give at least one --task and one --model")
	}
	var tasks []*Task
	names := map[string]string{}
	for _, path := range c.Tasks {
		t, err := Load(path)
		if err != nil {
			return nil, err
		}
		if prev, ok := names[t.Name]; ok {
			return nil, fmt.Errorf("tasks %s and %s are both named %q: rename one (the header's \"task\")", prev, path, t.Name)
		}
		names[t.Name] = path
		if ex := t.NeedsJudge(); ex != nil && c.Judge == nil {
			return nil, fmt.Errorf("%s:%d is scored by a judge: give a judge endpoint (--judge-endpoint, --judge-model)", path, ex.Line)
		}
		tasks = append(tasks, t)
	}
	seen := map[string]bool{}
	for _, m := range c.Models {
		if seen[filepath.Clean(m)] {
			return nil, fmt.Errorf("eval: model %s is given twice", m)
		}
		seen[filepath.Clean(m)] = true
	}
	labels := modelLabels(c.Models)
	rep := &Report{Models: c.Models, Labels: labels}
	for mi, dir := range c.Models {
		m, tok, err := loadModel(be, dir, c.Tokenizer, c.Precision)
		if err != nil {
			return nil, err
		}
		for _, t := range tasks {
			opt := c.Options
			opt.Label = labels[mi]
			r, err := Evaluate(ctx, m, tok, t, opt)
			if err != nil {
				return nil, err
			}
			r.Model = dir
			rep.Results = append(rep.Results, r)
			if c.Output != "" {
				if err := writeRecords(filepath.Join(c.Output, safeName(t.Name), safeName(labels[mi])+".jsonl"), r.Records); err != nil {
					return nil, err
				}
			}
		}
	}
	rep.Print(out)
	if c.Output != "" {
		js, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return nil, err
		}
		err = writeAtomic(filepath.Join(c.Output, "results.json"), func(w io.Writer) error {
			_, err := w.Write(append(js, '\n'))
			return err
		})
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(out, "per-example outputs and results.json are in %s\n", c.Output)
	}
	return rep, nil
}

// loadModel loads a model folder and its tokenizer (or the fallback one).
func loadModel(be kdrt.Backend, dir, fallbackTok, precision string) (*model.Model, *tokenizer.Tokenizer, error) {
	prec, err := kdrt.UsePrecision(be, precision)
	if err != nil {
		return nil, nil, err
	}
	m, err := model.LoadDir(dir, be, model.ForPrecision(prec, false)...)
	if err != nil {
		return nil, nil, err
	}
	tok, err := tokenizer.LoadDir(dir)
	if err != nil && fallbackTok != "" {
		if _, statErr := os.Stat(filepath.Join(dir, "tokenizer.json")); os.IsNotExist(statErr) {
			tok, err = tokenizer.LoadDir(fallbackTok)
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w (a model folder without a tokenizer needs --tokenizer DIR)", err)
	}
	if tok.VocabSize() > m.Config.Vocab {
		return nil, nil, fmt.Errorf("the tokenizer of %s has %d tokens but the model's vocabulary is %d", dir, tok.VocabSize(), m.Config.Vocab)
	}
	return m, tok, nil
}

// modelLabels names each model by the shortest tail of its path that no
// other model's path ends with.
func modelLabels(dirs []string) []string {
	parts := make([][]string, len(dirs))
	for i, d := range dirs {
		parts[i] = strings.Split(filepath.ToSlash(filepath.Clean(d)), "/")
	}
	tail := func(p []string, n int) string { return strings.Join(p[max(0, len(p)-n):], "/") }
	labels := make([]string, len(dirs))
	for i, p := range parts {
		for n := 1; n <= len(p); n++ {
			labels[i] = tail(p, n)
			clash := false
			for j, q := range parts {
				if j != i && tail(q, n) == labels[i] {
					clash = true
				}
			}
			if !clash {
				break
			}
		}
	}
	return labels
}

var reUnsafe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func safeName(s string) string { return strings.Trim(reUnsafe.ReplaceAllString(s, "_"), "_") }

// writeRecords writes recs as JSONL, one record a line.
func writeRecords(path string, recs []map[string]any) error {
	return writeAtomic(path, func(w io.Writer) error {
		bw := bufio.NewWriter(w)
		for _, r := range recs {
			js, err := json.Marshal(r)
			if err != nil {
				return err
			}
			bw.Write(js)
			bw.WriteByte('\n')
		}
		return bw.Flush()
	})
}

// writeAtomic makes path's folder and writes path through
// internal/atomicfile, so a run cut short leaves no half-written output.
func writeAtomic(path string, fill func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := atomicfile.Write(path, fill); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// Print writes the table: a row per task and metric, a column per model,
// each cell the value and its 95% interval.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "task\tmetric")
	for _, l := range r.Labels {
		fmt.Fprintf(tw, "\t%s", l)
	}
	fmt.Fprintln(tw)
	type key struct{ task, metric string }
	var rows []key
	cells := map[key]map[string]*Metric{}
	count := map[string]int{}
	for _, res := range r.Results {
		count[res.Task] = res.Examples
		for i := range res.Metrics {
			k := key{res.Task, res.Metrics[i].Name}
			if cells[k] == nil {
				cells[k] = map[string]*Metric{}
				rows = append(rows, k)
			}
			cells[k][res.Model] = &res.Metrics[i]
		}
	}
	last := ""
	for _, k := range rows {
		name := ""
		if k.task != last {
			name = fmt.Sprintf("%s (%d)", k.task, count[k.task])
			last = k.task
		}
		fmt.Fprintf(tw, "%s\t%s", name, k.metric)
		for _, mdl := range r.Models {
			fmt.Fprintf(tw, "\t%s", cells[k][mdl].cell())
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	label := map[string]string{}
	for i, m := range r.Models {
		label[m] = r.Labels[i]
	}
	for _, res := range r.Results {
		for _, n := range res.Notes {
			fmt.Fprintf(w, "note: %s × %s: %s\n", res.Task, label[res.Model], n)
		}
		for _, mt := range res.Metrics {
			if mt.Unscored > 0 {
				fmt.Fprintf(w, "warning: %s × %s: %d examples unscored (the judge failed; see the per-example outputs); %s is over the other %d\n",
					res.Task, label[res.Model], mt.Unscored, mt.Name, mt.N)
			}
		}
	}
}

func (m *Metric) cell() string {
	if m == nil {
		return "—"
	}
	if m.N == 0 {
		return fmt.Sprintf("— (%d unscored)", m.Unscored)
	}
	s := fmt.Sprintf("%s [%s, %s]", num(m.Value), num(m.Lo), num(m.Hi))
	if m.Unscored > 0 {
		s += fmt.Sprintf(" (%d unscored)", m.Unscored)
	}
	return s
}

// num prints 3 decimals for values up to 10, 4 significant digits above.
func num(v float64) string {
	if math.Abs(v) < 10 {
		return fmt.Sprintf("%.3f", v)
	}
	return fmt.Sprintf("%.4g", v)
}
