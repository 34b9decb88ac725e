package tasks

import (
	"path/filepath"
	"testing"
)

// TestShippedTaskFiles: every task file in examples/tasks loads (the docs
// and README run them).
func TestShippedTaskFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "tasks", "*.jsonl"))
	if err != nil || len(files) < 4 {
		t.Fatalf("example task files: %v %v", files, err)
	}
	kinds := map[string]bool{}
	for _, f := range files {
		task, err := Load(f)
		if err != nil {
			t.Error(err)
			continue
		}
		for _, ex := range task.Examples {
			kinds[ex.Kind+"/"+ex.Score] = true
		}
	}
	for _, k := range []string{"generate/numeric", "generate/judge", "choice/", "perplexity/"} {
		if !kinds[k] {
			t.Errorf("no shipped example of %s", k)
		}
	}
}
