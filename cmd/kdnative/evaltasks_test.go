package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEvalTasksCommand: kdnative eval --task … --model A --model B prints one
// table with a column per model and writes the outputs; eval without --data
// or --task says what it needs.
func TestEvalTasksCommand(t *testing.T) {
	t.Setenv("KDNATIVE_DEVICE", "")
	fx := filepath.Join("..", "..", "kd", "tasks", "testdata", "harness")
	a := filepath.Join(t.TempDir(), "student")
	if err := os.MkdirAll(a, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"config.json", "model.safetensors"} { // no tokenizer: --tokenizer gives it
		data, err := os.ReadFile(filepath.Join(fx, "model", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(a, f), data, 0o644)
	}
	out := filepath.Join(t.TempDir(), "out")
	stdout, stderr, err := runApp(t, "--device", "cpu", "eval", "--task", filepath.Join(fx, "choice.jsonl"), "--task", filepath.Join(fx, "perplexity.jsonl"),
		"--model", filepath.Join(fx, "model"), "--model", a, "--tokenizer", filepath.Join(fx, "model"), "--output", out, "--max-len", "24")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	lines := strings.Split(stdout, "\n")
	if !strings.HasPrefix(lines[0], "task") || !strings.Contains(lines[0], "model") || !strings.Contains(lines[0], "student") ||
		!strings.Contains(stdout, "choice (14)") || !strings.Contains(stdout, "bits_per_byte") {
		t.Errorf("table:\n%s", stdout)
	}
	if !strings.Contains(stderr, "perplexity × student: ") {
		t.Errorf("progress:\n%s", stderr)
	}
	for _, f := range []string{"results.json", "choice/model.jsonl", "choice/student.jsonl", "perplexity/student.jsonl"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	if _, _, err := runApp(t, "--device", "cpu", "eval", "--model", a); err == nil || !strings.Contains(err.Error(), "--data (or --task FILE") {
		t.Errorf("eval without data or task: %v", err)
	}
	if _, _, err := runApp(t, "--device", "cpu", "eval", "--model", a, "--task", filepath.Join(fx, "choice.jsonl"), "--data", "x.jsonl"); err == nil || !strings.Contains(err.Error(), "--data, --teacher") {
		t.Errorf("eval with --task and --data: %v", err)
	}
}
