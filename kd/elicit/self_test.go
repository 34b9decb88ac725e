package elicit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kdnative/kdnative/kd/tasks/answer"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// stubSampler answers from a table keyed by job id, finishing the jobs in
// reverse order (so the loop cannot rely on the order answers come in).
// answerAfter, when set, is called after each answer (tests stop a run
// there).
type stubSampler struct {
	mu          sync.Mutex
	answers     map[string]Sampled
	jobs        []string // every job asked for, over all calls
	answerAfter func(n int)
}

func (s *stubSampler) Sample(ctx context.Context, jobs []SampleJob, done func(SampleJob, Sampled, error) error) error {
	for i := len(jobs) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return err
		}
		j := jobs[i]
		s.mu.Lock()
		s.jobs = append(s.jobs, j.ID)
		n := len(s.jobs)
		s.mu.Unlock()
		a, ok := s.answers[j.ID]
		if !ok {
			return fmt.Errorf("stub: no answer for %s", j.ID)
		}
		if a.Finish == "" {
			a.Finish = "stop"
		}
		if err := done(j, a, nil); err != nil {
			return err
		}
		if s.answerAfter != nil {
			s.answerAfter(n)
		}
	}
	return nil
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// outputIDs is the output's ids in file order (failing on a repeat).
func outputIDs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		var rec struct{ ID string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%s: %q: %v", path, line, err)
		}
		if seen[rec.ID] {
			t.Fatalf("%s: id %s written twice", path, rec.ID)
		}
		seen[rec.ID] = true
		ids = append(ids, rec.ID)
	}
	return ids
}

// The rule-judged prompts: arithmetic with references, one record without
// its reference (a bad line), one message list.
const arithmetic = `{"prompt":"What is 2+3?","answer":5}
{"messages":[{"role":"user","content":"What is 10/4?"}],"answer":"2.5"}
{"prompt":"What is 7*6?","answer":"42"}
{"prompt":"What has no answer field?"}
{"prompt":"What is 1+1?","answer":[2,"2.0"]}
`

// arithmeticAnswers are the student's answers, written so that which pass
// is known by hand: "#### N" is GSM8K's final-answer mark.
var arithmeticAnswers = map[string]Sampled{
	"p1.s0": {Response: "2+3 = 5\n#### 5"},
	"p1.s1": {Response: "2+3 = 6\n#### 6"},
	"p1.s2": {Response: "2+3 = 5\n#### 5"}, // the same text as s0
	"p1.s3": {Response: "It is five.\n#### 5.0", Finish: "length"},
	"p2.s0": {Response: "#### 2.5"},
	"p2.s1": {Response: "  "}, // blank: never kept, never judged
	"p2.s2": {Response: "#### 2.50"},
	"p2.s3": {Response: "It is 2.5, no mark"},
	"p3.s0": {Response: "#### 41"},
	"p3.s1": {Response: "#### 43"},
	"p3.s2": {Response: "forty-two"},
	"p3.s3": {Response: "#### 4 2"},
	"p5.s0": {Response: "#### 3"},
	"p5.s1": {Response: "#### 2"},
	"p5.s2": {Response: "1+1 = 2\n#### 2"},
	"p5.s3": {Response: "#### 2.000"},
}

func gsm8kRule() *RuleJudge {
	j := &RuleJudge{AnswerField: "answer", Extract: "gsm8k"}
	j.Match = "numeric"
	j.Tolerance = 1e-6
	return j
}

