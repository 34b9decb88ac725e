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

// TestRecipeErrors: what is wrong in a recipe file is said in the recipe's
// terms (the key path, what was expected, what was there), with the file and
// line, not in yaml's Go terms ("field max_lenn not found in type
// train.DataRecipe", "cannot unmarshal !!str `eight` into int").
func TestRecipeErrors(t *testing.T) {
	cases := []struct {
		text string
		want string // after "recipe <file>:"
	}{
		{goodRecipe + "learning_rate: 0.1\n", "15: unknown key learning_rate (the keys at the top level are student, teacher,"},
		{strings.Replace(goodRecipe, "max_len: 128", "max_lenn: 128", 1), "6: unknown key data.max_lenn (did you mean max_len?)"},
		{strings.Replace(goodRecipe, "max_len: 128", "max_lenght: 128", 1), "6: unknown key data.max_lenght (did you mean max_len?)"},
		{goodRecipe + "max_len: 64\n", "15: unknown key max_len (did you mean data.max_len?)"},
		{strings.Replace(goodRecipe, "max_len: 128", "max_len: eight", 1), `6: data.max_len: expected an integer, got "eight"`},
		{strings.Replace(goodRecipe, "batch_size: 4", "batch_size: four", 1), `12: batch_size: expected an integer, got "four"`},
		{strings.Replace(goodRecipe, "batch_size: 4", "batch_size: 2.5", 1), `12: batch_size: expected an integer, got "2.5"`},
		{strings.Replace(goodRecipe, "lr: 3.0e-4", "lr: [1, 2]", 1), "11: optim.lr: expected a number, got a list"},
		{strings.Replace(goodRecipe, "lr: 3.0e-4", "lr: .inf", 1), "11: optim.lr: expected a finite number, got .inf"},
		{strings.Replace(goodRecipe, "beta: 0.5", "beta: .nan", 1), "9: objectives.kd.beta: expected a finite number, got .nan"},
		{strings.Replace(goodRecipe, "sft: {weight: 0.3}", "sft: 0.3", 1), `8: objectives.sft: expected keys (weight), got "0.3"`},
		{goodRecipe + "seed: -1\n", `15: seed: expected a whole number ≥ 0, got "-1"`},
		{goodRecipe + "student: again\n", "15: student is given twice (lines 2 and 15)"},
		{"student: [\n", "1: not valid YAML: did not find expected"},
	}
	for _, c := range cases {
		p := writeRecipe(t, c.text)
		_, err := LoadRecipe(p)
		if want := "recipe " + p + ":" + c.want; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error:\n  %v\nwant it to contain\n  %s", err, want)
		}
		for _, goTerm := range []string{"not found in type", "cannot unmarshal", "!!", "train."} {
			if err != nil && strings.Contains(err.Error(), goTerm) {
				t.Errorf("error in Go's terms (%q): %v", goTerm, err)
			}
		}
	}
	// Several problems are all reported, each on its own line.
	p := writeRecipe(t, strings.Replace(strings.Replace(goodRecipe, "max_len: 128", "max_len: eight", 1), "batch_size: 4", "batch_sise: 4", 1))
	_, err := LoadRecipe(p)
	if err == nil || len(strings.Split(err.Error(), "\n")) != 2 || !strings.Contains(err.Error(), "did you mean batch_size?") {
		t.Errorf("two problems: %v", err)
	}
	// Whole numbers written as floats are counts all the same.
	r, err := LoadRecipe(writeRecipe(t, strings.Replace(goodRecipe, "max_steps: 100", "max_steps: 1e3", 1)))
	if err != nil || r.MaxSteps != 1000 {
		t.Errorf("max_steps: 1e3 gave %d, %v", r.MaxSteps, err)
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

// TestRecipeValidateNumbers: NaN and ±Inf anywhere (a recipe made in code,
// or by --set) are refused naming the key, and counts out of range say so.
func TestRecipeValidateNumbers(t *testing.T) {
	base, err := LoadRecipe(writeRecipe(t, goodRecipe))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		change func(r *Recipe)
		want   string
	}{
		{func(r *Recipe) { r.Optim.LR = math.Inf(1) }, "optim.lr: +Inf is not a finite number"},
		{func(r *Recipe) { r.Objectives.KD.Alpha = math.NaN() }, "objectives.kd.alpha: NaN is not a finite number"},
		{func(r *Recipe) { r.Objectives.SFT.Weight = math.Inf(-1) }, "objectives.sft.weight: -Inf is not a finite number"},
		{func(r *Recipe) { r.Epochs = math.NaN() }, "epochs: NaN is not a finite number"},
		{func(r *Recipe) { r.Optim.MaxGradNorm = math.Inf(1) }, "optim.max_grad_norm: +Inf is not a finite number"},
		{func(r *Recipe) { r.MaxSteps = -5 }, "max_steps: -5 must be ≥ 0"},
		{func(r *Recipe) { r.MaxSteps, r.Epochs = 0, -1 }, "epochs: -1 must be ≥ 0"},
		{func(r *Recipe) { r.BatchSize = 0 }, "batch_size: 0 must be positive"},
		{func(r *Recipe) { r.GradAccum = -2 }, "grad_accum: -2 must be positive"},
		{func(r *Recipe) { r.Data.MaxLen = -1 }, "data.max_len: -1 must be positive"},
		{func(r *Recipe) { r.Schedule.WarmupSteps = -1 }, "schedule.warmup_steps: -1 must be ≥ 0"},
		{func(r *Recipe) { r.SaveEvery = -1 }, "save_every: -1 must be ≥ 0"},
		{func(r *Recipe) { r.Precision = "fp16" }, `precision: "fp16" is not one of [auto bf16 fp32 tf32]`},
	} {
		r := base
		kd, sft := *base.Objectives.KD, *base.Objectives.SFT
		r.Objectives.KD, r.Objectives.SFT = &kd, &sft
		c.change(&r)
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("validate: %v, want %q", err, c.want)
		}
	}
}

