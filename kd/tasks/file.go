package tasks

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/tasks/answer"
)

// The kinds of example.
const (
	KindGenerate   = "generate"
	KindChoice     = "choice"
	KindPerplexity = "perplexity"
)

// The ways a generation is scored: the answer package's matches, or a judge.
const (
	ScoreExact    = answer.MatchExact
	ScoreNumeric  = answer.MatchNumeric
	ScoreContains = answer.MatchContains
	ScoreJudge    = "judge"
)

// Task is a parsed task file.
type Task struct {
	// Path is the file; Name is the header's "task" or the file's base name
	// without extension.
	Path, Name  string
	Description string
	Examples    []*Example
}

// Example is one line of a task file, defaults applied and checked.
type Example struct {
	ID   string
	Line int
	Kind string

	// generate
	Prompt    *string
	Messages  []data.Message
	Answers   []string  // references ("answer": a string, number or list)
	Numbers   []float64 // Answers as numbers (score numeric)
	Score     string
	Extract   string // preset name or regular expression ("" none)
	extractRe *regexp.Regexp
	// ExtractLast takes the last match of an extract regex (default: first).
	ExtractLast  bool
	Normalize    string // text, math or none
	Tolerance    float64
	RelTolerance float64
	N            int
	PassAt       []int
	Temperature  float64
	TopP         float64
	TopK         int
	MaxTokens    int
	Stop         []string
	Rubric       string
	MaxScore     int // the judge's scale is 0…MaxScore

	// choice
	Context   string
	Choices   []string
	Gold      int
	Delimiter string

	// perplexity
	Text string
}

// fields lists each kind's keys (besides id and kind); anything else is an
// error, so a misspelt key cannot silently fall back to a default.
var fields = map[string][]string{
	KindGenerate: {"prompt", "messages", "answer", "score", "extract", "extract_match", "normalize", "tolerance",
		"rel_tolerance", "n", "pass_at", "temperature", "top_p", "top_k", "max_tokens", "stop", "rubric", "max_score"},
	KindChoice:     {"context", "choices", "answer", "delimiter"},
	KindPerplexity: {"text"},
}

// Default generation settings.
const (
	DefaultMaxTokens = 256
	defaultTolerance = 1e-6
)

// LineError is a bad line of a task file.
type LineError struct {
	File   string
	Line   int
	Reason string
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason) }

// Load reads and checks a task file. Every line is checked before it returns:
// the first bad one is the error, naming the file and line.
func Load(path string) (*Task, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	base := filepath.Base(path)
	t := &Task{Path: path, Name: strings.TrimSuffix(base, filepath.Ext(base))}
	var defaults map[string]json.RawMessage
	ids := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	first := true
	n := 1
	for ; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if n == 1 {
			line = bytes.TrimPrefix(line, []byte("\ufeff"))
		}
		if len(line) == 0 {
			continue
		}
		bad := func(format string, a ...any) error {
			return &LineError{File: path, Line: n, Reason: fmt.Sprintf(format, a...)}
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(line, &obj); err != nil || obj == nil {
			return nil, bad("not a JSON object (%s)", jsonReason(err))
		}
		if first {
			first = false
			if _, ok := obj["task"]; ok {
				if defaults, err = parseHeader(t, obj); err != nil {
					return nil, bad("%v", err)
				}
				continue
			}
		}
		mergeDefaults(obj, defaults)
		ex, err := parseExample(obj)
		if err != nil {
			return nil, bad("%v", err)
		}
		ex.Line = n
		if ex.ID == "" {
			ex.ID = "line-" + strconv.Itoa(n)
		}
		if prev, ok := ids[ex.ID]; ok {
			return nil, bad("id %q is already used on line %d", ex.ID, prev)
		}
		ids[ex.ID] = n
		t.Examples = append(t.Examples, ex)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%s:%d: a line is longer than 64 MiB", path, n)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(t.Examples) == 0 {
		return nil, fmt.Errorf("%s: no examples", path)
	}
	return t, nil
}

func jsonReason(err error) string {
	if err == nil {
		return "null"
	}
	return err.Error()
}