// TestSelfRuleKeepsWhatPasses: the student's answers (a stub with answers
// whose correctness is known by hand) are judged by the GSM8K rule against
// each prompt's reference; every policy keeps exactly the hand-computed
// answers, in the prompts' order, with their score and finish_reason; a
// record without its reference is skipped and named; the summary counts
// it all.
func TestSelfRuleKeepsWhatPasses(t *testing.T) {
	prompts := writeFile(t, "prompts.jsonl", arithmetic)
	for _, c := range []struct {
		keep string
		max  int
		want []string
	}{
		{KeepAll, 0, []string{"p1.s0", "p1.s3", "p2.s0", "p2.s2", "p5.s1", "p5.s2", "p5.s3"}},
		{KeepAll, 2, []string{"p1.s0", "p1.s3", "p2.s0", "p2.s2", "p5.s1", "p5.s2"}},
		{KeepBest, 0, []string{"p1.s0", "p2.s0", "p5.s1"}},
	} {
		name := fmt.Sprintf("keep %s max %d", c.keep, c.max)
		out := filepath.Join(t.TempDir(), "self.jsonl")
		var log strings.Builder
		sum, err := Self(context.Background(), SelfConfig{Sampler: &stubSampler{answers: arithmeticAnswers}, Judge: gsm8kRule(),
			Prompts: prompts, Output: out, N: 4, Keep: c.keep, MaxPerPrompt: c.max, Log: &log})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := outputIDs(t, out); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: kept %v, want %v", name, got, c.want)
		}
		if !strings.Contains(log.String(), "prompts.jsonl line 4 skipped: has no \"answer\"") {
			t.Errorf("%s: log %q", name, log.String())
		}
		want := SelfSummary{Prompts: 4, BadLines: 1, Samples: 16, Cut: 1, Judged: 16, Passed: 8, Kept: len(c.want), Duplicates: 1, Solved: 3}
		sum.Elapsed, sum.Tokens = 0, 0
		if c.keep == KeepBest {
			want.Duplicates = 1 // the duplicate is found before the best is taken
		}
		if sum != want {
			t.Errorf("%s: summary %+v, want %+v", name, sum, want)
		}
	}
	// The records: what train reads, and the judge's score.
	out := filepath.Join(t.TempDir(), "self.jsonl")
	if _, err := Self(context.Background(), SelfConfig{Sampler: &stubSampler{answers: arithmeticAnswers}, Judge: gsm8kRule(),
		Prompts: prompts, Output: out, N: 4, System: "Show your work."}); err != nil {
		t.Fatal(err)
	}
	recs := readOutput(t, out)
	r := recs["p1.s3"]
	if r["prompt"] != "What is 2+3?" || r["response"] != "It is five.\n#### 5.0" || r["finish_reason"] != "length" || r["score"] != 1.0 || r["sample"] != 3.0 {
		t.Errorf("p1.s3: %v", r)
	}
	raw, _ := json.Marshal(recs["p2.s2"]["messages"])
	var msgs []Message
	json.Unmarshal(raw, &msgs)
	if want := []Message{{"system", "Show your work."}, {"user", "What is 10/4?"}, {"assistant", "#### 2.50"}}; !reflect.DeepEqual(msgs, want) {
		t.Errorf("p2.s2 messages: %s", raw)
	}
	// The journal has every answer and every judgement.
	j := readOutput(t, DefaultJournal(out))
	if len(j) != 32 || j["p3.s2.j"]["note"] != "no answer found" || j["p3.s0.j"]["note"] != "41" || j["p3.s0.j"]["pass"] != false || j["p2.s1.j"]["note"] != "empty answer" {
		t.Errorf("journal: %d records; p3.s2.j %v, p3.s0.j %v", len(j), j["p3.s2.j"], j["p3.s0.j"])
	}
}

// TestSelfRuleMustMatch: a regular expression alone is a rule; with an
// extraction it applies to the extracted answer.
func TestSelfRuleMustMatch(t *testing.T) {
	prompts := writeFile(t, "prompts.jsonl", "{\"prompt\":\"a\"}\n{\"prompt\":\"b\"}\n")
	answers := map[string]Sampled{
		"p1.s0": {Response: "The answer is (B)."}, "p1.s1": {Response: "The answer is (E)."},
		"p2.s0": {Response: "I think (C), the answer is (A)."}, "p2.s1": {Response: "no idea"},
	}
	for _, c := range []struct {
		rule RuleJudge
		want []string
	}{
		{RuleJudge{MustMatch: `\([A-D]\)`}, []string{"p1.s0", "p2.s0"}},
		{RuleJudge{MustMatch: `^[A-D]$`, Extract: `answer is \(([A-Z])\)`}, []string{"p1.s0", "p2.s0"}},
		{RuleJudge{MustMatch: `^C$`, Extract: `\(([A-Z])\)`}, []string{"p2.s0"}},
		{RuleJudge{MustMatch: `^C$`, Extract: `\(([A-Z])\)`, ExtractLast: true}, nil},
	} {
		out := filepath.Join(t.TempDir(), "self.jsonl")
		rule := c.rule
		if _, err := Self(context.Background(), SelfConfig{Sampler: &stubSampler{answers: answers}, Judge: &rule, Prompts: prompts, Output: out, N: 2}); err != nil {
			t.Fatal(err)
		}
		if got := outputIDs(t, out); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%+v: kept %v, want %v", c.rule, got, c.want)
		}
	}
}

