package train

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodRecipe = `
student: models/student
teacher: models/teacher
data:
  train: data/train.jsonl
  max_len: 128
objectives:
  sft: {weight: 0.3}
  kd: {weight: 0.7, divergence: jsd, beta: 0.5, temperature: 2}
optim:
  lr: 3.0e-4
batch_size: 4
max_steps: 100
output: runs/demo
`

func writeRecipe(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "recipe.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadRecipe(t *testing.T) {
	r, err := LoadRecipe(writeRecipe(t, goodRecipe))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if r.Data.MaxLen != 128 || r.Optim.LR != 3e-4 || r.Objectives.KD.Beta != 0.5 || r.Objectives.SFT.Weight != 0.3 {
		t.Fatalf("decoded %+v", r)
	}
	// Defaults survive where the file is silent.
	if r.Optim.Beta2 != 0.999 || r.Data.Overflow != "truncate" || r.GradAccum != 1 {
		t.Fatalf("defaults lost: %+v", r)
	}
	kd, err := r.Objectives.KD.Config()
	if err != nil || kd.Temperature != 2 || kd.NoTSquared {
		t.Fatalf("kd config %+v, %v", kd, err)
	}
}

func TestRecipeErrors(t *testing.T) {
	cases := []struct {
		text string
		want string
	}{
		{goodRecipe + "learning_rate: 0.1\n", "line 15: field learning_rate not found"},
		{strings.Replace(goodRecipe, "max_len: 128", "max_lenght: 128", 1), "field max_lenght not found"},
		{strings.Replace(goodRecipe, "batch_size: 4", "batch_size: four", 1), "cannot unmarshal !!str `four` into int"},
		{strings.Replace(goodRecipe, "lr: 3.0e-4", "lr: [1, 2]", 1), "line 11: cannot unmarshal !!seq into float64"},
		{"student: [\n", "did not find expected"},
	}
	for _, c := range cases {
		p := writeRecipe(t, c.text)
		_, err := LoadRecipe(p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("error %v, want it to name %s and mention %q", err, p, c.want)
		}
	}
	if _, err := LoadRecipe(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestRecipeValidate(t *testing.T) {
	r, _ := LoadRecipe(writeRecipe(t, goodRecipe))
	r.Optim.LR = -1
	r.Data.Overflow = "wrap"
	r.Objectives.KD.Temperature = -2
	r.Objectives.KD.Divergence = "kl"
	r.Schedule.Kind = "step"
	err := r.Validate()
	for _, want := range []string{"optim.lr: -1 must be positive", `data.overflow: "wrap" is not one of`, `objectives.kd: unknown divergence "kl"`, `schedule.kind: "step"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate: %v, want %q", err, want)
		}
	}
	// data.template: the model's own, a template file, or a hand-written one.
	for tpl, ok := range map[string]bool{"auto": true, "jinja": true, "chat/llama3.jinja": true, "qwen3": true, "chatml": true, "none": true, "llama3": false} {
		r, _ := LoadRecipe(writeRecipe(t, goodRecipe))
		r.Data.Template = tpl
		err := r.Validate()
		if (err == nil) != ok || (!ok && !strings.Contains(err.Error(), "data.template")) {
			t.Errorf("data.template %q: %v", tpl, err)
		}
	}
	empty := DefaultRecipe()
	err = empty.Validate()
	for _, want := range []string{"student: required", "data.train: required", "objectives: at least one", "output: required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("empty recipe: %v, want %q", err, want)
		}
	}
}

func TestRecipeSet(t *testing.T) {
	r, _ := LoadRecipe(writeRecipe(t, goodRecipe))
	for _, kv := range []string{"optim.lr=0.002", "objectives.kd.temperature=4", "data.pack=true", "objectives.dpo.beta=0.2", "output=runs/other"} {
		if err := r.Set(kv); err != nil {
			t.Fatal(err)
		}
	}
	if r.Optim.LR != 0.002 || r.Objectives.KD.Temperature != 4 || !r.Data.Pack || r.Output != "runs/other" {
		t.Fatalf("after --set: %+v", r)
	}
	if r.Objectives.KD.Beta != 0.5 || r.Objectives.KD.Divergence != "jsd" {
		t.Fatalf("--set of one kd field lost the others: %+v", *r.Objectives.KD)
	}
	if r.Objectives.DPO == nil || r.Objectives.DPO.Beta != 0.2 {
		t.Fatalf("--set did not switch dpo on: %+v", r.Objectives.DPO)
	}
	for kv, want := range map[string]string{
		"optim.learning_rate=1": "field learning_rate not found",
		"batch_size=big":        "cannot unmarshal",
		"nokey":                 "want key=value",
	} {
		if err := r.Set(kv); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: %v, want %q", kv, err, want)
		}
	}
	keys := strings.Join(Keys(), " ")
	for _, k := range []string{"optim.lr", "data.max_len", "objectives.kd.temperature", "objectives.dpo.gamma", "schedule.warmup_steps"} {
		if !strings.Contains(keys, k) {
			t.Errorf("Keys() lacks %s", k)
		}
	}
}

func TestSchedule(t *testing.T) {
	s := ScheduleRecipe{Kind: "cosine", WarmupSteps: 10, MinLRRatio: 0.1}
	for _, c := range []struct {
		step int
		want float64
	}{{1, 0.1}, {10, 1}, {55, 0.1 + 0.9*0.5}, {100, 0.1}} {
		if got := s.LR(1, c.step, 100); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("cosine step %d: %g, want %g", c.step, got, c.want)
		}
	}
	s.Kind = "linear"
	if got := s.LR(2, 55, 100); math.Abs(got-2*(0.1+0.9*0.5)) > 1e-12 {
		t.Errorf("linear: %g", got)
	}
	s.Kind = "constant"
	if got := s.LR(2, 70, 100); got != 2 {
		t.Errorf("constant: %g", got)
	}
}
