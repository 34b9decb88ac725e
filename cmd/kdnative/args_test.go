package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestReorderArgs: flags after positional arguments, and the app's --device
// after the command, are moved where urfave/cli reads them; nothing else
// changes.
func TestReorderArgs(t *testing.T) {
	app := newApp()
	for _, c := range []struct{ in, want string }{
		// Positional first, flags after (cli v2 stopped at OUT).
		{"init-model OUT --config c.json --tokenizer tok", "init-model --config c.json --tokenizer tok OUT"},
		{"init-model OUT --config=c.json --seed 3 --tokenizer tok", "init-model --config=c.json --seed 3 --tokenizer tok OUT"},
		// --device after the command goes before it, in either spelling.
		{"train r.yaml --device cpu --set a=1", "--device cpu train --set a=1 r.yaml"},
		{"train --device=cpu r.yaml", "--device=cpu train r.yaml"},
		{"--device cpu eval --model m --data d", "--device cpu eval --model m --data d"},
		// A boolean flag takes no value: the next word stays positional.
		{"train --resume r.yaml --set x=1", "train --resume --set x=1 r.yaml"},
		// A value that looks like a flag is the flag's value.
		{"generate --model m --temperature -1 --prompt hi", "generate --model m --temperature -1 --prompt hi"},
		// After "--" everything is positional.
		{"train r.yaml -- --set", "train -- r.yaml --set"},
		// Subcommands: each level's flags stay at their level.
		{"elicit curate --input a --output b", "elicit curate --input a --output b"},
		{"elicit label --prompts p --output o --local m --device cpu", "--device cpu elicit label --prompts p --output o --local m"},
		// Unknown flags stay flags (cli reports them); help stays as is.
		{"train r.yaml --frob", "train --frob r.yaml"},
		{"help train", "help train"},
		{"version", "version"},
		{"", ""},
	} {
		in := append([]string{"kdnative"}, strings.Fields(c.in)...)
		want := append([]string{"kdnative"}, strings.Fields(c.want)...)
		if got := reorderArgs(app, in); !slices.Equal(got, want) {
			t.Errorf("%q:\n got %q\nwant %q", c.in, got[1:], want[1:])
		}
	}
}

// TestPositionalBeforeFlags: every command that takes a positional
// argument accepts its flags after it, and --device works after the command.
func TestPositionalBeforeFlags(t *testing.T) {
	dir := t.TempDir()
	tok := "../../kd/demo/assets/tokenizer"
	cfg := "../../kd/demo/assets/student-config.json"
	out := filepath.Join(dir, "student")
	stdout, stderr, err := runApp(t, "init-model", out, "--config", cfg, "--tokenizer", tok, "--device", "cpu")
	if err != nil || !strings.Contains(stdout, "wrote "+out) {
		t.Fatalf("init-model OUT --config …: %v\n%s%s", err, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	if stderr != "" {
		t.Errorf("--device cpu after the command still went through auto: %q", stderr)
	}
	// --device after the command chooses the device.
	if stdout, stderr, err := runApp(t, "which", "--device", "cpu"); err != nil || stdout != "cpu\n" || stderr != "" {
		t.Errorf("which --device cpu: %q %q %v", stdout, stderr, err)
	}
	// demo-assets DIR, then a recipe before its flags.
	assets := filepath.Join(dir, "demo-assets")
	if _, _, err := runApp(t, "demo-assets", assets, "--device", "cpu"); err != nil {
		t.Fatal(err)
	}
	recipe := filepath.Join(dir, "r.yaml")
	os.WriteFile(recipe, []byte("student: "+out+"\ndata: {train: "+filepath.Join(assets, "train.jsonl")+
		", max_len: 32, template: none}\nobjectives: {sft: {weight: 1}}\nmax_steps: 1\n"), 0o644)
	stdout, stderr, err = runApp(t, "train", recipe, "--set", "batch_size=2", "--output", filepath.Join(dir, "run"), "--device", "cpu")
	if err != nil || !strings.Contains(stdout, "done: 1 steps") {
		t.Errorf("train r.yaml --set … --output … --device cpu: %v\n%s%s", err, stdout, stderr)
	}
	if _, _, err := runApp(t, "train", recipe, "other.yaml"); err == nil || !strings.Contains(err.Error(), `train takes one recipe file; unexpected argument "other.yaml"`) {
		t.Errorf("two recipes: %v", err)
	}
}
