package train

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/elicit"
	"github.com/kdnative/kdnative/kd/serve"
	"github.com/kdnative/kdnative/model/tokenizer"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// copyFiles copies src/name to dst/name for each name.
func copyFiles(t *testing.T, src, dst string, names ...string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTrainOnLabelTopK: `elicit label --top-logprobs 5 --student-tokenizer
// <the teacher's tokenizer>` against the demo teacher (served as kdnative
// serve --template chatml serves it) writes records that objectives.kd
// takes as a sparse teacher as they are; they load into the examples of the
// equivalent pre-tokenized records — the ChatML rendering and the top-k
// placed by hand — and training on either gives the same losses, step by
// step. A record whose tokens do not match its text is refused, naming its
// line.
func TestTrainOnLabelTopK(t *testing.T) {
	dir := t.TempDir()
	teacherDir := filepath.Join(dir, "teacher")
	copyFiles(t, "../demo/assets/teacher", teacherDir, "config.json", "model.safetensors")
	copyFiles(t, "../demo/assets/tokenizer", teacherDir, "tokenizer.json", "tokenizer_config.json")
	// The student: a small random model with the teacher's tokenizer.
	student := filepath.Join(dir, "student")
	writeModel(t, student, 32, 2, 1)
	copyFiles(t, teacherDir, student, "tokenizer.json", "tokenizer_config.json")

	s, err := serve.New(cpu.New(), serve.Config{Model: teacherDir, ModelName: "demo", Template: "chatml", MaxQueue: 64})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	defer func() { ts.Close(); s.Close() }()
	var pb strings.Builder
	for i := range 12 {
		fmt.Fprintf(&pb, "{\"prompt\":\"Call me Ishmael, %d.\"}\n", i)
	}
	prompts := filepath.Join(dir, "prompts.jsonl")
	os.WriteFile(prompts, []byte(pb.String()), 0o644)
	labelled := filepath.Join(dir, "label.jsonl")
	temp, seed := 1.0, int64(5)
	if _, err := elicit.Label(context.Background(), elicit.LabelConfig{Client: &elicit.Client{BaseURL: ts.URL + "/v1", Model: "demo", Timeout: 30 * time.Second},
		Prompts: prompts, Output: labelled, Temperature: &temp, Seed: &seed, MaxTokens: 60, TopLogprobs: 5, StudentTokenizer: teacherDir, Concurrency: 2}); err != nil {
		t.Fatal(err)
	}

	// The equivalent pre-tokenized records, by hand: ChatML around the
	// prompt, the teacher's tokens as the answer (then <|im_end|> "\n"
	// unless cut at the length limit), entry i of the top-k at answer token i.
	tok, err := tokenizer.LoadDir(student)
	if err != nil {
		t.Fatal(err)
	}
	imEnd, _ := tok.TokenID("<|im_end|>")
	type entry struct {
		Logprob float64 `json:"logprob"`
		ID      *int32  `json:"id"`
	}
	f, _ := os.Open(labelled)
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	var pre strings.Builder
	for sc.Scan() {
		var r struct {
			Prompt, Response string
			Finish           string    `json:"finish_reason"`
			Tokens           []entry   `json:"teacher_tokens"`
			Top              [][]entry `json:"teacher_top_logprobs"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(r.Response) == "" {
			continue // an empty answer: train skips it
		}
		ids := tok.Encode("<|im_start|>user\n" + r.Prompt + "<|im_end|>\n<|im_start|>assistant\n")
		labels := make([]int32, len(ids))
		for i := range labels {
			labels[i] = -100
		}
		topIDs, topLPs := make([]any, len(ids)), make([]any, len(ids))
		for i, e := range r.Tokens {
			if e.ID == nil || *e.ID < 0 {
				t.Fatalf("%q: token %d unmapped: the demo tokenizer maps every token to itself", r.Response, i)
			}
			ids, labels = append(ids, *e.ID), append(labels, *e.ID)
			var a []int32
			var b []float64
			for _, alt := range r.Top[i] {
				a, b = append(a, *alt.ID), append(b, alt.Logprob)
			}
			topIDs, topLPs = append(topIDs, a), append(topLPs, b)
		}
		if r.Finish != "length" {
			nl := tok.Encode("\n")
			ids, labels = append(append(ids, imEnd), nl...), append(append(labels, imEnd), nl...)
			for range 1 + len(nl) {
				topIDs, topLPs = append(topIDs, nil), append(topLPs, nil)
			}
		}
		line, _ := json.Marshal(map[string]any{"input_ids": ids, "labels": labels, "teacher_topk_ids": topIDs, "teacher_topk_logprobs": topLPs})
		pre.Write(append(line, '\n'))
	}
	f.Close()
	pretok := filepath.Join(dir, "pretokenized.jsonl")
	os.WriteFile(pretok, []byte(pre.String()), 0o644)

	// Loaded: the same examples.
	opt := data.Options{MaxLen: 96, Template: "chatml", Vocab: 259}
	got, _, rep, err := data.LoadSFT(labelled, tok, opt)
	if err != nil {
		t.Fatal(err)
	}
	want, _, _, err := data.LoadSFT(pretok, nil, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < 8 || !reflect.DeepEqual(got, want) {
		t.Fatalf("%d examples from label records (%s) differ from the %d pre-tokenized", len(got), rep.String(), len(want))
	}

	// Trained: the same losses.
	train := func(path, name string) (*Summary, []string) {
		r := DefaultRecipe()
		r.Student, r.Output = student, filepath.Join(dir, name)
		r.Data.Train, r.Data.MaxLen, r.Data.ValFraction, r.Data.Template = path, 96, 0.25, "chatml"
		r.Optim.LR, r.Optim.WeightDecay = 3e-3, 0
		r.Schedule.Kind = "constant"
		r.BatchSize, r.MaxSteps, r.LogEvery, r.EvalEvery, r.Seed = 2, 6, 1, 3, 3
		r.Objectives.KD = &KDTerm{Weight: 1, Divergence: "forward_kl", Temperature: 1}
		sum, log := run(t, r, false)
		m, err := os.ReadFile(filepath.Join(r.Output, "metrics.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		var losses []string
		for _, line := range strings.Split(strings.TrimSpace(string(m)), "\n") {
			var e map[string]any
			json.Unmarshal([]byte(line), &e)
			delete(e, "time")
			delete(e, "elapsed_s")
			delete(e, "tokens_per_s")
			delete(e, "step_s") // wall time
			b, _ := json.Marshal(e)
			losses = append(losses, string(b))
		}
		if !strings.Contains(log, "sparse") && !sum.Before.HasKL {
			t.Fatalf("%s: no sparse teacher\n%s", name, log)
		}
		return sum, losses
	}
	s1, m1 := train(labelled, "from-label")
	s2, m2 := train(pretok, "from-pretokenized")
	if s1.Before != s2.Before || s1.After != s2.After {
		t.Errorf("validation: label records %+v → %+v, pre-tokenized %+v → %+v", s1.Before, s1.After, s2.Before, s2.After)
	}
	if len(m1) < 6 || !reflect.DeepEqual(m1, m2) {
		t.Errorf("metrics differ:\n%s\nvs\n%s", strings.Join(m1, "\n"), strings.Join(m2, "\n"))
	}
	if !s1.After.HasKL || !(s1.After.KL < s1.Before.KL) {
		t.Errorf("KL to the sparse teacher %.4f → %.4f did not fall", s1.Before.KL, s1.After.KL)
	}
	t.Logf("label records: %s; KL to the sparse teacher %.4f → %.4f", rep.String(), s1.Before.KL, s1.After.KL)

	// A record whose tokens do not match its text is refused, by line.
	b, _ := os.ReadFile(labelled)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	bad, first := -1, ""
	for i, l := range lines {
		var m map[string]any
		json.Unmarshal([]byte(l), &m)
		toks, _ := m["teacher_tokens"].([]any)
		if len(toks) < 2 {
			continue
		}
		first = toks[0].(map[string]any)["token"].(string)
		toks[0].(map[string]any)["id"] = float64(imEnd) // not the answer's first token
		nb, _ := json.Marshal(m)
		lines[i], bad = string(nb), i+1
		break
	}
	badPath := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(badPath, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	r := DefaultRecipe()
	r.Student, r.Output = student, filepath.Join(dir, "bad-run")
	r.Data.Train, r.Data.MaxLen, r.Data.Template, r.Data.OnBadLine, r.MaxSteps = badPath, 96, "chatml", "stop", 1
	r.Objectives.KD = &KDTerm{Weight: 1, Divergence: "forward_kl", Temperature: 1}
	_, err = Run(context.Background(), cpu.New(), r, Options{Log: &strings.Builder{}})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("bad.jsonl:%d: teacher token 0 (%q) has id %d, which is not that text's id", bad, first, imEnd)) {
		t.Fatalf("a record whose tokens do not match: %v", err)
	}
}
