package data

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTopKLines: a pre-tokenized line's teacher top-k is parsed, cut with
// truncation, laid out one position before its token in a batch, and bad
// entries are reported with their line.
func TestTopKLines(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "topk.jsonl")
	lines := []string{
		`{"input_ids": [5, 6, 7, 8], "labels": [-100, 6, 7, 8], "teacher_topk_ids": [null, [6, 1], [7, 2], [8, 3]], "teacher_topk_logprobs": [null, [-0.1, -3], [-0.2, -2.5], [-0.05, -4]]}`,
		`{"input_ids": [9, 10, 11], "teacher_topk_ids": [null, [10, 0], [11, 4]], "teacher_topk_logprobs": [null, [-0.5, -1.5], [-0.3, -2]]}`,
		`{"input_ids": [1, 2], "teacher_topk_ids": [null, [2, 2]], "teacher_topk_logprobs": [null, [-1, -1]]}`,
		`{"input_ids": [1, 2], "teacher_topk_ids": [null, [2, 3]], "teacher_topk_logprobs": [null, [-0.01, -0.02]]}`,
		`{"input_ids": [1, 2], "teacher_topk_ids": [null, [2, 3, 4]], "teacher_topk_logprobs": [null, [-2, -2, -2]]}`,
		`{"input_ids": [1, 2], "teacher_topk_ids": [null, [2, 3]]}`,
	}
	os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	rows, _, rep, err := LoadSFT(path, nil, Options{MaxLen: 3, OnBadLine: "skip", Vocab: 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rep.Skipped != 4 {
		t.Fatalf("%d rows, %d skipped: %s", len(rows), rep.Skipped, rep)
	}
	for _, want := range []string{"topk.jsonl:3: teacher top-k entry 1 repeats id 2", "topk.jsonl:4: teacher top-k probabilities of entry 1 sum to 1.970", "topk.jsonl:5: teacher top-k has k = 3, earlier lines 2", `topk.jsonl:6: "teacher_topk_ids" and "teacher_topk_logprobs" go together`} {
		if !strings.Contains(rep.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, rep)
		}
	}
	// Truncated to 3 tokens, the first row keeps 3 entries.
	if r := rows[0]; r.TopK == nil || len(r.TopK.Has) != 3 || r.TopK.IDs[2*2] != 7 {
		t.Fatalf("first row top-k %+v", r.TopK)
	}
	b, err := MakeBatch(rows, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	ids, lps, tails, mask, K, err := MakeTopK(rows, b.T)
	if err != nil || K != 2 || tails != nil {
		t.Fatalf("K %d, tails %v, %v", K, tails, err)
	}
	// Row 0, position 0 predicts token 1 (=6): its entry is token 1's.
	if mask[0] != 1 || ids[0] != 6 || lps[1] != -3 {
		t.Fatalf("position 0: mask %v ids %v lps %v", mask[0], ids[:2], lps[:2])
	}
	// The last position of each row has no next token: masked.
	if mask[b.T-1] != 0 || !math.IsInf(float64(lps[(b.T-1)*K]), -1) {
		t.Fatalf("last position: mask %v lps %v", mask[b.T-1], lps[(b.T-1)*K:b.T*K])
	}
	// Packing carries the teacher along.
	packed := Pack(rows, 4)
	if packed[0].TopK == nil || len(packed[0].TopK.Has) != len(packed[0].Tokens) {
		t.Fatalf("packed top-k %+v", packed[0].TopK)
	}
}
