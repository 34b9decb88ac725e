package elicit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/kdnative/kdnative/kd/tasks/answer"
)

// RuleJudge keeps an answer when a rule holds: the final answer extracted
// from it equals the prompt record's reference (as kdnative eval --task
// scores a generate example: kd/tasks/answer), and/or it matches a regular
// expression. Its score is 1 or 0.
type RuleJudge struct {
	// AnswerField is the prompt record's field holding the reference: a
	// string, a number or a list of them (any one matches). "" when only
	// MustMatch is checked.
	AnswerField string
	// ReferenceExtract, when set, extracts the reference from the field as
	// Extract does from the answer (a field holding a whole solution, as
	// GSM8K's "… #### 72" does).
	ReferenceExtract string
	// Extract picks the final answer out of the response: a preset (boxed,
	// gsm8k, last_number, first_number) or a regular expression (its one
	// group, or the whole match; the first match unless ExtractLast); ""
	// takes the whole response (last_number under Match numeric).
	Extract     string
	ExtractLast bool
	// Comparison says how the extracted answer is compared with the
	// reference (exact after normalization by default, numeric, contains).
	answer.Comparison
	// MustMatch, when set, is a regular expression the extracted answer
	// must match.
	MustMatch string

	extractRe, refRe, mustRe *regexp.Regexp
}

// ruleRef is a prompt's reference for a RuleJudge.
type ruleRef struct {
	answers []string
	numbers []float64
}

// Check validates the rule and compiles its expressions.
func (j *RuleJudge) Check() error {
	if j.AnswerField == "" && j.MustMatch == "" {
		return errors.New("rule: give an answer field (a reference answer in each prompt record) or a regular expression the answer must match")
	}
	switch j.Match {
	case "", answer.MatchExact, answer.MatchNumeric, answer.MatchContains:
	default:
		return fmt.Errorf("rule: match %q: want exact, numeric or contains", j.Match)
	}
	switch j.Normalize {
	case "":
		j.Normalize = answer.NormalizeText
	case answer.NormalizeText, answer.NormalizeMath, answer.NormalizeNone:
	default:
		return fmt.Errorf("rule: normalize %q: want text, math or none", j.Normalize)
	}
	if j.Tolerance < 0 || j.RelTolerance < 0 || math.IsNaN(j.Tolerance) || math.IsNaN(j.RelTolerance) {
		return errors.New("rule: tolerances must be ≥ 0")
	}
	if j.AnswerField == "" && (j.ReferenceExtract != "" || (j.Match != "" && j.Match != answer.MatchExact)) {
		return errors.New("rule: a reference extraction or a match needs an answer field")
	}
	var err error
	if j.extractRe, err = compileExtract(j.Extract, "extract"); err != nil {
		return err
	}
	if j.ExtractLast && (j.Extract == "" || answer.IsPreset(j.Extract)) {
		return errors.New("rule: extract-last applies to an extract regular expression (presets choose their own match)")
	}
	if j.refRe, err = compileExtract(j.ReferenceExtract, "reference extract"); err != nil {
		return err
	}
	if j.MustMatch != "" {
		if j.mustRe, err = regexp.Compile(j.MustMatch); err != nil {
			return fmt.Errorf("rule: must-match %q is not a regular expression: %v", j.MustMatch, err)
		}
	}
	return nil
}

// compileExtract compiles an extract option that is not a preset.
func compileExtract(s, what string) (*regexp.Regexp, error) {
	if s == "" || answer.IsPreset(s) {
		return nil, nil
	}
	re, err := regexp.Compile(s)
	if err != nil {
		return nil, fmt.Errorf("rule: %s %q is not a preset (%s) and not a regular expression: %v", what, s, strings.Join(answer.Presets, ", "), err)
	}
	if re.NumSubexp() > 1 {
		return nil, fmt.Errorf("rule: %s %q has %d groups; use one (its text is the answer) or none (the whole match is)", what, s, re.NumSubexp())
	}
	return re, nil
}