// TestSelfRuleBadSettings: a rule that cannot work is refused before
// anything runs, naming what is wrong.
func TestSelfRuleBadSettings(t *testing.T) {
	prompts := writeFile(t, "prompts.jsonl", "{\"prompt\":\"a\",\"answer\":\"x\"}\n")
	for _, c := range []struct {
		rule RuleJudge
		want string
	}{
		{RuleJudge{}, "give an answer field"},
		{RuleJudge{AnswerField: "answer", Extract: "(a)(b)"}, "has 2 groups"},
		{RuleJudge{AnswerField: "answer", Extract: "("}, "not a preset"},
		{RuleJudge{MustMatch: "["}, "must-match"},
		{RuleJudge{AnswerField: "answer", Comparison: answer.Comparison{Match: "fuzzy"}}, `match "fuzzy"`},
		{RuleJudge{MustMatch: "x", ExtractLast: true}, "extract-last applies"},
	} {
		rule := c.rule
		_, err := Self(context.Background(), SelfConfig{Sampler: &stubSampler{}, Judge: &rule, Prompts: prompts, Output: filepath.Join(t.TempDir(), "o.jsonl")})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.rule, err, c.want)
		}
	}
	// A reference that is not a number under match numeric is a bad record.
	prompts = writeFile(t, "prompts.jsonl", "{\"prompt\":\"a\",\"answer\":\"many\"}\n")
	_, err := Self(context.Background(), SelfConfig{Sampler: &stubSampler{}, Judge: gsm8kRule(), Prompts: prompts, Output: filepath.Join(t.TempDir(), "o.jsonl"), StrictInput: true})
	if err == nil || !strings.Contains(err.Error(), `line 1: "answer" "many" is not a number`) {
		t.Errorf("strict, a reference that is no number: %v", err)
	}
}

// TestSelfReferenceExtract: a reference field holding a whole GSM8K
// solution, and the prompt in "question", as GSM8K's own files have them.
func TestSelfReferenceExtract(t *testing.T) {
	prompts := writeFile(t, "gsm8k.jsonl", `{"question":"Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?","answer":"Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"}`+"\n")
	rule := gsm8kRule()
	rule.ReferenceExtract = "gsm8k"
	out := filepath.Join(t.TempDir(), "self.jsonl")
	answers := map[string]Sampled{"p1.s0": {Response: "48 + 24 = 72\n#### 72"}, "p1.s1": {Response: "#### 24"}}
	if _, err := Self(context.Background(), SelfConfig{Sampler: &stubSampler{answers: answers}, Judge: rule, Prompts: prompts, PromptField: "question", Output: out, N: 2}); err != nil {
		t.Fatal(err)
	}
	recs := readOutput(t, out)
	if len(recs) != 1 || recs["p1.s0"] == nil || !strings.HasPrefix(recs["p1.s0"]["prompt"].(string), "Natalia sold clips") {
		t.Fatalf("kept %v", recs)
	}
}

// TestSelfResumesWhereStopped: a run stopped after some answers (its
// context cancelled in the middle), started again, samples only the
// missing answers and writes the same output as a run never stopped, each
// record once.
func TestSelfResumesWhereStopped(t *testing.T) {
	prompts := writeFile(t, "prompts.jsonl", arithmetic)
	whole := filepath.Join(t.TempDir(), "whole.jsonl")
	if _, err := Self(context.Background(), SelfConfig{Sampler: &stubSampler{answers: arithmeticAnswers}, Judge: gsm8kRule(), Prompts: prompts, Output: whole, N: 4}); err != nil {
		t.Fatal(err)
	}
	for _, stopAt := range []int{1, 5, 9, 15} {
		out := filepath.Join(t.TempDir(), "self.jsonl")
		ctx, cancel := context.WithCancel(context.Background())
		first := &stubSampler{answers: arithmeticAnswers, answerAfter: func(n int) {
			if n == stopAt {
				cancel()
			}
		}}
		_, err := Self(ctx, SelfConfig{Sampler: first, Judge: gsm8kRule(), Prompts: prompts, Output: out, N: 4, Concurrency: 1})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("stopped after %d: %v", stopAt, err)
		}
		second := &stubSampler{answers: arithmeticAnswers}
		sum, err := Self(context.Background(), SelfConfig{Sampler: second, Judge: gsm8kRule(), Prompts: prompts, Output: out, N: 4})
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range second.jobs {
			for _, done := range first.jobs {
				if id == done {
					t.Errorf("stopped after %d: %s sampled again", stopAt, id)
				}
			}
		}
		if len(first.jobs)+len(second.jobs) != 16 {
			t.Errorf("stopped after %d: %d + %d answers sampled, want 16 in all", stopAt, len(first.jobs), len(second.jobs))
		}
		a, _ := os.ReadFile(whole)
		b, _ := os.ReadFile(out)
		if string(a) != string(b) {
			t.Errorf("stopped after %d: the output differs from a run never stopped:\n%s\nvs\n%s", stopAt, b, a)
		}
		t.Logf("stopped after %d: %s", stopAt, sum)
	}
	// A journal made for other prompts is refused.
	out := filepath.Join(t.TempDir(), "self.jsonl")
	if _, err := Self(context.Background(), SelfConfig{Sampler: &stubSampler{answers: arithmeticAnswers}, Judge: gsm8kRule(), Prompts: prompts, Output: out, N: 4}); err != nil {
		t.Fatal(err)
	}
	other := writeFile(t, "other.jsonl", strings.Replace(arithmetic, "2+3", "2+4", 1))
	_, err := Self(context.Background(), SelfConfig{Sampler: &stubSampler{answers: arithmeticAnswers}, Judge: gsm8kRule(), Prompts: other, Output: out, N: 4})
	if err == nil || !strings.Contains(err.Error(), "the journal is another run's") {
		t.Fatalf("a journal of other prompts: %v", err)
	}
}

