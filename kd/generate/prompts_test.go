package generate

import (
	"reflect"
	"strings"
	"testing"
)

// TestPromptsFromParquet: a prompt file may be Parquet (written by pyarrow,
// kd/data/testdata/parquet): it gives the prompts of the equivalent JSONL.
func TestPromptsFromParquet(t *testing.T) {
	dir := "../data/testdata/parquet/"
	pq, err := readPrompts(Config{PromptFile: dir + "prompt_response.parquet"})
	if err != nil {
		t.Fatal(err)
	}
	js, err := readPrompts(Config{PromptFile: dir + "prompt_response.jsonl"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range pq { // where each came from differs: file and line, or row group and row
		pq[i].where = ""
	}
	for i := range js {
		js[i].where = ""
	}
	if len(pq) != 5 || !reflect.DeepEqual(pq, js) || *pq[2].Prompt != "héllo 世界" {
		t.Fatalf("%d prompts from Parquet, %d from JSONL", len(pq), len(js))
	}
	msgs, err := readPrompts(Config{PromptFile: dir + "messages.parquet"})
	if err != nil || len(msgs) != 3 || len(msgs[1].Messages) != 4 || msgs[1].Messages[3].Content != "Green." {
		t.Fatalf("messages from Parquet: %v %+v", err, msgs)
	}
	if _, err := readPrompts(Config{PromptFile: dir + "text.parquet"}); err == nil || !strings.Contains(err.Error(), "row group 0, row 0") {
		t.Fatalf("a row without a prompt: %v", err)
	}
}
