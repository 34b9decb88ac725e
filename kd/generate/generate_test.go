package generate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// demoModel copies the demo's teacher (a trained byte-level model) with its
// tokenizer into a folder.
func demoModel(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for src, dst := range map[string]string{
		"../demo/assets/teacher/config.json":             "config.json",
		"../demo/assets/teacher/model.safetensors":       "model.safetensors",
		"../demo/assets/tokenizer/tokenizer.json":        "tokenizer.json",
		"../demo/assets/tokenizer/tokenizer_config.json": "tokenizer_config.json",
	} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, dst), data, 0o644)
	}
	return dir
}

func TestGenerateWritesJSONL(t *testing.T) {
	dir := demoModel(t)
	prompts := filepath.Join(t.TempDir(), "prompts.jsonl")
	os.WriteFile(prompts, []byte(`{"prompt": "Call me Ishmael. "}`+"\n"+`{"prompt": "The whale "}`+"\n"), 0o644)
	out := filepath.Join(t.TempDir(), "out.jsonl")
	var log bytes.Buffer
	recs, err := Run(context.Background(), cpu.New(), Config{Model: dir, PromptFile: prompts, Template: "none", Samples: 2,
		Output: out, Params: model.GenerateParams{MaxTokens: 30, Temperature: 0, TopLogProbs: 2}}, &log)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 {
		t.Fatalf("%d records", len(recs))
	}
	// The response is the model's own greedy continuation, decoded.
	m, _ := model.LoadDir(dir, cpu.New())
	tok, _ := tokenizer.LoadDir(dir)
	g, _ := m.Generate(tok.Encode("Call me Ishmael. "), model.GenerateParams{MaxTokens: 30, StopTokens: []int32{tok.Special().EOS}})
	ids := g.Tokens
	if g.Finish == "stop" {
		ids = ids[:len(ids)-1]
	}
	if recs[0].Response != tok.Decode(ids) || !slices.Equal(recs[0].Tokens, g.Tokens) {
		t.Fatalf("response %q, model %q", recs[0].Response, tok.Decode(ids))
	}
	if len(recs[0].LogProbs) != len(recs[0].Tokens) || len(recs[0].TopLogProbs[0]) != 2 {
		t.Fatalf("logprobs %v top %v", recs[0].LogProbs, recs[0].TopLogProbs)
	}
	data, _ := os.ReadFile(out)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var first map[string]any
	if len(lines) != 4 || json.Unmarshal([]byte(lines[0]), &first) != nil || first["prompt"] != "Call me Ishmael. " || first["response"] == nil {
		t.Fatalf("output %s", data)
	}
	// Stop strings cut the response.
	stopRecs, err := Run(context.Background(), cpu.New(), Config{Model: dir, Prompts: []string{"Call me Ishmael. "}, Template: "none",
		StopStrings: []string{" "}, Params: model.GenerateParams{MaxTokens: 30}}, &log)
	if err != nil || strings.Contains(stopRecs[0].Response, " ") || stopRecs[0].Finish != "stop" {
		t.Fatalf("stop string: %+v, %v", stopRecs, err)
	}
	// A bad prompt line names its file and line.
	os.WriteFile(prompts, []byte(`{"prompt": "a"}`+"\n"+`{"text": 3}`+"\n"), 0o644)
	if _, err := Run(context.Background(), cpu.New(), Config{Model: dir, PromptFile: prompts, Template: "none",
		Params: model.GenerateParams{MaxTokens: 5}}, &log); err == nil || !strings.Contains(err.Error(), "prompts.jsonl:2") {
		t.Fatalf("bad line: %v", err)
	}
}