func parseHeader(t *Task, obj map[string]json.RawMessage) (map[string]json.RawMessage, error) {
	for k := range obj {
		if k != "task" && k != "description" && k != "defaults" {
			return nil, fmt.Errorf("header line: unknown field %q (a header has task, description and defaults)", k)
		}
	}
	if err := json.Unmarshal(obj["task"], &t.Name); err != nil || strings.TrimSpace(t.Name) == "" {
		return nil, errors.New(`header line: "task" must be a non-empty string (the task's name)`)
	}
	if raw, ok := obj["description"]; ok {
		if err := json.Unmarshal(raw, &t.Description); err != nil {
			return nil, errors.New(`header line: "description" must be a string`)
		}
	}
	var defaults map[string]json.RawMessage
	if raw, ok := obj["defaults"]; ok {
		if err := json.Unmarshal(raw, &defaults); err != nil || defaults == nil {
			return nil, errors.New(`header line: "defaults" must be an object of example fields`)
		}
		for k := range defaults {
			if k == "id" {
				return nil, errors.New(`header line: "defaults" cannot set "id" (ids are per example)`)
			}
			if k != "kind" && !slices.Contains(fields[KindGenerate], k) && !slices.Contains(fields[KindChoice], k) && !slices.Contains(fields[KindPerplexity], k) {
				return nil, fmt.Errorf("header line: unknown field %q in \"defaults\" (not a field of any kind)", k)
			}
		}
	}
	return defaults, nil
}

// mergeDefaults fills in obj's missing fields from the header's defaults:
// the kind, then the fields that the example's kind has (a default for
// another kind's field does not apply to it).
func mergeDefaults(obj, defaults map[string]json.RawMessage) {
	if _, ok := obj["kind"]; !ok {
		if k, ok := defaults["kind"]; ok {
			obj["kind"] = k
		}
	}
	var kind string
	if json.Unmarshal(obj["kind"], &kind) != nil {
		return
	}
	for k, v := range defaults {
		if _, ok := obj[k]; !ok && slices.Contains(fields[kind], k) {
			obj[k] = v
		}
	}
}

// parseExample checks one example object (defaults already merged in).
func parseExample(obj map[string]json.RawMessage) (*Example, error) {
	ex := &Example{}
	if raw, ok := obj["id"]; ok {
		var num json.Number
		if err := json.Unmarshal(raw, &ex.ID); err != nil {
			if json.Unmarshal(raw, &num) != nil {
				return nil, errors.New(`"id" must be a string or a number`)
			}
			ex.ID = num.String()
		}
	}
	raw, ok := obj["kind"]
	if !ok {
		return nil, fmt.Errorf(`missing "kind" (want %s, %s or %s)`, KindGenerate, KindChoice, KindPerplexity)
	}
	if err := json.Unmarshal(raw, &ex.Kind); err != nil {
		return nil, errors.New(`"kind" must be a string`)
	}
	allowed, ok := fields[ex.Kind]
	if !ok {
		return nil, fmt.Errorf("unknown kind %q (want %s, %s or %s)", ex.Kind, KindGenerate, KindChoice, KindPerplexity)
	}
	var unknown []string
	for k := range obj {
		if k != "id" && k != "kind" && !slices.Contains(allowed, k) {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("unknown field %s for kind %s (its fields: %s)", strings.Join(unknown, ", "), ex.Kind, strings.Join(allowed, ", "))
	}
	p := &parser{obj: obj}
	switch ex.Kind {
	case KindGenerate:
		return ex, p.generate(ex)
	case KindChoice:
		return ex, p.choice(ex)
	default:
		ex.Text = p.str("text", true, "")
		if p.err == nil && ex.Text == "" {
			p.fail(`"text" is empty`)
		}
		return ex, p.err
	}
}

// parser reads typed fields, keeping the first error.
type parser struct {
	obj map[string]json.RawMessage
	err error
}

func (p *parser) fail(format string, a ...any) {
	if p.err == nil {
		p.err = fmt.Errorf(format, a...)
	}
}

func (p *parser) has(k string) bool { _, ok := p.obj[k]; return ok }

func (p *parser) str(k string, required bool, def string) string {
	raw, ok := p.obj[k]
	if !ok {
		if required {
			p.fail("missing %q", k)
		}
		return def
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		p.fail("%q must be a string", k)
	}
	return s
}

func (p *parser) num(k string, def float64) float64 {
	raw, ok := p.obj[k]
	if !ok {
		return def
	}
	var v float64
	if err := json.Unmarshal(raw, &v); err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		p.fail("%q must be a number", k)
	}
	return v
}