// judgeServer is an OpenAI-compatible judge: it reads the answer out of the
// judging prompt and replies as the answer says — "score=N" is scored N,
// "fail" answers 500 every time, "flaky" answers 503 once and then 9,
// "garbage" gets a reply without a number. healed makes fail and garbage
// score 8 and 1.
type judgeServer struct {
	mu      sync.Mutex
	healed  bool
	calls   map[string]int // by answer
	prompts []string
}

func (s *judgeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req ChatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	prompt := req.Messages[0].Content
	_, after, _ := strings.Cut(prompt, "Response:\n")
	answer, _, _ := strings.Cut(after, "\n\nRate")
	s.mu.Lock()
	s.calls[answer]++
	n, healed := s.calls[answer], s.healed
	s.prompts = append(s.prompts, prompt)
	s.mu.Unlock()
	reply := ""
	switch {
	case answer == "fail" && !healed:
		http.Error(w, `{"error":{"message":"judge down"}}`, 500)
		return
	case answer == "fail":
		reply = "Score: 8"
	case answer == "flaky" && n == 1:
		http.Error(w, `{"error":{"message":"busy"}}`, 503)
		return
	case answer == "flaky":
		reply = "9"
	case answer == "garbage" && !healed:
		reply = "I like it."
	case answer == "garbage":
		reply = "It is poor. Score: 1"
	case strings.HasPrefix(answer, "score="):
		reply = "Fine. Score: " + strings.TrimPrefix(answer, "score=")
	default:
		reply = "?"
	}
	json.NewEncoder(w).Encode(ChatResponse{Choices: []Choice{{Message: Message{Role: "assistant", Content: reply}, FinishReason: "stop"}},
		Usage: Usage{PromptTokens: 10, CompletionTokens: 2}})
}

