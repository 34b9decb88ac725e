package tasks

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad: any file either loads or is refused with an error naming the
// file — never a panic. Seeded with the shipped task files' first lines.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "examples", "tasks", "*.jsonl"))
	for _, p := range files {
		data, _ := os.ReadFile(p)
		lines := strings.SplitN(string(data), "\n", 4)
		f.Add(strings.Join(lines[:min(3, len(lines))], "\n"))
	}
	f.Add(`{"kind": "generate", "prompt": "q", "answer": [1, "2"], "score": "numeric", "n": 3, "temperature": 1, "pass_at": [2]}`)
	f.Add(`{"kind": "choice", "context": "", "choices": ["a", "b"], "answer": "b", "delimiter": ""}`)
	f.Fuzz(func(t *testing.T, text string) {
		p := filepath.Join(t.TempDir(), "t.jsonl")
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		task, err := Load(p)
		if err != nil {
			if !strings.HasPrefix(err.Error(), p) {
				t.Fatalf("error without the file name: %v", err)
			}
			return
		}
		for _, ex := range task.Examples {
			if ex.Kind == KindGenerate && ex.Score != ScoreJudge {
				ex.Check("the answer is 42 \\boxed{7} #### 3")
			}
		}
	})
}
