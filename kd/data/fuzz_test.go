package data

import (
	"bufio"
	"bytes"
	"os"
	"testing"
)

// FuzzParseLine feeds arbitrary lines through the line parser and the whole
// per-line path (parse, render with each template, fit to a length), SFT and
// pairs: it must never panic, and what it returns must be well formed.
func FuzzParseLine(f *testing.F) {
	file, err := os.Open("testdata/sample.jsonl")
	if err != nil {
		f.Fatal(err)
	}
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		f.Add(append([]byte(nil), sc.Bytes()...))
	}
	file.Close()
	for _, s := range []string{``, `{}`, `null`, `[]`, `{"input_ids": [1e400]}`, `{"input_ids": [-0]}`,
		`{"messages": [{"role": "assistant", "content": "</think>"}]}`, `{"prompt": "", "response": "\n\n"}`,
		`{"prompt": "p", "response": "ab", "teacher_tokens": [{"token": "a", "logprob": -0.5, "id": 97}, {"token": "b", "logprob": -0.5, "id": 98}], "teacher_top_logprobs": [[{"token": "a", "logprob": -0.5, "id": 97}], [{"token": "c", "logprob": -1, "id": null}]]}`,
		`{"prompt": "p", "response": "\n\n", "teacher_tokens": [{"token": "\n", "logprob": -0.5, "id": 10}, {"token": "\n", "logprob": -0.5, "id": 10}], "teacher_top_logprobs": [[{"token": "\n", "logprob": -0.5, "id": 10}], [{"token": "\n", "logprob": -1, "id": 10}]]}`} {
		f.Add([]byte(s))
	}
	if label, err := os.ReadFile("testdata/parquet/label.jsonl"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(label))
		for sc.Scan() {
			f.Add(append([]byte(nil), sc.Bytes()...))
		}
	}
	toks := []Tokenizer{newFake("", false), newFake(plainChatML, false), newFake(qwen3Template, true)}
	f.Fuzz(func(t *testing.T, line []byte) {
		for _, pairs := range []bool{false, true} {
			if _, err := parseLine(line, pairs, 1000); err != nil && err.Error() == "" {
				t.Fatal("an error without a reason")
			}
		}
		for _, tok := range toks {
			for _, overflow := range []string{OverflowTruncate, OverflowDrop, OverflowError} {
				opt := Options{MaxLen: 24, Overflow: overflow, MaxPromptLen: 8, Vocab: 1000}
				if err := opt.normalize(); err != nil {
					t.Fatal(err)
				}
				l := &loader{tok: tok, opt: opt, rep: &Report{}}
				if ex, err := l.sftLine(line, "f:1"); err == nil {
					if len(ex.Tokens) == 0 || len(ex.Tokens) != len(ex.Labels) || len(ex.Tokens) > opt.MaxLen || ex.LossTokens() == 0 {
						t.Fatalf("bad example %+v", ex)
					}
					if _, err := MakeBatch([]Example{ex}, 0, 0); err != nil {
						t.Fatal(err)
					}
					if ex.TopK != nil {
						if len(ex.TopK.Has) != len(ex.Tokens) || len(ex.TopK.IDs) != len(ex.Tokens)*ex.TopK.K {
							t.Fatalf("teacher top-k %+v for %d tokens", ex.TopK, len(ex.Tokens))
						}
						if _, _, _, _, _, err := MakeTopK([]Example{ex}, len(ex.Tokens)); err != nil {
							t.Fatal(err)
						}
					}
				}
				l = &loader{tok: tok, opt: opt, rep: &Report{}, pairs: true}
				if p, err := l.pairLine(line, "f:1"); err == nil {
					if len(p.Chosen) == 0 || len(p.Rejected) == 0 || len(p.Prompt)+max(len(p.Chosen), len(p.Rejected)) > opt.MaxLen {
						t.Fatalf("bad pair %+v", p)
					}
					if _, err := MakePairBatch([]Pair{p}, 0, 0); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	})
}