// TestSelfTeacherJudge: the teacher scores each answer through the
// endpoint; answers scored at least MinScore are kept; a 503 is retried; a
// judge that keeps failing, or replies without a score, leaves its answer
// unjudged — counted, its prompt left out, the run's error saying so — and a
// second run judges only those (the answers are not sampled again) and
// completes the output, each record once.
func TestSelfTeacherJudge(t *testing.T) {
	prompts := writeFile(t, "prompts.jsonl", "{\"prompt\":\"first\"}\n{\"prompt\":\"second\",\"reference\":\"ref two\"}\n{\"prompt\":\"third\"}\n")
	answers := map[string]Sampled{
		"p1.s0": {Response: "score=9"}, "p1.s1": {Response: "score=3"}, "p1.s2": {Response: "flaky"},
		"p2.s0": {Response: "score=7"}, "p2.s1": {Response: "fail"}, "p2.s2": {Response: "score=8"},
		"p3.s0": {Response: "garbage"}, "p3.s1": {Response: "score=10"}, "p3.s2": {Response: "score=2"},
	}
	js := &judgeServer{calls: map[string]int{}}
	ts := httptest.NewServer(js)
	defer ts.Close()
	judge := func() *TeacherJudge {
		c := &Client{BaseURL: ts.URL + "/v1", Model: "judge", Timeout: 10 * time.Second, Backoff: time.Millisecond, MaxRetries: 2}
		return &TeacherJudge{Client: c, MinScore: 7, ReferenceField: "reference"}
	}
	out := filepath.Join(t.TempDir(), "self.jsonl")
	var log strings.Builder
	first := &stubSampler{answers: answers}
	var prog strings.Builder
	sum, err := Self(context.Background(), SelfConfig{Sampler: first, Judge: judge(), Prompts: prompts, Output: out, N: 3, Log: &log, Progress: &prog})
	if err == nil || !strings.Contains(err.Error(), "2 answers could not be judged") {
		t.Fatalf("first run: %v", err)
	}
	want := SelfSummary{Prompts: 3, Samples: 9, Judged: 7, Passed: 2, Kept: 2, Solved: 1, Unjudged: 2, Retries: 3, JudgeTokens: 7 * 12}
	sum.Elapsed = 0
	if sum != want {
		t.Errorf("first run: summary %+v, want %+v", sum, want)
	}
	if got := outputIDs(t, out); !reflect.DeepEqual(got, []string{"p1.s0", "p1.s2"}) {
		t.Errorf("first run kept %v", got)
	}
	if !strings.HasPrefix(prog.String(), "1/3 prompts, 2 prompts with unjudged answers, ") {
		t.Errorf("progress: %q", prog.String())
	}
	for _, w := range []string{"p2.s1 unjudged: the endpoint answered 500", `p3.s0 unjudged: the judgement "I like it." gives no score`} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, log.String())
		}
	}
	// The judging prompt: the prompt, the reference where the record has
	// one, the answer and the scale.
	js.mu.Lock()
	var withRef string
	for _, p := range js.prompts {
		if strings.Contains(p, "Response:\nscore=8") {
			withRef = p
		}
	}
	js.healed = true
	js.calls = map[string]int{}
	js.mu.Unlock()
	if withRef != "You are grading a response to a prompt by helpfulness, correctness and clarity.\n\nPrompt:\nsecond\n\nReference answer:\nref two\n\nResponse:\nscore=8\n\nRate the response from 0 to 10. Answer with the number only." {
		t.Errorf("judging prompt:\n%s", withRef)
	}

	second := &stubSampler{answers: answers}
	sum, err = Self(context.Background(), SelfConfig{Sampler: second, Judge: judge(), Prompts: prompts, Output: out, N: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(second.jobs) != 0 {
		t.Errorf("the second run sampled %v again", second.jobs)
	}
	js.mu.Lock()
	if !reflect.DeepEqual(js.calls, map[string]int{"fail": 1, "garbage": 1}) {
		t.Errorf("the second run asked the judge %v", js.calls)
	}
	js.mu.Unlock()
	if sum.Resumed != 1 || sum.Judged != 2 || sum.Kept != 4 || sum.Unjudged != 0 {
		t.Errorf("second run: %+v", sum)
	}
	if got := outputIDs(t, out); !reflect.DeepEqual(got, []string{"p1.s0", "p1.s2", "p2.s0", "p2.s1", "p2.s2", "p3.s1"}) {
		t.Errorf("after the second run: %v", got)
	}
	if r := readOutput(t, out)["p2.s1"]; r["score"] != 8.0 {
		t.Errorf("p2.s1: %v", r)
	}
}

// TestSelfTeacherJudgeFatal: a refused key stops the run at once with the
// endpoint's reason; nothing is written for the prompts being judged.
func TestSelfTeacherJudgeFatal(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, `{"error":{"message":"bad key"}}`, 401)
	}))
	defer ts.Close()
	prompts := writeFile(t, "prompts.jsonl", "{\"prompt\":\"a\"}\n")
	out := filepath.Join(t.TempDir(), "self.jsonl")
	judge := &TeacherJudge{Client: &Client{BaseURL: ts.URL + "/v1", Model: "judge", Backoff: time.Millisecond}, MinScore: 5}
	_, err := Self(context.Background(), SelfConfig{Sampler: &stubSampler{answers: map[string]Sampled{"p1.s0": {Response: "x"}, "p1.s1": {Response: "y"}}},
		Judge: judge, Prompts: prompts, Output: out, N: 2})
	if err == nil || !strings.Contains(err.Error(), "refused the API key") {
		t.Fatalf("%v", err)
	}
	if ids := outputIDs(t, out); len(ids) != 0 {
		t.Fatalf("wrote %v", ids)
	}
}

