package elicit

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseInstructions(t *testing.T) {
	got := parseInstructions("Here are 3 new instructions:\n1. Write a poem about the sea.\n2) Summarize a news article in two sentences\n- \"Explain recursion to a child.\"\n\nok\n", 3, 1000)
	want := []string{"Write a poem about the sea.", "Summarize a news article in two sentences", "Explain recursion to a child."}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%q", got)
	}
}

// scripted is an OpenAI-shaped endpoint whose answers are lists of
// instructions, some repeating earlier ones.
func scripted(t *testing.T, reply func(i int64, prompt string) string) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req ChatRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || r.URL.Path != "/v1/chat/completions" || req.Model == "" || len(req.Messages) == 0 {
			w.WriteHeader(400)
			return
		}
		i := n.Add(1)
		json.NewEncoder(w).Encode(ChatResponse{ID: "x", Object: "chat.completion", Model: req.Model,
			Choices: []Choice{{Message: Message{Role: "assistant", Content: reply(i, req.Messages[len(req.Messages)-1].Content)}, FinishReason: "stop"}},
			Usage:   Usage{PromptTokens: 10, CompletionTokens: 5, TotalTokens: 15}})
	}))
	t.Cleanup(ts.Close)
	return ts, &n
}

func writeSeeds(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "seeds.jsonl")
	os.WriteFile(p, []byte(`{"prompt":"Write a haiku about autumn leaves."}
{"prompt":"Explain how a bicycle gear works."}
{"prompt":"List three uses of baking soda."}
`), 0o644)
	return p
}

func TestExpandDedupAndResume(t *testing.T) {
	ts, _ := scripted(t, func(i int64, prompt string) string {
		if !strings.Contains(prompt, "Write 4 new instructions") {
			return "bad prompt"
		}
		// Each answer repeats a seed, a near copy and an earlier answer.
		return fmt.Sprintf("Here are new ones:\n1. Write a haiku about autumn leaves.\n2. write a  HAIKU about autumn leaves!\n3. Describe task number %d in detail please.\n4. Describe task number %d in detail please.\n5. Plan a trip to city %d for a family of four.", i, i-1, i)
	})
	out := filepath.Join(t.TempDir(), "new.jsonl")
	ctx, cancel := context.WithCancel(context.Background())
	cfg := ExpandConfig{Client: client(ts.URL), Seeds: writeSeeds(t), Output: out, Count: 7, PerRequest: 4, Concurrency: 1}
	// An interrupted first run.
	go func() {
		for {
			if b, _ := os.ReadFile(out); strings.Count(string(b), "\n") >= 3 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	sum1, _ := Expand(ctx, cfg)
	f, _ := os.OpenFile(out, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"id":"x99","pro`)
	f.Close()
	cfg.Count = 20
	sum, err := Expand(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	recs := readOutput(t, out)
	if len(recs) != 20 || sum.Resumed != sum1.Records || sum.Records != 20-sum1.Records {
		t.Fatalf("%d records; %+v then %+v", len(recs), sum1, sum)
	}
	seen := map[string]bool{}
	for i := 1; i <= 20; i++ {
		r := recs[fmt.Sprintf("x%d", i)]
		p := normalize(strings.Trim(r["prompt"].(string), ".!"))
		if seen[p] || strings.Contains(p, "haiku") {
			t.Fatalf("duplicate %q", p)
		}
		seen[p] = true
	}
	// Enough already: nothing to do.
	if sum, err := Expand(context.Background(), cfg); err != nil || sum.Records != 0 || sum.Resumed != 20 {
		t.Fatalf("%+v %v", sum, err)
	}
}

func TestExpandGivesUpOnRepeats(t *testing.T) {
	ts, _ := scripted(t, func(int64, string) string { return "1. Write a haiku about autumn leaves." })
	cfg := ExpandConfig{Client: client(ts.URL), Seeds: writeSeeds(t), Output: filepath.Join(t.TempDir(), "o"), Count: 3, MaxFailures: 2}
	if _, err := Expand(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "no new instruction") {
		t.Fatal(err)
	}
}

func TestExpandAgainstServe(t *testing.T) {
	ts := teacher(t)
	out := filepath.Join(t.TempDir(), "new.jsonl")
	// The demo model has 128 positions: short seeds and a short prompt.
	seeds := filepath.Join(t.TempDir(), "seeds.jsonl")
	os.WriteFile(seeds, []byte(`{"prompt":"Call me Ishmael."}`+"\n"+`{"prompt":"The white whale"}`+"\n"), 0o644)
	sum, err := Expand(context.Background(), ExpandConfig{Client: client(ts.URL), Seeds: seeds, Output: out, Count: 5,
		MaxTokens: 24, MinWords: 1, NearDup: 0.9, Concurrency: 2, Shown: 2, Prompt: "{examples}"})
	if err != nil {
		t.Fatal(err)
	}
	if recs := readOutput(t, out); len(recs) != 5 || sum.Records != 5 || sum.CompletionTokens == 0 {
		t.Fatalf("%d records, %+v", len(recs), sum)
	}
	t.Log(sum)
}

// TestExpandNearDupMeaning: --near-dup means what it means in curate: 0
// keeps near copies (exact duplicates only), a threshold drops them, and a
// negative one is refused.
func TestExpandNearDupMeaning(t *testing.T) {
	ts, _ := scripted(t, func(i int64, _ string) string {
		return fmt.Sprintf("1. Write a long and careful essay about the history of the printing press in Europe, version %d.", i)
	})
	run := func(nearDup float64) (Summary, error) {
		return Expand(context.Background(), ExpandConfig{Client: client(ts.URL), Seeds: writeSeeds(t), Output: filepath.Join(t.TempDir(), "o"),
			Count: 3, NearDup: nearDup, Concurrency: 1, MaxFailures: 1})
	}
	if sum, err := run(0); err != nil || sum.Records != 3 {
		t.Fatalf("near-dup 0 (exact duplicates only): %+v %v", sum, err)
	}
	if sum, err := run(0.5); err == nil || sum.Records != 1 {
		t.Fatalf("near-dup 0.5: %+v %v; want one kept, the near copies dropped", sum, err)
	}
	if _, err := run(-1); err == nil || !strings.Contains(err.Error(), "must be in [0, 1] (0: exact duplicates only)") {
		t.Fatalf("near-dup -1: %v", err)
	}
	if _, err := Curate(CurateConfig{Input: writeSeeds(t), Output: filepath.Join(t.TempDir(), "o"), NearDup: -1}); err == nil || !strings.Contains(err.Error(), "must be in [0, 1] (0: exact duplicates only)") {
		t.Fatalf("curate near-dup -1: %v", err)
	}
}
