package tasks

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kdnative/kdnative/kd/elicit"
)

// judgeServer answers chat completions with reply(prompt) (status 200) or
// the status it returns, and counts requests.
func judgeServer(t *testing.T, reply func(prompt string) (string, int)) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		var req elicit.ChatRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) != 1 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		text, status := reply(req.Messages[0].Content)
		if status != http.StatusOK {
			http.Error(w, `{"error": {"message": "nope"}}`, status)
			return
		}
		json.NewEncoder(w).Encode(elicit.ChatResponse{Choices: []elicit.Choice{{Message: elicit.Message{Role: "assistant", Content: text}, FinishReason: "stop"}}})
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func judgedTask(t *testing.T) *Task {
	t.Helper()
	p := writeTask(t,
		`{"task": "explain", "defaults": {"kind": "generate", "score": "judge", "max_tokens": 6, "rubric": "Full marks for a sentence about cats."}}`,
		`{"id": "a", "prompt": "The cat sat on the"}`,
		`{"id": "b", "prompt": "Paris is the capital of", "answer": "France"}`,
		`{"id": "c", "prompt": "Two plus two is"}`,
		`{"id": "d", "prompt": "The ship", "max_score": 4}`,
	)
	task, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func newJudge(url, cache string) *Judge {
	return &Judge{Client: &elicit.Client{BaseURL: url, Model: "judge", MaxRetries: 2, Backoff: time.Millisecond}, Cache: cache, Concurrency: 2}
}

// TestJudgeScoresCachesAndResumes: scores come from the judge's "Score: N"
// (scaled by max_score), are cached, and a second run asks for nothing.
func TestJudgeScoresCachesAndResumes(t *testing.T) {
	m, tok := fixtureModel(t)
	task := judgedTask(t)
	srv, calls := judgeServer(t, func(p string) (string, int) {
		switch {
		case strings.Contains(p, "Task:\nThe cat sat on the\n"):
			return "About cats. Score: 1", 200
		case strings.Contains(p, "from 0 to 4"):
			return "Partly. Score: 3", 200
		case strings.Contains(p, "Reference answer (may be empty):\nFrance"):
			return "No cats.\nScore: 0", 200
		}
		return "I cannot grade this.", 200 // no score: unscored
	})
	cache := filepath.Join(t.TempDir(), "judgements.jsonl")
	j := newJudge(srv.URL, cache)
	res, err := Evaluate(context.Background(), m, tok, task, Options{Judge: j})
	j.Close()
	if err != nil {
		t.Fatal(err)
	}
	mt := res.Metric("judge_score")
	// a: 1, b: 0, d: 3/4; c unscored.
	if mt == nil || mt.N != 3 || mt.Unscored != 1 || mt.Value != (1+0+0.75)/3 || mt.Interval != "bootstrap" {
		t.Fatalf("judge_score %+v", mt)
	}
	if got := res.Records[2]["unscored"]; got != `the judge's reply has no "Score: N" line` {
		t.Errorf("c: unscored %v", got)
	}
	if n := calls.Load(); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}
	// Again, with a judge that would fail everything: the three judgements
	// come from the cache, and only the unscored answer is asked again.
	srv2, calls2 := judgeServer(t, func(string) (string, int) { return "", 503 })
	j2 := newJudge(srv2.URL, cache)
	res2, err := Evaluate(context.Background(), m, tok, task, Options{Judge: j2})
	j2.Close()
	if err != nil {
		t.Fatal(err)
	}
	if mt2 := res2.Metric("judge_score"); mt2.Value != mt.Value || mt2.N != 3 || mt2.Unscored != 1 {
		t.Errorf("resumed judge_score %+v", mt2)
	}
	if n := calls2.Load(); n != 3 { // one answer, tried 1 + 2 retries
		t.Errorf("%d requests on resume, want 3", n)
	}
	if got, _ := res2.Records[2]["unscored"].(string); !strings.Contains(got, "503") || !strings.Contains(got, "after 3 attempts") {
		t.Errorf("c on resume: unscored %q", got)
	}
}