// TestParseScore: a judgement's score, its last "Score: N" or else its
// first number, within the scale.
func TestParseScore(t *testing.T) {
	for _, c := range []struct {
		reply string
		want  float64
		ok    bool
	}{
		{"7", 7, true}, {"8/10", 8, true}, {"Good answer. Score: 9", 9, true}, {"Steps 1 and 2 are right. Score: **6**", 6, true},
		{"score = 4.5", 4.5, true}, {"11", 0, false}, {"none", 0, false}, {"Score: 12", 0, false},
	} {
		got, err := parseScore(c.reply, 10)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseScore(%q) = %v, %v; want %v, ok %v", c.reply, got, err, c.want, c.ok)
		}
	}
}

// TestSelfWithDemoModel runs the loop end to end with a real model, the
// demo teacher as the student (ChatML), judged by a regular expression.
// Every answer in the journal is what model.Generate gives alone for that
// prompt (put in ChatML by hand here) and the answer's seed; the kept ones
// are exactly those the expression matches (an empty answer, which seed 7
// gives today, is dropped unjudged); and the output is the same byte for
// byte at batch sizes 1 and 5.
func TestSelfWithDemoModel(t *testing.T) {
	be := cpu.New()
	texts := []string{"Call me Ishmael.", "The whale", "It was the", "And the sea", "Queequeg was a", "Ahab stood upon the"}
	var pb strings.Builder
	for _, s := range texts {
		fmt.Fprintf(&pb, "{\"prompt\":%q}\n", s)
	}
	prompts := writeFile(t, "prompts.jsonl", pb.String())
	const n, maxTokens, seed = 3, 12, 7
	mustMatch := regexp.MustCompile(`,`) // about a third of the answers today
	var outs []string
	for _, batch := range []int{1, 5} {
		student, err := OpenStudent(be, demoModel(t), "chatml")
		if err != nil {
			t.Fatal(err)
		}
		student.Params = model.GenerateParams{MaxTokens: maxTokens, Temperature: 1, TopP: 0.95}
		student.BatchSize = batch
		out := filepath.Join(t.TempDir(), "self.jsonl")
		sum, err := Self(context.Background(), SelfConfig{Sampler: student, Judge: &RuleJudge{MustMatch: mustMatch.String()},
			Prompts: prompts, Output: out, N: n, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("batch %d: %s", batch, sum)
		b, _ := os.ReadFile(out)
		outs = append(outs, string(b))
		if batch != 1 {
			continue
		}
		// The reference: each answer generated alone.
		m, tok := student.Model, student.Tok
		imEnd, ok := tok.TokenID("<|im_end|>")
		if !ok {
			t.Fatal("no <|im_end|>")
		}
		stops := []int32{imEnd}
		if eos := tok.Special().EOS; eos >= 0 {
			stops = append(stops, eos)
		}
		journal := readOutput(t, DefaultJournal(out))
		kept := readOutput(t, out)
		matched := 0
		for i, text := range texts {
			ids := tok.Encode("<|im_start|>user\n" + text + "<|im_end|>\n<|im_start|>assistant\n")
			for k := range n {
				id := fmt.Sprintf("p%d.s%d", i+1, k)
				g, err := m.Generate(ids, model.GenerateParams{MaxTokens: maxTokens, Temperature: 1, TopP: 0.95,
					Seed: uint64(requestSeed(seed, id)), StopTokens: stops})
				if err != nil {
					t.Fatal(err)
				}
				toks, finish := g.Tokens, "length"
				if len(toks) > 0 && slices.Contains(stops, toks[len(toks)-1]) {
					toks, finish = toks[:len(toks)-1], "stop"
				}
				want := tok.Decode(toks)
				j := journal[id]
				if j["response"] != want || j["finish_reason"] != finish || j["tokens"] != float64(len(g.Tokens)) {
					t.Errorf("%s: the journal has %v, Generate gives %q (%s, %d tokens)", id, j, want, finish, len(g.Tokens))
				}
				if mustMatch.MatchString(want) {
					matched++
					if kept[id] == nil || kept[id]["response"] != want {
						t.Errorf("%s: %q matches, but the output has %v", id, want, kept[id])
					}
				} else if kept[id] != nil {
					t.Errorf("%s: %q does not match, but was kept", id, want)
				}
			}
		}
		if matched == 0 || matched == len(texts)*n {
			t.Fatalf("%d of %d answers match: the test needs some of each (change the expression)", matched, len(texts)*n)
		}
	}
	if outs[0] != outs[1] {
		t.Fatalf("batch sizes 1 and 5 give different outputs:\n%s\nvs\n%s", outs[0], outs[1])
	}
}
