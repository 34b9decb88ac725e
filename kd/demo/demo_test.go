package demo

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/train"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestDemoDistills runs the built-in demo, shortened, and checks what it
// promises: the student's KL to the teacher falls well below where it
// started, the drop is printed, samples are shown, the student it saves
// loads, the recipe it saves names files that are still there, and the
// command it suggests next shows the student doing better than chance.
func TestDemoDistills(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for a minute")
	}
	out := filepath.Join(t.TempDir(), "demo")
	var log bytes.Buffer
	err := Run(context.Background(), cpu.New(), Options{Output: out, Log: &log, Sets: []string{"max_steps=80", "save_every=0"}})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	text := log.String()
	m := regexp.MustCompile(`KL\(teacher‖student\)\s+([0-9.]+) → ([0-9.]+)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("the demo did not print the KL drop:\n%s", text)
	}
	before, _ := strconv.ParseFloat(m[1], 64)
	after, _ := strconv.ParseFloat(m[2], 64)
	if !(after < 0.6*before) {
		t.Fatalf("KL %g → %g: not well below where it started\n%s", before, after, text)
	}
	for _, want := range []string{"teacher:", "student before:", "student after:"} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q sample in:\n%s", want, text)
		}
	}
	if _, err := model.LoadDir(out, cpu.New()); err != nil {
		t.Fatal(err)
	}
	t.Logf("KL %g → %g", before, after)

	// The saved recipe runs again: every file it names is still there.
	r, err := train.LoadRecipe(filepath.Join(out, "recipe.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for key, path := range map[string]string{"student": r.Student, "teacher": r.Teacher, "data.train": r.Data.Train, "data.val": r.Data.Val} {
		if _, err := os.Stat(path); err != nil {
			t.Errorf("recipe.yaml's %s: %v", key, err)
		}
	}

	// The suggested eval shows the student against the teacher: a loss well
	// under a uniform guess's ln 259 and the KL the demo ended with.
	a := Layout(AssetsDir(out))
	want := "kdnative eval --model " + out + " --data " + a.Val + " --teacher " + a.Teacher
	if !strings.Contains(text, want) {
		t.Fatalf("the demo does not suggest %q:\n%s", want, text)
	}
	var elog bytes.Buffer
	res, err := train.RunEval(cpu.New(), train.EvalConfig{Model: out, Data: a.Val, Teacher: a.Teacher}, &elog)
	if err != nil {
		t.Fatal(err)
	}
	if !(res.Loss < math.Log(259)-1) || res.KLToTeacher == nil || math.Abs(*res.KLToTeacher-after) > 0.01 {
		t.Errorf("the suggested eval: loss %.4f (uniform %.4f), KL %v (the demo said %g)\n%s", res.Loss, math.Log(259), res.KLToTeacher, after, elog.String())
	}
}

// TestRecipeRefusesBadSets: a wrong --set for the demo is reported before
// anything is written.
func TestRecipeRefusesBadSets(t *testing.T) {
	out := filepath.Join(t.TempDir(), "demo")
	for kv, want := range map[string]string{
		"max_steps=-1":   "max_steps: -1 must be ≥ 0",
		"optim.lr=.inf":  "optim.lr: expected a finite number",
		"data.max_lenn=": "unknown key data.max_lenn (did you mean max_len?)",
	} {
		if _, _, err := Recipe(Options{Output: out, Sets: []string{kv}}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: %v, want %q", kv, err, want)
		}
	}
	if _, err := os.Stat(AssetsDir(out)); err == nil {
		t.Error("Recipe wrote files")
	}
	if _, _, err := Recipe(Options{Output: AssetsDir(out)}); err == nil {
		t.Error("an output where the assets go was accepted")
	}
}

// TestPrintable: the samples a byte-level model writes cannot drive the
// terminal: control bytes and non-UTF-8 bytes are escaped.
func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"Call me Ishmael.\nSome years":    "Call me Ishmael. Some years",
		"\x1b[2J\x07bell\x00":             `\x1b[2J\x07bell\x00`,
		"caf\xc3\xa9 \xff\xfe end":        `café \xff\xfe end`,
		"back\\slash \u202e reversed":     `back\\slash \u202e reversed`,
		"del\x7f and c1 \u0085 and tab\t": `del\x7f and c1 \x85 and tab `,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