func (p *parser) int(k string, def int) int {
	raw, ok := p.obj[k]
	if !ok {
		return def
	}
	var v int
	if err := json.Unmarshal(raw, &v); err != nil {
		p.fail("%q must be an integer", k)
	}
	return v
}

func (p *parser) strings(k string) []string {
	raw, ok := p.obj[k]
	if !ok {
		return nil
	}
	var v []string
	if err := json.Unmarshal(raw, &v); err != nil {
		p.fail("%q must be a list of strings", k)
	}
	return v
}

// answers reads "answer": a string, a number, or a list of them.
func (p *parser) answers() []string {
	raw := p.obj["answer"]
	one := func(r json.RawMessage) (string, bool) {
		var s string
		if json.Unmarshal(r, &s) == nil {
			return s, true
		}
		var n json.Number
		if json.Unmarshal(r, &n) == nil {
			return n.String(), true
		}
		return "", false
	}
	if s, ok := one(raw); ok {
		return []string{s}
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) == nil && len(list) > 0 {
		var out []string
		for _, r := range list {
			s, ok := one(r)
			if !ok {
				p.fail(`"answer" must be a string, a number or a list of them`)
				return nil
			}
			out = append(out, s)
		}
		return out
	}
	p.fail(`"answer" must be a string, a number or a non-empty list of them`)
	return nil
}

func (p *parser) generate(ex *Example) error {
	switch {
	case p.has("prompt") && p.has("messages"):
		p.fail(`give "prompt" or "messages", not both`)
	case p.has("prompt"):
		s := p.str("prompt", true, "")
		ex.Prompt = &s
		if p.err == nil && s == "" {
			p.fail(`"prompt" is empty`)
		}
	case p.has("messages"):
		if err := json.Unmarshal(p.obj["messages"], &ex.Messages); err != nil || len(ex.Messages) == 0 {
			p.fail(`"messages" must be a non-empty list of {"role", "content"}`)
		}
		for i, m := range ex.Messages {
			if m.Role != "system" && m.Role != "user" && m.Role != "assistant" {
				p.fail("messages[%d]: role %q (want system, user or assistant)", i, m.Role)
			}
		}
	default:
		p.fail(`missing "prompt" (or "messages")`)
	}
	ex.Score = p.str("score", false, ScoreExact)
	switch ex.Score {
	case ScoreExact, ScoreNumeric, ScoreContains:
		if !p.has("answer") {
			p.fail(`missing "answer" (the reference that score %s compares with)`, ex.Score)
		}
	case ScoreJudge:
		ex.Rubric = p.str("rubric", true, "")
		if p.err == nil && strings.TrimSpace(ex.Rubric) == "" {
			p.fail(`"rubric" is empty`)
		}
		ex.MaxScore = p.int("max_score", 1)
		if ex.MaxScore < 1 {
			p.fail(`"max_score" %d must be ≥ 1`, ex.MaxScore)
		}
	default:
		p.fail("unknown score %q (want exact, numeric, contains or judge)", ex.Score)
	}
	if ex.Score != ScoreJudge && (p.has("rubric") || p.has("max_score")) {
		p.fail(`"rubric" and "max_score" are for score judge`)
	}
	if p.has("answer") {
		ex.Answers = p.answers()
	}
	if ex.Score == ScoreNumeric {
		for _, a := range ex.Answers {
			v, ok := answer.ParseNumber(a)
			if !ok {
				p.fail("answer %q is not a number (score numeric)", a)
			}
			ex.Numbers = append(ex.Numbers, v)
		}
	}
	ex.Extract = p.str("extract", false, "")
	if ex.Extract != "" && !answer.IsPreset(ex.Extract) {
		re, err := regexp.Compile(ex.Extract)
		if err != nil {
			p.fail(`"extract" %q is not a preset (%s) and not a valid regular expression: %v`, ex.Extract, strings.Join(answer.Presets, ", "), err)
		} else if re.NumSubexp() > 1 {
			p.fail(`"extract" %q has %d groups; use one (its text is the answer) or none (the whole match is)`, ex.Extract, re.NumSubexp())
		}
		ex.extractRe = re
	}
	switch m := p.str("extract_match", false, "first"); m {
	case "first":
	case "last":
		ex.ExtractLast = true
	default:
		p.fail(`"extract_match" %q: want first or last`, m)
	}
	if p.has("extract_match") && (ex.Extract == "" || answer.IsPreset(ex.Extract)) {
		p.fail(`"extract_match" applies to an "extract" regular expression (presets choose their own match)`)
	}
	ex.Normalize = p.str("normalize", false, answer.NormalizeText)
	if !slices.Contains([]string{answer.NormalizeText, answer.NormalizeMath, answer.NormalizeNone}, ex.Normalize) {
		p.fail("unknown normalize %q (want text, math or none)", ex.Normalize)
	}
	ex.Tolerance = p.num("tolerance", defaultTolerance)
	ex.RelTolerance = p.num("rel_tolerance", 0)
	if ex.Tolerance < 0 || ex.RelTolerance < 0 {
		p.fail(`"tolerance" and "rel_tolerance" must be ≥ 0`)
	}
	ex.N = p.int("n", 1)
	ex.Temperature = p.num("temperature", 0)
	ex.TopP = p.num("top_p", 1)
	ex.TopK = p.int("top_k", 0)
	ex.MaxTokens = p.int("max_tokens", DefaultMaxTokens)
	switch {
	case ex.N < 1:
		p.fail(`"n" %d must be ≥ 1`, ex.N)
	case ex.N > 1 && ex.Temperature == 0:
		p.fail(`"n" %d samples need a "temperature" above 0 (greedy decoding gives the same answer every time)`, ex.N)
	case ex.Temperature < 0:
		p.fail(`"temperature" %g must be ≥ 0`, ex.Temperature)
	case ex.TopP <= 0 || ex.TopP > 1:
		p.fail(`"top_p" %g must be in (0, 1]`, ex.TopP)
	case ex.TopK < 0:
		p.fail(`"top_k" %d must be ≥ 0`, ex.TopK)
	case ex.MaxTokens < 1:
		p.fail(`"max_tokens" %d must be ≥ 1`, ex.MaxTokens)
	}
	if raw, ok := p.obj["pass_at"]; ok {
		if err := json.Unmarshal(raw, &ex.PassAt); err != nil || len(ex.PassAt) == 0 {
			p.fail(`"pass_at" must be a non-empty list of integers`)
		}
		for _, k := range ex.PassAt {
			if k < 1 || k > ex.N {
				p.fail(`"pass_at" %d must be in [1, n = %d]`, k, ex.N)
			}
		}
		if ex.Score == ScoreJudge {
			p.fail(`"pass_at" is for exact, numeric and contains scoring (a judge gives scores)`)
		}
	} else {
		ex.PassAt = []int{1}
		if ex.N > 1 && ex.Score != ScoreJudge {
			ex.PassAt = append(ex.PassAt, ex.N)
		}
	}
	slices.Sort(ex.PassAt)
	ex.PassAt = slices.Compact(ex.PassAt)
	ex.Stop = p.strings("stop")
	for _, s := range ex.Stop {
		if s == "" {
			p.fail(`"stop" has an empty string`)
		}
	}
	return p.err
}

