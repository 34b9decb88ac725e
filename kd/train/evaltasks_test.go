package train

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/runtime/cpu"
)

// writeEvalTasks writes a choice task (the world's responses against their
// reversals: a student that learns the data prefers the real text), a
// perplexity task and a generate task.
func writeEvalTasks(t *testing.T, dir string) (choice, ppl, gen string) {
	t.Helper()
	var c, p strings.Builder
	c.WriteString(`{"task": "learned", "defaults": {"kind": "choice", "delimiter": ""}}` + "\n")
	for i, s := range sentences {
		rev := []rune(s)
		for a, b := 0, len(rev)-1; a < b; a, b = a+1, b-1 {
			rev[a], rev[b] = rev[b], rev[a]
		}
		line, _ := json.Marshal(map[string]any{"context": fmt.Sprintf("%d: ", i), "choices": []string{string(rev), s}, "answer": 1})
		c.Write(append(line, '\n'))
		line, _ = json.Marshal(map[string]any{"kind": "perplexity", "text": s})
		p.Write(append(line, '\n'))
	}
	choice, ppl, gen = filepath.Join(dir, "learned.jsonl"), filepath.Join(dir, "ppl.jsonl"), filepath.Join(dir, "gen.jsonl")
	os.WriteFile(choice, []byte(c.String()), 0o644)
	os.WriteFile(ppl, []byte(p.String()), 0o644)
	os.WriteFile(gen, []byte(`{"kind": "generate", "prompt": "0: ", "answer": "whale", "score": "contains", "max_tokens": 16}`+"\n"+
		`{"kind": "generate", "prompt": "1: ", "answer": "ishmael", "score": "contains", "max_tokens": 16}`+"\n"), 0o644)
	return choice, ppl, gen
}

// TestEvalTasksInTraining: eval_tasks run at step 0, every eval_every steps
// and at the end, into metrics.jsonl (value and interval) and tasks.png; the
// choice accuracy follows what the student learns.
func TestEvalTasksInTraining(t *testing.T) {
	w := newWorld(t)
	choice, ppl, gen := writeEvalTasks(t, w.dir)
	r := w.recipe(filepath.Join(w.dir, "run"))
	r.Objectives.SFT = &SFTTerm{Weight: 1}
	r.EvalEvery = 10
	r.Data.ValFraction = 0
	r.Data.Val = w.sft
	r.EvalTasks = []EvalTask{{File: choice}, {File: ppl}, {File: gen, MaxExamples: 1}}
	_, log := run(t, r, false)
	f, err := os.Open(filepath.Join(r.Output, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type metric struct {
		Value, Lo, Hi float64
		N             int
	}
	acc := map[int]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct {
			Step  int                                      `json:"step"`
			Tasks map[string]map[string]map[string]float64 `json:"tasks"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Tasks == nil {
			continue
		}
		a := rec.Tasks["learned"]["acc"]
		if a["n"] != 12 || !(a["ci_lo"] <= a["value"] && a["value"] <= a["ci_hi"]) {
			t.Errorf("step %d: acc %v", rec.Step, a)
		}
		if b := rec.Tasks["ppl"]["bits_per_byte"]; !(b["value"] > 0) {
			t.Errorf("step %d: bits_per_byte %v", rec.Step, b)
		}
		if g := rec.Tasks["gen"]["accuracy"]; g["n"] != 1 {
			t.Errorf("step %d: generate accuracy %v (max_examples 1)", rec.Step, g)
		}
		acc[rec.Step] = a["value"]
	}
	if len(acc) != 3 {
		t.Fatalf("task evaluations at steps %v, want 0, 10 and 20\n%s", acc, log)
	}
	if !(acc[20] >= 0.9) || !(acc[20] > acc[0]) {
		t.Errorf("acc %v → %v: the student learned the data, the choice task should show it\n%s", acc[0], acc[20], log)
	}
	if !strings.Contains(log, "step 20: learned (12 examples): acc ") {
		t.Errorf("log:\n%s", log)
	}
	t.Logf("acc by step: %v", acc)
	pf, err := os.Open(filepath.Join(r.Output, "tasks.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	img, err := png.Decode(pf)
	if d := os.Getenv("KEEP_TASKS_PNG"); d != "" {
		data, _ := os.ReadFile(filepath.Join(r.Output, "tasks.png"))
		os.WriteFile(d, data, 0o644)
	}
	if err != nil || img.Bounds().Dx() != 800 || img.Bounds().Dy() != 3*240 {
		t.Fatalf("tasks.png: %v %v", err, img.Bounds())
	}
}

// TestEvalTasksRefusedBeforeTraining: a bad task line or a judged task
// stops the run before its first step, naming the recipe key and the line.
func TestEvalTasksRefusedBeforeTraining(t *testing.T) {
	w := newWorld(t)
	bad := filepath.Join(w.dir, "bad.jsonl")
	os.WriteFile(bad, []byte(`{"kind": "perplexity", "text": "ok"}`+"\n"+`{"kind": "choice", "context": "x", "choices": ["a"], "answer": 0}`+"\n"), 0o644)
	judged := filepath.Join(w.dir, "judged.jsonl")
	os.WriteFile(judged, []byte(`{"kind": "generate", "prompt": "x", "score": "judge", "rubric": "r"}`+"\n"), 0o644)
	for _, c := range []struct {
		tasks []EvalTask
		want  string
	}{
		{[]EvalTask{{File: bad}}, "eval_tasks[0]: " + bad + ":2: "},
		{[]EvalTask{{File: judged}}, "eval_tasks[0]: " + judged + ":1 is scored by a judge"},
		{[]EvalTask{{File: ""}}, "eval_tasks[0].file: required"},
		{[]EvalTask{{File: bad + "x", MaxExamples: -1}}, "eval_tasks[0].max_examples: -1"},
	} {
		r := w.recipe(filepath.Join(w.dir, "never"))
		r.Objectives.SFT = &SFTTerm{Weight: 1}
		r.EvalTasks = c.tasks
		_, err := Run(context.Background(), cpu.New(), r, Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want …%s…", c.tasks, err, c.want)
		}
		if _, err := os.Stat(r.Output); !os.IsNotExist(err) {
			t.Errorf("%v: the run made its output folder", c.tasks)
		}
	}
}

// TestEvalTasksRecipeForms: eval_tasks entries are a file or a mapping.
func TestEvalTasksRecipeForms(t *testing.T) {
	r, err := LoadRecipe(writeRecipe(t, goodRecipe+"eval_tasks:\n  - examples/tasks/arith.jsonl\n  - {file: examples/tasks/moby-order.jsonl, max_examples: 20}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []EvalTask{{File: "examples/tasks/arith.jsonl"}, {File: "examples/tasks/moby-order.jsonl", MaxExamples: 20}}
	if fmt.Sprint(r.EvalTasks) != fmt.Sprint(want) {
		t.Errorf("%v", r.EvalTasks)
	}
	if err := r.Set("eval_tasks=[{file: t.jsonl, max_exampels: 3}]"); err == nil || !strings.Contains(err.Error(), "max_exampels") {
		t.Errorf("misspelt key: %v", err)
	}
}
