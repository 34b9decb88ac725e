package tasks

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	"github.com/kdnative/kdnative/runtime/cpu"
)

func fixtureModel(t *testing.T) (*model.Model, *tokenizer.Tokenizer) {
	t.Helper()
	dir := filepath.Join("testdata", "harness", "model")
	m, err := model.LoadDir(dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m, tok
}

// TestGenerateIndependentOfBatching: sample i of a task draws with seed
// Seed+i whatever the batch size, and each sample is what Generate gives for
// its prompt alone with that seed (decoded, cut at the stop string).
func TestGenerateIndependentOfBatching(t *testing.T) {
	m, tok := fixtureModel(t)
	p := writeTask(t,
		`{"task": "gen", "defaults": {"kind": "generate", "score": "contains", "max_tokens": 12}}`,
		`{"prompt": "The cat sat on the", "answer": "mat", "n": 3, "temperature": 0.9}`,
		`{"prompt": "Paris is the capital of", "answer": "France", "n": 2, "temperature": 0.9, "top_p": 0.8}`,
		`{"prompt": "Two plus two is", "answer": "four", "stop": ["."]}`,
		`{"prompt": "The ship", "answer": "east"}`,
	)
	task, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	var first []map[string]any
	for _, bs := range []int{1, 2, 4, 16} {
		res, err := Evaluate(context.Background(), m, tok, task, Options{BatchSize: bs, Seed: 40})
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = res.Records
			continue
		}
		for i := range first {
			a, b := first[i]["samples"].([]Sample), res.Records[i]["samples"].([]Sample)
			if !slices.Equal(a, b) {
				t.Errorf("batch %d, example %d: %+v, batch 1 gave %+v", bs, i, b, a)
			}
		}
	}
	// Against Generate alone: row i of the task has seed 40+i.
	row := 0
	for i, ex := range task.Examples {
		ids := tok.Encode(*ex.Prompt)
		for s, got := range first[i]["samples"].([]Sample) {
			gp := model.GenerateParams{MaxTokens: 12, Temperature: ex.Temperature, Seed: 40 + uint64(row), StopTokens: []int32{tok.Special().EOS}}
			if ex.TopP < 1 {
				gp.TopP = ex.TopP
			}
			g, err := m.Generate(ids, gp)
			if err != nil {
				t.Fatal(err)
			}
			toks := g.Tokens
			if g.Finish == "stop" {
				toks = toks[:len(toks)-1]
			}
			want := tok.Decode(toks)
			if len(ex.Stop) > 0 {
				if c := strings.Index(want, ex.Stop[0]); c >= 0 {
					want = want[:c]
				}
			}
			if got.Output != want {
				t.Errorf("example %d sample %d: %q, Generate alone %q", i, s, got.Output, want)
			}
			row++
		}
	}
	// The sampled examples' samples differ from one another (seeds advance).
	if s := first[0]["samples"].([]Sample); s[0].Output == s[1].Output && s[1].Output == s[2].Output {
		t.Errorf("three samples at temperature 0.9 are all %q", s[0].Output)
	}
}

// TestGenerateFitsPositions: an answer longer than the model's positions is
// clamped to half of them and a prompt that leaves too little room keeps its
// last tokens, and both are noted.
func TestGenerateFitsPositions(t *testing.T) {
	m, tok := fixtureModel(t) // 64 positions
	long := strings.Repeat("The cat sat on the mat. ", 20)
	p := writeTask(t,
		`{"kind": "generate", "prompt": "`+long+`", "answer": "x", "max_tokens": 16}`,
		`{"kind": "generate", "prompt": "Hi", "answer": "x", "max_tokens": 500}`,
	)
	task, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Evaluate(context.Background(), m, tok, task, Options{})
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(res.Notes, "\n")
	if !strings.Contains(notes, "1 prompts were cut") || !strings.Contains(notes, "answers were cut to 32 tokens") {
		t.Errorf("notes: %s", notes)
	}
}