// TestJudgeFailuresAreUnscored: an endpoint that keeps failing is retried,
// then its examples are unscored and counted — never scored as wrong.
func TestJudgeFailuresAreUnscored(t *testing.T) {
	m, tok := fixtureModel(t)
	task := judgedTask(t)
	srv, calls := judgeServer(t, func(string) (string, int) { return "", 500 })
	j := newJudge(srv.URL, "")
	res, err := Evaluate(context.Background(), m, tok, task, Options{Judge: j})
	if err != nil {
		t.Fatal(err)
	}
	mt := res.Metric("judge_score")
	if mt.N != 0 || mt.Unscored != 4 || mt.Value == mt.Value { // NaN: no score at all
		t.Errorf("judge_score %+v", mt)
	}
	if n := calls.Load(); n != 12 {
		t.Errorf("%d requests, want 4 × 3 attempts", n)
	}
	var b strings.Builder
	(&Report{Models: []string{""}, Labels: []string{"m"}, Results: []*Result{res}}).Print(&b)
	if !strings.Contains(b.String(), "— (4 unscored)") || !strings.Contains(b.String(), "warning: explain") {
		t.Errorf("table:\n%s", b.String())
	}
}

// TestJudgeFatalStops: a refused key is not retried and stops the run.
func TestJudgeFatalStops(t *testing.T) {
	m, tok := fixtureModel(t)
	srv, calls := judgeServer(t, func(string) (string, int) { return "", 401 })
	_, err := Evaluate(context.Background(), m, tok, judgedTask(t), Options{Judge: newJudge(srv.URL, "")})
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("err %v", err)
	}
	if n := calls.Load(); n > 2 { // two workers may each have sent one
		t.Errorf("%d requests after a 401", n)
	}
}

// TestJudgeCacheTornLine: a cache cut mid-line by a kill loses that line
// only; a cache that is not one is refused.
func TestJudgeCacheTornLine(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "j.jsonl")
	good := `{"key":"k1","id":"a","answer_sha256":"x","score":1,"reply":"Score: 1"}` + "\n"
	os.WriteFile(p, []byte(good+`{"key":"k2","id":"b","sco`), 0o644)
	j := &Judge{Client: &elicit.Client{}, Cache: p}
	if err := j.open(); err != nil {
		t.Fatal(err)
	}
	j.Close()
	if len(j.have) != 1 || j.have["k1"].Score != 1 {
		t.Errorf("read %v", j.have)
	}
	if data, _ := os.ReadFile(p); string(data) != good {
		t.Errorf("cache after open: %q", data)
	}
	os.WriteFile(p, []byte("not json\n"+good), 0o644)
	if err := (&Judge{Client: &elicit.Client{}, Cache: p}).open(); err == nil || !strings.Contains(err.Error(), "line 1 is not a judgement") {
		t.Errorf("bad cache: %v", err)
	}
}

func TestParseScore(t *testing.T) {
	for _, c := range []struct {
		reply string
		max   int
		want  float64
		ok    bool
	}{
		{"Good.\nScore: 1", 1, 1, true},
		{"score = 3", 4, 0.75, true},
		{"**Score:** 2", 2, 1, true},
		{"Score: 2 … on reflection Score: 1", 2, 0.5, true},
		{"Score: 5", 4, 0, false},
		{"no grade", 1, 0, false},
	} {
		got, err := parseScore(c.reply, c.max)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("%q /%d: %v, %v", c.reply, c.max, got, err)
		}
	}
}

// TestAllUnscoredInResultsJSON: a metric with no scored example is written
// as null in results.json (JSON has no NaN), not dropped.
func TestAllUnscoredInResultsJSON(t *testing.T) {
	js, err := json.Marshal(Metric{Name: "judge_score", Value: math.NaN(), Lo: math.NaN(), Hi: math.NaN(), Unscored: 3})
	if err != nil || string(js) != `{"name":"judge_score","interval":"","n":0,"unscored":3,"value":null,"ci_lo":null,"ci_hi":null}` {
		t.Errorf("%s %v", js, err)
	}
	js, _ = json.Marshal(Metric{Name: "acc", Value: 0.5, Lo: 0.2, Hi: 0.8, Interval: "wilson", N: 10})
	var back map[string]any
	if json.Unmarshal(js, &back) != nil || back["value"] != 0.5 || back["ci_hi"] != 0.8 || back["n"] != 10.0 {
		t.Errorf("%s", js)
	}
}
