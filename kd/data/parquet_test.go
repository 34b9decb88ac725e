package data

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The Parquet files in testdata/parquet were written by pyarrow
// (scripts/fixtures/make_parquet_fixtures.py), each beside a JSONL file with
// the same records, two rows per row group.

func parquetFile(name string) string { return filepath.Join("testdata", "parquet", name) }

// TestParquetLoadsLikeJSONL: every shape loads from Parquet into exactly the
// examples (and the counts) that the equivalent JSONL gives.
func TestParquetLoadsLikeJSONL(t *testing.T) {
	opt := Options{MaxLen: 256, Vocab: 300}
	for _, name := range []string{"prompt_response", "messages", "text", "tokens", "label"} {
		tok := newFake(plainChatML, false)
		pq, _, prep, err := LoadSFT(parquetFile(name+".parquet"), tok, opt)
		if err != nil {
			t.Fatalf("%s.parquet: %v", name, err)
		}
		js, _, jrep, err := LoadSFT(parquetFile(name+".jsonl"), tok, opt)
		if err != nil {
			t.Fatalf("%s.jsonl: %v", name, err)
		}
		if len(pq) < 3 || !reflect.DeepEqual(pq, js) {
			t.Errorf("%s: %d examples from Parquet differ from the %d of JSONL", name, len(pq), len(js))
		}
		prep.Files, jrep.Files = nil, nil
		if !reflect.DeepEqual(prep, jrep) {
			t.Errorf("%s: reports differ:\n%+v\n%+v", name, prep, jrep)
		}
		if name == "tokens" && (pq[0].TopK == nil || pq[0].TopK.K != 2 || pq[2].TopK != nil) {
			t.Errorf("tokens: teacher top-k not carried: %+v", pq[0].TopK)
		}
		if name == "label" && (pq[0].TopK == nil || pq[0].TopK.K != 2 || pq[1].TopK == nil || pq[2].TopK != nil || prep.Open != 1) {
			t.Errorf("label: the teacher of elicit label records not carried: %+v, %+v", pq[0].TopK, prep)
		}
	}
	tok := newFake(plainChatML, false)
	pq, _, _, err := LoadPairs(parquetFile("pairs.parquet"), tok, opt)
	if err != nil {
		t.Fatal(err)
	}
	js, _, _, err := LoadPairs(parquetFile("pairs.jsonl"), tok, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(pq) != 3 || !reflect.DeepEqual(pq, js) {
		t.Errorf("pairs from Parquet differ from JSONL: %d vs %d", len(pq), len(js))
	}
}

// TestParquetBadInput: a missing column names the column and the file; a bad
// row names the file, its row group and row, and is skipped under skip; a
// file cut short is an error naming it.
func TestParquetBadInput(t *testing.T) {
	tok := newFake(plainChatML, false)
	p := parquetFile("missing_column.parquet")
	_, _, _, err := LoadSFT(p, tok, Options{MaxLen: 64})
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), `no "response" (or "completion") column`) {
		t.Errorf("missing column: %v", err)
	}
	if _, _, _, err := LoadPairs(parquetFile("prompt_response.parquet"), tok, Options{MaxLen: 64}); err == nil || !strings.Contains(err.Error(), `no "chosen" column`) {
		t.Errorf("SFT columns given to LoadPairs: %v", err)
	}

	p = parquetFile("bad_row.parquet")
	_, _, _, err = LoadSFT(p, tok, Options{MaxLen: 64})
	var le *LineError
	if !errors.As(err, &le) || !le.Parquet || le.RowGroup != 1 || le.Row != 1 || le.Line != 4 ||
		!strings.HasPrefix(err.Error(), p+": row group 1, row 1 (row 3 of the file): ") || !strings.Contains(err.Error(), `"messages" is empty`) {
		t.Errorf("bad row under stop: %v", err)
	}
	train, _, rep, err := LoadSFT(p, tok, Options{MaxLen: 64, OnBadLine: BadLineSkip})
	if err != nil || len(train) != 3 || rep.Skipped != 1 || len(rep.Problems) != 1 || rep.Problems[0].RowGroup != 1 {
		t.Errorf("bad row under skip: %v, %d examples, %+v", err, len(train), rep)
	}
	if !strings.Contains(rep.String(), "row group 1, row 1") {
		t.Errorf("the summary does not place the bad row: %s", rep.String())
	}

	p = parquetFile("truncated.parquet")
	if _, _, _, err := LoadSFT(p, tok, Options{MaxLen: 64}); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "not a readable Parquet file") {
		t.Errorf("truncated file: %v", err)
	}
}

// FuzzParquet: damaged Parquet files give errors, never a panic.
func FuzzParquet(f *testing.F) {
	for _, name := range []string{"prompt_response", "messages", "tokens", "bad_row"} {
		b, err := os.ReadFile(parquetFile(name + ".parquet"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	tok := newFake(plainChatML, false)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		p := filepath.Join(t.TempDir(), "f.parquet")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		LoadSFT(p, tok, Options{MaxLen: 64, OnBadLine: BadLineSkip})
	})
}
