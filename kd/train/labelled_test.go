package train

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTrainOnLabelledData: data as `kdnative elicit label` writes it — some
// answers empty, some cut at the length limit — trains, even with
// on_bad_line stop: the empty answers are skipped and the cut ones kept
// open, and the data summary counts both.
func TestTrainOnLabelledData(t *testing.T) {
	w := newWorld(t)
	var b strings.Builder
	for i, s := range sentences {
		rec := map[string]string{"id": fmt.Sprintf("p%d.s0", i+1), "prompt": fmt.Sprintf("%d: ", i), "response": s, "finish_reason": "stop"}
		switch i % 4 {
		case 1:
			rec["response"] = "" // the teacher said nothing
		case 2:
			rec["finish_reason"] = "length"
		}
		line, _ := json.Marshal(rec)
		b.Write(append(line, '\n'))
	}
	path := filepath.Join(w.dir, "labelled.jsonl")
	os.WriteFile(path, []byte(b.String()), 0o644)
	r := w.recipe(filepath.Join(w.dir, "run"))
	r.Data.Train, r.Data.OnBadLine, r.MaxSteps = path, "stop", 2
	r.Objectives.SFT = &SFTTerm{Weight: 1}
	_, log := run(t, r, false)
	if !strings.Contains(log, "12 lines, 9 examples") || !strings.Contains(log, "3 with an empty answer skipped") || !strings.Contains(log, "3 cut at the length limit") {
		t.Fatalf("the data summary does not count the empty and the cut answers:\n%s", log)
	}
}