func TestRecipeSet(t *testing.T) {
	r, _ := LoadRecipe(writeRecipe(t, goodRecipe))
	if r.Precision != "auto" {
		t.Fatalf("precision defaults to %q, want auto", r.Precision)
	}
	for _, kv := range []string{"optim.lr=0.002", "objectives.kd.temperature=4", "data.pack=true", "objectives.dpo.beta=0.2", "output=runs/other", "precision=bf16"} {
		if err := r.Set(kv); err != nil {
			t.Fatal(err)
		}
	}
	if r.Optim.LR != 0.002 || r.Objectives.KD.Temperature != 4 || !r.Data.Pack || r.Output != "runs/other" || r.Precision != "bf16" {
		t.Fatalf("after --set: %+v", r)
	}
	if r.Objectives.KD.Beta != 0.5 || r.Objectives.KD.Divergence != "jsd" {
		t.Fatalf("--set of one kd field lost the others: %+v", *r.Objectives.KD)
	}
	if r.Objectives.DPO == nil || r.Objectives.DPO.Beta != 0.2 {
		t.Fatalf("--set did not switch dpo on: %+v", r.Objectives.DPO)
	}
	for kv, want := range map[string]string{
		"optim.learning_rate=1": "--set optim.learning_rate=1: unknown key optim.learning_rate (the keys under optim are lr,",
		"data.max_lenn=64":      "--set data.max_lenn=64: unknown key data.max_lenn (did you mean max_len?)",
		"batch_size=big":        `--set batch_size=big: batch_size: expected an integer, got "big"`,
		"optim.lr=.inf":         "--set optim.lr=.inf: optim.lr: expected a finite number, got .inf",
		"optim.eps=.nan":        "--set optim.eps=.nan: optim.eps: expected a finite number, got .nan",
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
