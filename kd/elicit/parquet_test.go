package elicit

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// TestInputsFromParquet: prompt and candidate files may be Parquet (written
// by pyarrow, kd/data/testdata/parquet) and read as the equivalent JSONL; a
// bad row is skipped naming its row group and row.
func TestInputsFromParquet(t *testing.T) {
	dir := "../data/testdata/parquet/"
	pq, bad, err := readPrompts(dir+"prompt_response.parquet", false, nil, "prompt")
	if err != nil || bad != 0 {
		t.Fatal(err, bad)
	}
	js, _, err := readPrompts(dir+"prompt_response.jsonl", false, nil, "prompt")
	if err != nil {
		t.Fatal(err)
	}
	if len(pq) != 5 || !reflect.DeepEqual(pq, js) {
		t.Fatalf("%d prompts from Parquet, %d from JSONL", len(pq), len(js))
	}
	var log bytes.Buffer
	_, bad, err = readPrompts(dir+"text.parquet", false, &log, "prompt")
	if err != nil || bad != 3 || !strings.Contains(log.String(), "text.parquet: row group 1, row 0 skipped") {
		t.Fatalf("rows without a prompt: %v, %d bad, log %q", err, bad, log.String())
	}
	if _, _, err := readPrompts(dir+"text.parquet", true, nil, "prompt"); err == nil || !strings.Contains(err.Error(), "row group 0, row 0") {
		t.Fatalf("strict: %v", err)
	}
	// Candidates: {"prompt", "response"} rows grouped by prompt.
	c, bad, err := readCandidates(dir+"pairs.parquet", false, nil)
	if err != nil || len(c) != 0 || bad != 3 {
		t.Fatalf("pairs rows are not candidates: %v %d %d", err, len(c), bad)
	}
}