// TestGenerateBatchedMatchesGenerate: completions generated BatchSize at a
// time are those Generate gives each prompt alone (sample s with seed
// Seed+s), greedy and sampled, in prompt order.
func TestGenerateBatchedMatchesGenerate(t *testing.T) {
	dir := demoModel(t)
	m, _ := model.LoadDir(dir, cpu.New())
	tok, _ := tokenizer.LoadDir(dir)
	texts := []string{"Call me Ishmael. ", "The whale ", "It was the best of times, it was the worst of times, ", "a"}
	for _, p := range []model.GenerateParams{{MaxTokens: 40}, {MaxTokens: 25, Temperature: 0.9, TopP: 0.95, Seed: 5}} {
		recs, err := Run(context.Background(), cpu.New(), Config{Model: dir, Prompts: texts, Template: "none", Samples: 3, BatchSize: 4, Params: p}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != len(texts)*3 {
			t.Fatalf("%d records", len(recs))
		}
		for i, rec := range recs {
			q := p
			q.Seed += uint64(i % 3)
			q.StopTokens = []int32{tok.Special().EOS}
			g, err := m.Generate(tok.Encode(texts[i/3]), q)
			if err != nil {
				t.Fatal(err)
			}
			ids := g.Tokens
			if g.Finish == "stop" {
				ids = ids[:len(ids)-1]
			}
			if rec.Prompt != texts[i/3] || rec.Sample != i%3 || rec.Response != tok.Decode(ids) || rec.Finish != g.Finish {
				t.Fatalf("record %d (T=%g): %+v, Generate %q (%s)", i, p.Temperature, rec, tok.Decode(ids), g.Finish)
			}
		}
	}
}

// TestGenerateOutputResumes: --output gets each completion as soon as it
// is done (a run stopped after 3 has them in the file), a rerun keeps them,
// drops a half-written last line, and writes the rest: the file is then
// what one uninterrupted run writes. Progress has a rate and a time left,
// redrawn with \r only on a terminal.
func TestGenerateOutputResumes(t *testing.T) {
	dir := demoModel(t)
	prompts := filepath.Join(t.TempDir(), "prompts.jsonl")
	var lines []string
	for i := range 5 {
		lines = append(lines, fmt.Sprintf(`{"prompt": "Call me %d. "}`, i))
	}
	os.WriteFile(prompts, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	cfg := func(out string, progress io.Writer, term bool) Config {
		return Config{Model: dir, PromptFile: prompts, Template: "none", Samples: 2, BatchSize: 2, Output: out,
			Params: model.GenerateParams{MaxTokens: 20, Temperature: 0.8, Seed: 3}, Progress: progress, Terminal: term}
	}
	whole := filepath.Join(t.TempDir(), "whole.jsonl")
	if _, err := Run(context.Background(), cpu.New(), cfg(whole, nil, false), io.Discard); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(whole)

	out := filepath.Join(t.TempDir(), "out.jsonl")
	ctx, cancel := context.WithCancel(context.Background())
	afterWrite = func(n int) {
		if n == 3 {
			cancel()
		}
	}
	defer func() { afterWrite = nil }()
	var prog bytes.Buffer
	recs, err := Run(ctx, cpu.New(), cfg(out, &prog, true), io.Discard)
	afterWrite = nil
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped run: %v", err)
	}
	part, _ := os.ReadFile(out)
	n := bytes.Count(part, []byte("\n"))
	if n < 3 || n >= 10 || n != len(recs) || !bytes.HasPrefix(want, part) {
		t.Fatalf("a run stopped after 3 completions left %d lines (returned %d):\n%s", n, len(recs), part)
	}
	if !strings.Contains(prog.String(), "\r") || !strings.Contains(prog.String(), "left") {
		t.Fatalf("terminal progress %q", prog.String())
	}
	// A kill in the middle of a write leaves a torn line.
	f, _ := os.OpenFile(out, os.O_APPEND|os.O_WRONLY, 0o644)
	f.WriteString(`{"prompt":"Call me 4. ","respo`)
	f.Close()
	prog.Reset()
	recs, err = Run(context.Background(), cpu.New(), cfg(out, &prog, false), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) || len(recs) != 10-n {
		t.Fatalf("resumed output (%d new records):\n%s\nuninterrupted:\n%s", len(recs), got, want)
	}
	p := prog.String()
	if strings.Contains(p, "\r") || !strings.Contains(p, fmt.Sprintf("resuming %s: %d of 10", out, n)) || !strings.Contains(p, "generate: 10/10 completions (100%)") || !strings.Contains(p, "left") {
		t.Fatalf("progress %q", p)
	}
	// Done already: nothing is generated and the file stays.
	if recs, err := Run(context.Background(), cpu.New(), cfg(out, nil, false), io.Discard); err != nil || len(recs) != 0 {
		t.Fatalf("complete output rerun: %d records, %v", len(recs), err)
	}
	if got2, _ := os.ReadFile(out); !bytes.Equal(got2, want) {
		t.Fatal("a complete output changed on a rerun")
	}
}

// TestGenerateRefusesOtherOutput: an --output that holds something else —
// other prompts, another program's lines, a partial line that is no
// record — is an error naming the line, and the file is left as it was.
func TestGenerateRefusesOtherOutput(t *testing.T) {
	dir := demoModel(t)
	for _, c := range []struct{ content, says string }{
		{`{"prompt":"The whale ","response":"x","finish_reason":"length"}` + "\n", `out.jsonl:1: holds sample 0 of "The whale "`},
		{"name,age\nada,36\n", "out.jsonl:1: not a completion record"},
		{"notes without a newline", "out.jsonl:1: the file ends with a partial line that is not a completion record"},
		{`{"prompt":"Call me Ishmael. ","response":"x","finish_reason":"length"}` + "\n" + `{"prompt":"Call me Ishmael. ","sample":1}` + "\n", "more completions than"},
	} {
		out := filepath.Join(t.TempDir(), "out.jsonl")
		os.WriteFile(out, []byte(c.content), 0o644)
		_, err := Run(context.Background(), cpu.New(), Config{Model: dir, Prompts: []string{"Call me Ishmael. "}, Template: "none", Output: out,
			Params: model.GenerateParams{MaxTokens: 5}}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%q: %v, want an error saying %q", c.content, err, c.says)
		}
		if got, _ := os.ReadFile(out); string(got) != c.content {
			t.Errorf("%q: the file changed to %q", c.content, got)
		}
	}
}
