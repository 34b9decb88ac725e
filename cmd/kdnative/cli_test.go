package main

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/serve"
	"github.com/kdnative/kdnative/runtime/cpu"
	"github.com/urfave/cli/v2"
)

// TestTrainSetWithoutRecipe: `train --set student=…` with no recipe file is
// not the demo (which used to run, then fail on a tokenizer mismatch): the
// recipe is the defaults and the --set keys, it says so, and what is missing
// is named before anything runs.
func TestTrainSetWithoutRecipe(t *testing.T) {
	stdout, stderr, err := runApp(t, "train", "--set", "student=/nonexistent/student")
	if err == nil {
		t.Fatalf("train --set student=… ran:\n%s%s", stdout, stderr)
	}
	for _, want := range []string{"data.train: required", "objectives: at least one", "output: required", "give a recipe (examples/recipes/) or set them"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if !strings.Contains(stdout, "no recipe file, and --set names student: the recipe is the defaults and the --set keys (not the demo)") ||
		strings.Contains(stdout, "kdnative demo") {
		t.Errorf("stdout:\n%s", stdout)
	}
	if stderr != "" {
		t.Errorf("a note before the usage error: %q", stderr)
	}

	// A complete set of keys trains.
	dir := t.TempDir()
	assets := filepath.Join(dir, "demo-assets")
	if _, _, err := runApp(t, "--device", "cpu", "demo-assets", assets); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err = runApp(t, "--device", "cpu", "train", "--set", "student="+filepath.Join(assets, "student-init"),
		"--set", "data.train="+filepath.Join(assets, "train.jsonl"), "--set", "data.template=none", "--set", "data.max_len=32",
		"--set", "objectives.sft.weight=1", "--set", "max_steps=2", "--set", "batch_size=2", "--output", filepath.Join(dir, "run"))
	if err != nil || !strings.Contains(stdout, "done: 2 steps") {
		t.Errorf("a complete --set recipe: %v\n%s%s", err, stdout, stderr)
	}
	// --set keys that do not name models or data still change the demo:
	// checked at once, before a device is opened or a file written.
	stdout, stderr, err = runApp(t, "train", "--set", "max_steps=-3", "--output", filepath.Join(dir, "demo"))
	if err == nil || !strings.Contains(err.Error(), "max_steps: -3 must be ≥ 0") || stderr != "" || stdout != "" {
		t.Errorf("demo with a bad --set: %v, stdout %q, stderr %q", err, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "demo-assets", "teacher")); err != nil {
		t.Errorf("the demo's assets folder went missing: %v", err)
	}
}

// TestBackendNoteNotBeforeUsageErrors: the one-line "unavailable" note under
// --device auto never comes before a usage error (the fake "broken" backend
// is passed over under auto on every machine).
func TestBackendNoteNotBeforeUsageErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("student: s\ndata: {train: d.jsonl}\nobjectives: {sft: {weight: 1}}\nbatch_size: 0\nmax_steps: 1\noutput: o\n"), 0o644)
	for _, args := range [][]string{
		{"train", bad},
		{"train", bad, "--set", "optim.lr=.inf"},
		{"train", "--set", "max_stepz=3"},
		{"init-model", "--config", "c.json", "--tokenizer", "t"},
		{"bench", "--batch", "0", "--config", "c.json"},
		{"bench"},
		{"eval", "--model", "m", "--data", "d", "--batch-size", "0"},
		{"eval", "--model", "m", "--data", "d", "--template", "vicuna"},
		{"demo-assets"},
	} {
		_, stderr, err := runApp(t, args...)
		if err == nil {
			t.Errorf("%q: no error", args)
		}
		if stderr != "" {
			t.Errorf("%q: %q printed before the usage error %v", args, stderr, err)
		}
	}
	// Under auto, when a backend is passed over, the note is one short line.
	_, stderr, err := runApp(t, "which")
	if err != nil || stderr != "kdnative: broken unavailable (broken on purpose), using fake; kdnative doctor says more\n" {
		t.Errorf("which under auto: %q, %v", stderr, err)
	}
}

// TestShortReason: the note keeps the gist of why a backend did not open
// and leaves paths and logs to doctor.
func TestShortReason(t *testing.T) {
	for in, want := range map[string]string{
		"libcuda.so.1 not found (searched: LD_LIBRARY_PATH (unset), CUDA_HOME (unset), /usr/local/cuda/lib64): install the NVIDIA driver": "libcuda.so.1 not found: install the NVIDIA driver",
		"driver 12.4 loaded but found no GPU":                            "driver 12.4 loaded but found no GPU",
		"kernels cannot be compiled: nvrtc: line 3\nerror: expected ';'": "kernels cannot be compiled: nvrtc: line 3",
		strings.Repeat("word ", 30):                                      strings.TrimSpace(strings.Repeat("word ", 14)) + "…",
	} {
		if got := shortReason(in); got != want {
			t.Errorf("shortReason(%q) = %q, want %q", in, got, want)
		}
		if n := len([]rune(shortReason(in))); n > 70 {
			t.Errorf("shortReason(%q) is %d characters", in, n)
		}
	}
}

