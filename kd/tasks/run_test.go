package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/runtime/cpu"
)

// copyDir copies the files of a folder (a model) to dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRunSideBySide: two models × two tasks give one table (a column per
// model, the task's rows with intervals), results.json and a JSONL of
// per-example outputs per task and model; the numbers in the table are the
// per-example outputs' means.
func TestRunSideBySide(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "run", "before"), filepath.Join(dir, "run", "after")
	copyDir(t, filepath.Join("testdata", "harness", "model"), a)
	copyDir(t, filepath.Join("testdata", "harness", "model"), b)
	// "after" lacks a tokenizer: --tokenizer supplies it.
	os.Remove(filepath.Join(b, "tokenizer.json"))
	os.Remove(filepath.Join(b, "tokenizer_config.json"))
	gen := writeTask(t, `{"task": "sums", "defaults": {"kind": "generate", "score": "numeric", "max_tokens": 4}}`,
		`{"prompt": "Two plus two is", "answer": 4}`, `{"prompt": "Three plus four is", "answer": 7}`)
	out := filepath.Join(dir, "out")
	var table, log bytes.Buffer
	rep, err := Run(context.Background(), cpu.New(), Config{
		Tasks:     []string{filepath.Join("testdata", "harness", "choice.jsonl"), gen},
		Models:    []string{a, b},
		Tokenizer: filepath.Join("testdata", "harness", "model"),
		Output:    out,
		Options:   Options{MaxLen: 64, Log: &log},
	}, &table)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(table.String(), "\n")
	if !strings.Contains(lines[0], "before") || !strings.Contains(lines[0], "after") {
		t.Errorf("header %q", lines[0])
	}
	if !strings.HasPrefix(lines[1], "choice (14)") || !strings.Contains(lines[1], "acc ") || !strings.Contains(lines[3], "sums (2)") {
		t.Errorf("table:\n%s", table.String())
	}
	if len(rep.Results) != 4 {
		t.Fatalf("%d results", len(rep.Results))
	}
	// The same weights: the same numbers in both columns.
	if x, y := rep.Results[0].Metric("acc_norm").Value, rep.Results[2].Metric("acc_norm").Value; x != y {
		t.Errorf("acc_norm %v vs %v", x, y)
	}
	recs := readJSONL(t, filepath.Join(out, "choice", "before.jsonl"))
	var acc float64
	for _, r := range recs {
		acc += r["acc"].(float64)
	}
	if len(recs) != 14 || acc/14 != rep.Results[0].Metric("acc").Value {
		t.Errorf("%d records, mean acc %v vs %v", len(recs), acc/14, rep.Results[0].Metric("acc").Value)
	}
	if _, err := os.Stat(filepath.Join(out, "sums", "after.jsonl")); err != nil {
		t.Error(err)
	}
	var saved Report
	data, _ := os.ReadFile(filepath.Join(out, "results.json"))
	if err := json.Unmarshal(data, &saved); err != nil || len(saved.Results) != 4 || saved.Results[0].Metrics[0].Name != "acc" {
		t.Errorf("results.json: %v %s", err, data)
	}
	if !strings.Contains(log.String(), "choice × before: 39/39 choices") {
		t.Errorf("progress log:\n%s", log.String())
	}
	if strings.Contains(log.String(), "\r") {
		t.Errorf("carriage returns in a non-terminal log: %q", log.String())
	}
}

// TestRunChecksEveryTaskFirst: a bad line in the second task file stops the
// run before any model is loaded (the model path does not even exist).
func TestRunChecksEveryTaskFirst(t *testing.T) {
	good := filepath.Join("testdata", "harness", "choice.jsonl")
	bad := writeTask(t, `{"kind": "perplexity", "text": "fine"}`, `{"kind": "generate", "prompt": "q", "answer": "1", "extract": "[0-9"}`)
	_, err := Run(context.Background(), cpu.New(), Config{Tasks: []string{good, bad}, Models: []string{"/no/such/model"}}, &bytes.Buffer{})
	if err == nil || !strings.HasPrefix(err.Error(), bad+":2: ") {
		t.Errorf("err %v", err)
	}
	judged := writeTask(t, `{"kind": "generate", "prompt": "q", "score": "judge", "rubric": "r"}`)
	_, err = Run(context.Background(), cpu.New(), Config{Tasks: []string{judged}, Models: []string{"/no/such/model"}}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), ":1 is scored by a judge: give a judge endpoint") {
		t.Errorf("err %v", err)
	}
	_, err = Run(context.Background(), cpu.New(), Config{Tasks: []string{good}, Models: []string{"a/m", "a/m/"}}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("err %v", err)
	}
}

func TestModelLabels(t *testing.T) {
	got := modelLabels([]string{"runs/a/checkpoint-300", "runs/b/checkpoint-300", "kdnative-demo", "teacher/"})
	want := []string{"a/checkpoint-300", "b/checkpoint-300", "kdnative-demo", "teacher"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%v, want %v", got, want)
	}
}

func readJSONL(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// TestWriteRecordsFailsMidway: per-example outputs are written atomically
// and shared (mode 0644); a record that cannot be written (a NaN, which JSON
// has no word for) after others were leaves the file of an earlier run as
// it was, no temporary file, and an error naming the file.
func TestWriteRecordsFailsMidway(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "task", "model.jsonl")
	if err := writeRecords(path, []map[string]any{{"acc": 1.0}, {"acc": 0.0}}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	before, _ := os.ReadFile(path)
	if string(before) != "{\"acc\":1}\n{\"acc\":0}\n" {
		t.Fatalf("wrote %q", before)
	}
	many := make([]map[string]any, 10000) // more than bufio's buffer before the bad one
	for i := range many {
		many[i] = map[string]any{"acc": 1.0, "output": strings.Repeat("x", 100)}
	}
	many = append(many, map[string]any{"acc": math.NaN()})
	err = writeRecords(path, many)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "NaN") {
		t.Fatalf("got %v, want an error naming %s and the NaN", err, path)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatalf("a failed write changed the file to %d bytes", len(after))
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
}
