package demo

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestWriteAssets: the folder holds a loadable teacher and student-init
// with their tokenizer, and the data in three shapes made from the same
// lines; writing again keeps it; a file changed since is never overwritten.
func TestWriteAssets(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo-assets")
	a, err := WriteAssets(cpu.New(), dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{a.Teacher, a.StudentInit} {
		if _, err := model.LoadDir(d, cpu.New()); err != nil {
			t.Errorf("%s: %v", d, err)
		}
		if _, err := tokenizer.LoadDir(d); err != nil {
			t.Errorf("%s: %v", d, err)
		}
	}
	train := readJSONL[struct{ Text string }](t, a.Train)
	chat := readJSONL[struct {
		Messages []struct{ Role, Content string }
	}](t, a.ChatTrain)
	pairs := readJSONL[struct{ Prompt, Chosen, Rejected string }](t, a.PairsTrain)
	if len(train) != 10710 || len(chat) != len(train)/2 || len(pairs) < len(chat)-5 {
		t.Fatalf("%d lines, %d conversations, %d pairs", len(train), len(chat), len(pairs))
	}
	for i, c := range chat {
		if len(c.Messages) != 2 || c.Messages[0].Role != "user" || c.Messages[0].Content != train[2*i].Text ||
			c.Messages[1].Role != "assistant" || c.Messages[1].Content != train[2*i+1].Text {
			t.Fatalf("conversation %d is not lines %d and %d: %+v", i, 2*i, 2*i+1, c)
		}
	}
	for i, p := range pairs[:100] {
		if p.Prompt != train[2*i].Text+" " || p.Chosen != train[2*i+1].Text || p.Rejected == p.Chosen {
			t.Fatalf("pair %d: %+v", i, p)
		}
	}
	if v := readJSONL[struct{ Text string }](t, a.Val); len(v) != 275 {
		t.Errorf("val: %d lines", len(v))
	}

	// Again: nothing changes.
	st, _ := os.Stat(filepath.Join(a.StudentInit, "model.safetensors"))
	if _, err := WriteAssets(cpu.New(), dir); err != nil {
		t.Fatalf("second write: %v", err)
	}
	if st2, _ := os.Stat(filepath.Join(a.StudentInit, "model.safetensors")); !st2.ModTime().Equal(st.ModTime()) {
		t.Error("student-init was rewritten")
	}
	// A file edited since is an error naming it, and stays as edited.
	os.WriteFile(a.Val, []byte("{\"text\": \"mine\"}\n"), 0o644)
	if _, err := WriteAssets(cpu.New(), dir); err == nil || !strings.Contains(err.Error(), a.Val) {
		t.Errorf("an edited file: %v", err)
	}
	if data, _ := os.ReadFile(a.Val); string(data) != "{\"text\": \"mine\"}\n" {
		t.Error("the edited file was overwritten")
	}
	os.Remove(a.Val)
	cfg := filepath.Join(a.StudentInit, "config.json")
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(data), `"num_hidden_layers": 2`, `"num_hidden_layers": 3`, 1)), 0o644)
	if _, err := WriteAssets(cpu.New(), dir); err == nil || !strings.Contains(err.Error(), a.StudentInit) {
		t.Errorf("another student-init: %v", err)
	}
	// No temporary files are left.
	left, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

func readJSONL[T any](t *testing.T, path string) []T {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("%s:%d: %v", path, n, err)
		}
		out = append(out, v)
	}
	return out
}