// Read implements SelfJudge: the reference answers of the record.
func (j *RuleJudge) Read(rec map[string]json.RawMessage) (any, error) {
	if j.AnswerField == "" {
		return nil, nil
	}
	raw, ok := rec[j.AnswerField]
	if !ok || isNullJSON(raw) {
		return nil, fmt.Errorf("has no %q (the reference answer)", j.AnswerField)
	}
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
	var refs []string
	if s, ok := one(raw); ok {
		refs = []string{s}
	} else {
		var list []json.RawMessage
		if json.Unmarshal(raw, &list) != nil || len(list) == 0 {
			return nil, fmt.Errorf("%q must be a string, a number or a non-empty list of them", j.AnswerField)
		}
		for _, r := range list {
			s, ok := one(r)
			if !ok {
				return nil, fmt.Errorf("%q must be a string, a number or a list of them", j.AnswerField)
			}
			refs = append(refs, s)
		}
	}
	var ref ruleRef
	for _, s := range refs {
		if j.ReferenceExtract != "" {
			got, ok := answer.Extract(s, j.ReferenceExtract, j.refRe, false)
			if !ok {
				return nil, fmt.Errorf("%q %q has no answer to extract with %q", j.AnswerField, clipText(s), j.ReferenceExtract)
			}
			s = got
		}
		if j.Match == answer.MatchNumeric {
			v, ok := answer.ParseNumber(s)
			if !ok {
				return nil, fmt.Errorf("%q %q is not a number (match numeric)", j.AnswerField, clipText(s))
			}
			ref.numbers = append(ref.numbers, v)
		}
		ref.answers = append(ref.answers, s)
	}
	return ref, nil
}

// Judge implements SelfJudge. The note is the extracted answer.
func (j *RuleJudge) Judge(_ context.Context, p *SelfPrompt, response string) (Verdict, error) {
	extract := j.Extract
	if extract == "" && j.Match == answer.MatchNumeric {
		extract = answer.ExtractLastNumber
	}
	got, ok := answer.Extract(response, extract, j.extractRe, j.ExtractLast)
	if !ok {
		return Verdict{Note: "no answer found"}, nil
	}
	pass := true
	if ref, isRef := p.Ref.(ruleRef); isRef {
		pass = j.Equal(got, ref.answers, ref.numbers)
	}
	if j.mustRe != nil && !j.mustRe.MatchString(got) {
		pass = false
	}
	v := Verdict{Pass: pass, Note: got}
	if pass {
		v.Score = 1
	}
	return v, nil
}

func isNullJSON(raw json.RawMessage) bool { return strings.TrimSpace(string(raw)) == "null" }

// TeacherJudge has the teacher score each answer on a scale of 0 to
// MaxScore (a judging prompt like elicit feedback's, asked at temperature 0)
// and keeps those scored MinScore or more.
type TeacherJudge struct {
	Client *Client
	// Criteria, when set, replaces "helpfulness, correctness and clarity".
	Criteria string
	// Prompt, when set, replaces the judging prompt: {criteria}, {prompt},
	// {response}, {reference} and {max} are filled in.
	Prompt string
	// ReferenceField, when set, is a prompt record field whose text the
	// judge is shown as the reference answer (records without it are
	// judged without).
	ReferenceField string
	// MaxScore is the top of the scale (default 10); MinScore the score an
	// answer needs to be kept.
	MaxScore int
	MinScore float64
	// MaxTokens bounds the judgement (default 16).
	MaxTokens int
}

// Check validates the judge's settings.
func (j *TeacherJudge) Check() error {
	if j.Client == nil {
		return errors.New("judge: no teacher client")
	}
	if j.MaxScore == 0 {
		j.MaxScore = 10
	}
	if j.MaxScore < 1 {
		return fmt.Errorf("judge: max score %d: want 1 or more", j.MaxScore)
	}
	if j.MinScore < 0 || j.MinScore > float64(j.MaxScore) || math.IsNaN(j.MinScore) {
		return fmt.Errorf("judge: min score %g: want 0 to the max score %d", j.MinScore, j.MaxScore)
	}
	if j.Criteria == "" {
		j.Criteria = "helpfulness, correctness and clarity"
	}
	if j.MaxTokens <= 0 {
		j.MaxTokens = 16
	}
	return nil
}

