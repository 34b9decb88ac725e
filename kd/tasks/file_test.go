package tasks

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// parseLine parses one example line as Load would (no header).
func parseLine(line string) (*Example, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &obj); err != nil {
		return nil, err
	}
	return parseExample(obj)
}

func writeTask(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "task.jsonl")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadHeaderAndDefaults(t *testing.T) {
	p := writeTask(t,
		`{"task": "arith", "description": "sums", "defaults": {"kind": "generate", "score": "numeric", "max_tokens": 8, "delimiter": "\n"}}`,
		``,
		`{"id": "a", "prompt": "1+1=", "answer": 2}`,
		`{"prompt": "2+2=", "answer": "4", "max_tokens": 3}`,
		`{"kind": "choice", "context": "1+1=", "choices": ["2", "3"], "answer": "2"}`,
	)
	task, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if task.Name != "arith" || task.Description != "sums" || len(task.Examples) != 3 {
		t.Fatalf("task %q %q with %d examples", task.Name, task.Description, len(task.Examples))
	}
	a, b, c := task.Examples[0], task.Examples[1], task.Examples[2]
	if a.ID != "a" || a.Kind != KindGenerate || a.Score != ScoreNumeric || a.MaxTokens != 8 || a.Numbers[0] != 2 || a.Line != 3 {
		t.Errorf("first example %+v", a)
	}
	if b.ID != "line-4" || b.MaxTokens != 3 || b.Numbers[0] != 4 {
		t.Errorf("second example %+v", b)
	}
	// The choice line takes the kind's own default (delimiter), not generate's.
	if c.Kind != KindChoice || c.Gold != 0 || c.Delimiter != "\n" {
		t.Errorf("choice example %+v", c)
	}
}

// TestLoadRefusesBadLines: every kind of bad line is refused before
// anything runs, with the file and line and what is wrong.
func TestLoadRefusesBadLines(t *testing.T) {
	good := `{"kind": "generate", "prompt": "q", "answer": "a"}`
	cases := []struct {
		line, want string
	}{
		{`{"kind": "classify", "text": "x"}`, `unknown kind "classify"`},
		{`{"prompt": "q", "answer": "a"}`, `missing "kind"`},
		{`{"kind": "generate", "answer": "a"}`, `missing "prompt"`},
		{`{"kind": "generate", "prompt": "q"}`, `missing "answer"`},
		{`{"kind": "generate", "prompt": "q", "anwser": "a", "answer": "a"}`, `unknown field "anwser" for kind generate`},
		{`{"kind": "generate", "prompt": "q", "answer": "a", "extract": "(\\d+"}`, `not a valid regular expression`},
		{`{"kind": "generate", "prompt": "q", "answer": "a", "extract": "(a)(b)"}`, `has 2 groups`},
		{`{"kind": "generate", "prompt": "q", "answer": "seven", "score": "numeric"}`, `answer "seven" is not a number`},
		{`{"kind": "generate", "prompt": "q", "answer": "a", "score": "fuzzy"}`, `unknown score "fuzzy"`},
		{`{"kind": "generate", "prompt": "q", "score": "judge"}`, `missing "rubric"`},
		{`{"kind": "generate", "prompt": "q", "answer": "a", "n": 4}`, `need a "temperature" above 0`},
		{`{"kind": "generate", "prompt": "q", "answer": "a", "n": 4, "temperature": 0.8, "pass_at": [5]}`, `"pass_at" 5 must be in [1, n = 4]`},
		{`{"kind": "generate", "prompt": "q", "messages": [], "answer": "a"}`, `not both`},
		{`{"kind": "generate", "messages": [{"role": "bot", "content": "hi"}], "answer": "a"}`, `role "bot"`},
		{`{"kind": "generate", "prompt": "q", "answer": "a", "normalize": "latex"}`, `unknown normalize "latex"`},
		{`{"kind": "generate", "prompt": "q", "answer": "a", "max_tokens": 0}`, `"max_tokens" 0 must be ≥ 1`},
		{`{"kind": "choice", "context": "c", "choices": ["x"], "answer": 0}`, `two or more strings`},
		{`{"kind": "choice", "context": "c", "choices": ["x", "y"], "answer": 2}`, `"answer" 2 is not an index`},
		{`{"kind": "choice", "context": "c", "choices": ["x", "y"], "answer": "z"}`, `"answer" "z" is not one of`},
		{`{"kind": "choice", "choices": ["x", "y"], "answer": 0}`, `missing "context"`},
		{`{"kind": "perplexity", "text": ""}`, `"text" is empty`},
		{`{"kind": "perplexity"}`, `missing "text"`},
		{`{"kind": "perplexity", "text": 5}`, `"text" must be a string`},
		{`[1, 2]`, `not a JSON object`},
		{`{"kind": "perplexity", "text": "x"`, `not a JSON object`},
		{`{"id": "line-1", "kind": "perplexity", "text": "x"}`, `id "line-1" is already used on line 1`},
	}
	for _, c := range cases {
		p := writeTask(t, good, c.line)
		_, err := Load(p)
		if err == nil {
			t.Errorf("%s: loaded", c.line)
			continue
		}
		if !strings.HasPrefix(err.Error(), p+":2: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got %v\nwant %s:2: …%s…", c.line, err, p, c.want)
		}
	}
	// A bad header names line 1; a file without examples is refused.
	for _, c := range []struct{ lines []string }{
		{[]string{`{"task": "", "defaults": {}}`, good}},
		{[]string{`{"task": "t", "defaults": {"answr": 1}}`, good}},
		{[]string{`{"task": "t", "extra": 1}`, good}},
	} {
		if _, err := Load(writeTask(t, c.lines...)); err == nil || !strings.Contains(err.Error(), ":1: header line") {
			t.Errorf("%v: %v", c.lines, err)
		}
	}
	if _, err := Load(writeTask(t, `{"task": "t"}`)); err == nil || !strings.Contains(err.Error(), "no examples") {
		t.Errorf("empty task: %v", err)
	}
}

// TestLoadLongLine: a line past the 64 MiB limit is an error naming the file
// and the line, not bufio's "token too long".
func TestLoadLongLine(t *testing.T) {
	good := `{"kind": "perplexity", "text": "x"}`
	long := `{"kind": "perplexity", "text": "` + strings.Repeat("a", 64<<20) + `"}`
	p := writeTask(t, good, "", long, good)
	_, err := Load(p)
	if err == nil || !strings.HasPrefix(err.Error(), p+":3: ") || !strings.Contains(err.Error(), "longer than 64 MiB") {
		t.Fatalf("got %v, want %s:3: … longer than 64 MiB", err, p)
	}
}
