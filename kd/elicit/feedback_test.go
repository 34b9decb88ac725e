package elicit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/model/tokenizer"
)

func TestParseJudgement(t *testing.T) {
	for text, want := range map[string]int{"2": 2, "Response 3 is best.": 3, "none": 0, "7": 0, "0": 0} {
		if got := parseJudgement(text, 3); got != want {
			t.Errorf("%q: %d, want %d", text, got, want)
		}
	}
}

func TestFeedback(t *testing.T) {
	// The judge prefers the response containing "good"; on prompt "?" it
	// rambles.
	re := regexp.MustCompile(`Response (\d+):\n([^\n]*)`)
	ts, _ := scripted(t, func(_ int64, prompt string) string {
		if strings.Contains(prompt, "Prompt:\n?\n") {
			return "I cannot decide."
		}
		for _, m := range re.FindAllStringSubmatch(prompt, -1) {
			if strings.Contains(m[2], "good") {
				return "Response " + m[1]
			}
		}
		return "?"
	})
	in := filepath.Join(t.TempDir(), "cands.jsonl")
	os.WriteFile(in, []byte(`{"prompt":"a","responses":["bad a1","good a","bad a2"]}
{"prompt":"?","responses":["x","y"]}
not json
{"prompt":"b","response":"bad b"}
{"prompt":"c","responses":["only one"]}
{"prompt":"b","response":"good b"}
`), 0o644)
	out := filepath.Join(t.TempDir(), "pairs.jsonl")
	cfg := FeedbackConfig{Client: client(ts.URL), Input: in, Output: out}
	sum, err := Feedback(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	recs := readOutput(t, out)
	if len(recs) != 3 || sum.Records != 3 || sum.Unparsed != 1 || sum.BadLines != 2 {
		t.Fatalf("%+v %v", sum, recs)
	}
	for id, want := range map[string][2]string{"f1.r0": {"good a", "bad a1"}, "f1.r2": {"good a", "bad a2"}, "f4.r0": {"good b", "bad b"}} {
		if r := recs[id]; r == nil || r["chosen"] != want[0] || r["rejected"] != want[1] {
			t.Fatalf("%s: %v", id, r)
		}
	}
	// kdnative train's DPO loader reads the pairs.
	tok, err := tokenizer.LoadDir(demoModel(t))
	if err != nil {
		t.Fatal(err)
	}
	if train, _, rep, err := data.LoadPairs(out, tok, data.Options{Template: "chatml", MaxLen: 512}); err != nil || len(train) != 3 {
		t.Fatalf("LoadPairs: %d %+v %v", len(train), rep, err)
	}
	// A second run asks only about the unjudged prompt.
	sum, err = Feedback(context.Background(), cfg)
	if err != nil || sum.Records != 0 || sum.Resumed != 2 || sum.Unparsed != 1 || len(readOutput(t, out)) != 3 {
		t.Fatalf("rerun: %+v %v", sum, err)
	}
}

func TestFeedbackAgainstServe(t *testing.T) {
	ts := teacher(t)
	in := filepath.Join(t.TempDir(), "cands.jsonl")
	var b strings.Builder
	for i := range 4 {
		fmt.Fprintf(&b, `{"prompt":"Whale %d?","responses":["Yes.","No.","Ahab."]}`+"\n", i)
	}
	os.WriteFile(in, []byte(b.String()), 0o644)
	out := filepath.Join(t.TempDir(), "pairs.jsonl")
	sum, err := Feedback(context.Background(), FeedbackConfig{Client: client(ts.URL), Input: in, Output: out, MaxTokens: 2, Prompt: "{prompt}\n{responses}Best:"})
	if err != nil || sum.Failures != 0 || sum.Records+2*sum.Unparsed != 8 || sum.CompletionTokens == 0 {
		t.Fatalf("%+v %v", sum, err)
	}
	t.Log(sum)
}