func (p *parser) choice(ex *Example) error {
	ex.Context = p.str("context", true, "")
	ex.Delimiter = p.str("delimiter", false, " ")
	raw, ok := p.obj["choices"]
	if !ok {
		p.fail(`missing "choices"`)
		return p.err
	}
	if err := json.Unmarshal(raw, &ex.Choices); err != nil || len(ex.Choices) < 2 {
		p.fail(`"choices" must be a list of two or more strings`)
		return p.err
	}
	for i, c := range ex.Choices {
		if c == "" {
			p.fail("choices[%d] is empty", i)
		}
	}
	raw, ok = p.obj["answer"]
	if !ok {
		p.fail(`missing "answer" (the index of the right choice, or its text)`)
		return p.err
	}
	var idx int
	var s string
	switch {
	case json.Unmarshal(raw, &idx) == nil:
		if idx < 0 || idx >= len(ex.Choices) {
			p.fail(`"answer" %d is not an index of "choices" (0…%d)`, idx, len(ex.Choices)-1)
		}
		ex.Gold = idx
	case json.Unmarshal(raw, &s) == nil:
		ex.Gold = slices.Index(ex.Choices, s)
		if ex.Gold < 0 {
			p.fail(`"answer" %q is not one of "choices"`, s)
		}
	default:
		p.fail(`"answer" must be the index of the right choice or its text`)
	}
	return p.err
}
