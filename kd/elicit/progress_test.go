package elicit

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLabelProgressAgreesWithSummary: a run with a record already there, a
// request that fails, an answer skipped for its missing logprobs and three
// written, its progress going to a file (not a terminal): no carriage
// returns, and the last line's counts are the summary's.
func TestLabelProgressAgreesWithSummary(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req ChatRequest
		json.NewDecoder(r.Body).Decode(&req)
		last := req.Messages[len(req.Messages)-1].Content
		switch {
		case strings.Contains(last, "number 1."):
			w.WriteHeader(500)
		case strings.Contains(last, "number 2."):
			fmt.Fprint(w, `{"choices":[{"message":{"role":"assistant","content":"no logprobs"},"finish_reason":"stop"}]}`)
		default:
			fmt.Fprint(w, `{"choices":[{"message":{"role":"assistant","content":"ok"},"finish_reason":"stop","logprobs":{"content":[{"token":"ok","logprob":0,"top_logprobs":[]}]}}]}`)
		}
	}))
	defer ts.Close()
	var b strings.Builder
	for i := range 6 {
		fmt.Fprintf(&b, `{"prompt":"Call me Ishmael, number %d."}`+"\n", i)
	}
	dir := t.TempDir()
	prompts, out := filepath.Join(dir, "prompts.jsonl"), filepath.Join(dir, "out.jsonl")
	os.WriteFile(prompts, []byte(b.String()), 0o644)
	os.WriteFile(out, []byte(`{"id":"p1.s0","prompt":"Call me Ishmael, number 0.","response":"kept"}`+"\n"), 0o644)
	f, err := os.Create(filepath.Join(dir, "progress.log"))
	if err != nil {
		t.Fatal(err)
	}
	c := client(ts.URL)
	c.MaxRetries = -1
	sum, err := Label(context.Background(), LabelConfig{Client: c, Prompts: prompts, Output: out, TopLogprobs: 1, MissingLogprobs: "skip", Concurrency: 2, Progress: f})
	f.Close()
	if err == nil || !strings.Contains(err.Error(), "1 requests failed") {
		t.Fatalf("want the failed request reported: %v", err)
	}
	if sum.Records != 4-1 || sum.Resumed != 1 || sum.Failures != 1 || sum.MissingLogprobs != 1 {
		t.Fatalf("summary %+v", sum)
	}
	logged, _ := os.ReadFile(filepath.Join(dir, "progress.log"))
	if strings.Contains(string(logged), "\r") {
		t.Fatalf("carriage returns in a file: %q", logged)
	}
	lines := strings.Split(strings.TrimSpace(string(logged)), "\n")
	last := lines[len(lines)-1]
	m := regexp.MustCompile(`^(\d+)/(\d+) answers, (\d+) already there, (\d+) requests? failed, (\d+) skipped, [0-9.e+]+ answers/s, \d+s elapsed$`).FindStringSubmatch(last)
	if m == nil {
		t.Fatalf("last progress line %q", last)
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	if n(1)-n(3) != sum.Records || n(2) != 6 || n(3) != sum.Resumed || n(4) != sum.Failures || n(5) != sum.MissingLogprobs {
		t.Fatalf("last progress line %q disagrees with the summary %+v", last, sum)
	}
}

// TestProgressLine drives the bar with a clock of its own: the rate and
// the time left follow from the counts, a terminal gets one redrawn line,
// anything else a plain line every plainEvery.
func TestProgressLine(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := t0
	var b strings.Builder
	p := newProgress(&b, "answers", 10, 2)
	p.perRequest = true
	p.now = func() time.Time { return clock }
	p.start, p.last = t0, t0
	if got := p.line(clock, false); got != "2/10 answers, 2 already there, ? /s, 0s elapsed, ? left" {
		t.Fatalf("before any answer: %q", got)
	}
	// 4 answers and a failure in 2 s: 2 answers/s, 3 to go.
	for range 4 {
		p.add(unitWritten)
	}
	p.add(unitFailed)
	clock = t0.Add(2 * time.Second)
	if got := p.line(clock, false); got != "6/10 answers, 2 already there, 1 request failed, 2 answers/s, 2s elapsed, 2s left" {
		t.Fatalf("line %q", got)
	}
	if b.Len() != 0 {
		t.Fatalf("a plain line before %v: %q", plainEvery, b.String())
	}
	clock = t0.Add(plainEvery)
	p.add(unitSkipped)
	if got := b.String(); got != "6/10 answers, 2 already there, 1 request failed, 1 skipped, 0.267 answers/s, 15s elapsed, 8s left\n" {
		t.Fatalf("plain line %q", got)
	}

	b.Reset()
	p = newProgress(&b, "answers", 4, 0)
	p.term = true
	p.now = func() time.Time { return clock }
	p.start, p.last = t0, t0
	clock = t0.Add(time.Second)
	p.add(unitWritten)
	clock = t0.Add(2 * time.Second)
	p.add(unitWritten)
	p.end()
	got := b.String()
	if strings.Count(got, "\r") != 3 || !strings.HasSuffix(got, "\n") || strings.Count(got, "\n") != 1 ||
		!strings.Contains(got, "2/4 answers, 1 answers/s, 2s elapsed   \n") || !strings.Contains(got, "1/4 answers, 1 answers/s, 1s elapsed, 3s left") {
		t.Fatalf("terminal output %q", got)
	}
}