// TestFlagHelp: every flag of the commands a newcomer uses says what it is
// for, and no help line says its default twice.
func TestFlagHelp(t *testing.T) {
	app := newApp()
	mine := map[string]bool{"train": true, "eval": true, "generate": true, "init-model": true, "bench": true,
		"forward": true, "doctor": true, "demo-assets": true, "version": true}
	var walk func(cmds []*cli.Command, path string)
	walk = func(cmds []*cli.Command, path string) {
		for _, c := range cmds {
			name := strings.TrimSpace(path + " " + c.Name)
			if c.Usage == "" {
				t.Errorf("%s: no usage line", name)
			}
			for _, f := range c.Flags {
				df := f.(cli.DocGenerationFlag)
				if mine[name] && strings.TrimSpace(df.GetUsage()) == "" {
					t.Errorf("%s --%s: no help text", name, f.Names()[0])
				}
				line := cli.FlagStringer(f)
				if strings.Count(line, "(default") > 1 {
					t.Errorf("%s: default said twice: %s", name, line)
				}
				if regexp.MustCompile(`\(default: false\)`).MatchString(line) {
					t.Errorf("%s: %s", name, line)
				}
			}
			walk(c.Subcommands, name)
		}
	}
	walk(app.Commands, "")
	for _, f := range app.Flags {
		if strings.Count(cli.FlagStringer(f), "(default") > 1 {
			t.Errorf("global: %s", cli.FlagStringer(f))
		}
	}
}

// TestExampleRecipesRun: after `kdnative demo-assets demo-assets`, every
// recipe in examples/recipes/ trains as it is (for a few steps), from a
// fresh folder, as a newcomer would run it. A recipe whose teacher is an
// endpoint gets the demo teacher served as its comment says (kdnative
// serve --model demo-assets/teacher --model-name teacher), on a free port.
func TestExampleRecipesRun(t *testing.T) {
	if testing.Short() {
		t.Skip("trains three recipes for a few steps (half a minute)")
	}
	recipes, _ := filepath.Glob("../../examples/recipes/*.yaml")
	if len(recipes) < 3 {
		t.Fatalf("found %v", recipes)
	}
	for i, r := range recipes {
		abs, err := filepath.Abs(r)
		if err != nil {
			t.Fatal(err)
		}
		recipes[i] = abs
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	if stdout, stderr, err := runApp(t, "--device", "cpu", "demo-assets", "demo-assets"); err != nil {
		t.Fatalf("demo-assets: %v\n%s%s", err, stdout, stderr)
	}
	for _, r := range recipes {
		name := strings.TrimSuffix(filepath.Base(r), ".yaml")
		t.Run(name, func(t *testing.T) {
			args := []string{"--device", "cpu", "train", r, "--set", "max_steps=2"}
			if name == "cross-tokenizer" { // the student its comment says to make
				if stdout, stderr, err := runApp(t, "--device", "cpu", "init-model", "--config", filepath.Join(repo, "examples/cross-tokenizer/bpe-300/student-config.json"),
					"--tokenizer", filepath.Join(repo, "examples/cross-tokenizer/bpe-300"), "--seed", "1", "demo-assets/student-bpe-300"); err != nil {
					t.Fatalf("init-model: %v\n%s%s", err, stdout, stderr)
				}
			}
			if strings.Contains(name, "endpoint") {
				s, err := serve.New(cpu.New(), serve.Config{Model: "demo-assets/teacher", ModelName: "teacher"})
				if err != nil {
					t.Fatal(err)
				}
				ts := httptest.NewServer(s)
				defer func() { ts.Close(); s.Close() }()
				args = append(args, "--set", "objectives.onpolicy.teacher_endpoint="+ts.URL+"/v1")
			}
			stdout, stderr, err := runApp(t, args...)
			if err != nil || !strings.Contains(stdout, "done: 2 steps") {
				t.Fatalf("%v\n%s%s", err, stdout, stderr)
			}
			m := regexp.MustCompile(`the student is in (\S+)`).FindStringSubmatch(stdout)
			if m == nil {
				t.Fatalf("no output folder in:\n%s", stdout)
			}
			if _, err := os.Stat(filepath.Join(m[1], "model.safetensors")); err != nil {
				t.Error(err)
			}
		})
	}
}
