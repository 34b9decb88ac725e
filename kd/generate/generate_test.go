package generate

import (
	"bytes"
	"context"
	"encoding/json"
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