// Read implements SelfJudge: the reference text, when the record has one.
func (j *TeacherJudge) Read(rec map[string]json.RawMessage) (any, error) {
	if j.ReferenceField == "" {
		return nil, nil
	}
	raw, ok := rec[j.ReferenceField]
	if !ok || isNullJSON(raw) {
		return nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	return strings.TrimSpace(string(raw)), nil // a number or a list, as written
}

const (
	defaultScorePrompt        = "You are grading a response to a prompt by {criteria}.\n\nPrompt:\n{prompt}\n\nResponse:\n{response}\n\nRate the response from 0 to {max}. Answer with the number only."
	defaultScorePromptWithRef = "You are grading a response to a prompt by {criteria}.\n\nPrompt:\n{prompt}\n\nReference answer:\n{reference}\n\nResponse:\n{response}\n\nRate the response from 0 to {max}. Answer with the number only."
)

// scorePrompt is the judging prompt for one answer.
func (j *TeacherJudge) scorePrompt(p *SelfPrompt, response string) string {
	ref, _ := p.Ref.(string)
	tmpl := j.Prompt
	if tmpl == "" {
		tmpl = defaultScorePrompt
		if ref != "" {
			tmpl = defaultScorePromptWithRef
		}
	}
	return strings.NewReplacer("{criteria}", j.Criteria, "{prompt}", promptForJudge(p), "{response}", response,
		"{reference}", ref, "{max}", strconv.Itoa(j.MaxScore)).Replace(tmpl)
}

// promptForJudge is the prompt as the judge reads it: the text, or a
// conversation's turns as "role: content" lines.
func promptForJudge(p *SelfPrompt) string {
	if !p.chat || len(p.Messages) == 1 {
		return p.Prompt
	}
	var b strings.Builder
	for _, m := range p.Messages {
		fmt.Fprintf(&b, "%s: %s\n", m.Role, m.Content)
	}
	return strings.TrimSpace(b.String())
}

var reScoreLine = regexp.MustCompile(`(?i)score\s*[:=]\s*\**\s*(\d+(?:\.\d+)?)`)

// ErrNoScore is wrapped by the error of a judgement that gives no score
// on the scale (a reply to ask again, not a failing teacher).
var ErrNoScore = errors.New("no score on the scale")

// parseScore reads a judgement: its last "Score: N", else its first number
// (as feedback reads a choice), which must be in 0…max.
func parseScore(reply string, max int) (float64, error) {
	m := ""
	if all := reScoreLine.FindAllStringSubmatch(reply, -1); len(all) > 0 {
		m = all[len(all)-1][1]
	} else {
		m = firstNumber.FindString(reply)
	}
	if m == "" {
		return 0, fmt.Errorf("the judgement %q gives no score: %w", clipText(reply), ErrNoScore)
	}
	v, err := strconv.ParseFloat(m, 64)
	if err != nil || v < 0 || v > float64(max) {
		return 0, fmt.Errorf("the judgement %q gives %s, outside 0…%d: %w", clipText(reply), m, max, ErrNoScore)
	}
	return v, nil
}

// Judge implements SelfJudge. The note is the teacher's reply.
func (j *TeacherJudge) Judge(ctx context.Context, p *SelfPrompt, response string) (Verdict, error) {
	zero := 0.0
	resp, err := j.Client.Chat(ctx, ChatRequest{Messages: []Message{{Role: "user", Content: j.scorePrompt(p, response)}},
		MaxTokens: j.MaxTokens, Temperature: &zero})
	if err != nil {
		return Verdict{}, err
	}
	reply := resp.Choices[0].Message.Content
	score, err := parseScore(reply, j.MaxScore)
	if err != nil {
		return Verdict{}, err
	}
	return Verdict{Score: score, Pass: score >= j.MinScore, Note: reply, Usage: resp.Usage}, nil
}
