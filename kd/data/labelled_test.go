package data

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
)

// labelTok is one entry of an elicit label record.
type labelTok struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	ID      *int32  `json:"id,omitempty"`
}

func idp(v int32) *int32 { return &v }

// labelLine is an elicit label record for response (one byte per token,
// as the fake tokenizer's ids are bytes), the top alternatives of token i
// being the token itself and then byte 'a'+i (two per position).
func labelLine(extra map[string]any, response string) (line string, top [][]labelTok) {
	var toks []labelTok
	for i := range len(response) {
		c := response[i]
		toks = append(toks, labelTok{Token: string(c), Logprob: -0.3, ID: idp(int32(c))})
		alt := byte('a' + i)
		if alt == c {
			alt = 'z'
		}
		top = append(top, []labelTok{{Token: string(c), Logprob: -0.3, ID: idp(int32(c))}, {Token: string(alt), Logprob: -1.5 - float64(i)/8, ID: idp(int32(alt))}})
	}
	rec := map[string]any{"id": "p1.s0", "response": response, "finish_reason": "stop", "teacher_tokens": toks, "teacher_top_logprobs": top}
	for k, v := range extra {
		rec[k] = v
	}
	b, _ := json.Marshal(rec)
	return string(b), top
}

// pretokenized is the pre-tokenized line a label record stands for: the
// ChatML rendering written out by hand, its answer's positions carrying the
// teacher's top-k (entry i at the position of answer token i).
func pretokenized(prefix, response string, open bool, top [][]labelTok) string {
	f := newFake(plainChatML, false)
	ids := f.Encode(prefix)
	labels := make([]int32, len(ids))
	for i := range labels {
		labels[i] = IgnoreIndex
	}
	resp := f.EncodeOrdinary(response)
	if !open {
		resp = append(resp, f.specials["<|im_end|>"], '\n')
	}
	tids, tlps := make([]any, len(ids)+len(resp)), make([]any, len(ids)+len(resp))
	for i, row := range top {
		var a []int32
		var b []float64
		for _, e := range row {
			a, b = append(a, *e.ID), append(b, e.Logprob)
		}
		tids[len(ids)+i], tlps[len(ids)+i] = a, b
	}
	line, _ := json.Marshal(map[string]any{"input_ids": append(ids, resp...), "labels": append(labels, resp...),
		"teacher_topk_ids": tids, "teacher_topk_logprobs": tlps})
	return string(line)
}

// TestLabelRecordIsSparseTeacher: elicit label records — prompt/response,
// messages with a system turn, an answer cut at the length limit — load as
// the examples (tokens, labels and teacher top-k) of the equivalent
// pre-tokenized lines, written out by hand.
func TestLabelRecordIsSparseTeacher(t *testing.T) {
	a, topA := labelLine(map[string]any{"prompt": "Hi"}, "ok, fine")
	b, topB := labelLine(map[string]any{"prompt": "Hey", "messages": []map[string]string{
		{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hey"}, {"role": "assistant", "content": "yes"}}}, "yes")
	c, topC := labelLine(map[string]any{"prompt": "Go on", "finish_reason": "length"}, "and then")
	labelled := writeFile(t, "label.jsonl", a+"\n"+b+"\n"+c+"\n")
	pre := writeFile(t, "pre.jsonl", strings.Join([]string{
		pretokenized("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "ok, fine", false, topA),
		pretokenized("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHey<|im_end|>\n<|im_start|>assistant\n", "yes", false, topB),
		pretokenized("<|im_start|>user\nGo on<|im_end|>\n<|im_start|>assistant\n", "and then", true, topC),
	}, "\n")+"\n")
	opt := Options{MaxLen: 200, Vocab: 301}
	got, _, rep, err := LoadSFT(labelled, newFake(plainChatML, false), opt)
	if err != nil {
		t.Fatal(err)
	}
	want, _, _, err := LoadSFT(pre, nil, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || !reflect.DeepEqual(got, want) {
		for i := range min(len(got), len(want)) {
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Errorf("example %d:\n got %+v %+v\nwant %+v %+v", i, got[i], got[i].TopK, want[i], want[i].TopK)
			}
		}
		t.Fatalf("%d examples from label records, %d pre-tokenized", len(got), len(want))
	}
	if rep.Open != 1 || rep.TeacherNoIDs != 0 {
		t.Errorf("report %+v", rep)
	}
	// Packed, the teacher travels with its tokens as the pre-tokenized one does.
	opt.Pack, opt.MaxLen = true, 40
	pg, _, _, err := LoadSFT(labelled, newFake(plainChatML, false), opt)
	if err != nil {
		t.Fatal(err)
	}
	pw, _, _, err := LoadSFT(pre, nil, opt)
	if err != nil || !reflect.DeepEqual(pg, pw) {
		t.Fatalf("packed: %v; equal %v", err, reflect.DeepEqual(pg, pw))
	}
}

// TestLabelRecordAlternatives: an alternative without a student id is left
// out (its slot gets an id not in the row and no mass); two that map to one
// id are one, their probabilities added; a position with none mapped has no
// teacher.
func TestLabelRecordAlternatives(t *testing.T) {
	rec := map[string]any{"prompt": "p", "response": "ab",
		"teacher_tokens": []labelTok{{Token: "a", Logprob: -0.3, ID: idp('a')}, {Token: "b", Logprob: -0.2, ID: idp('b')}},
		"teacher_top_logprobs": [][]labelTok{
			{{Token: "a", Logprob: -0.3, ID: idp('a')}, {Token: "é", Logprob: -3, ID: idp(-1)}, {Token: "A", Logprob: -2, ID: idp(0)}, {Token: "a ", Logprob: -4, ID: idp('a')}},
			{{Token: "☃", Logprob: -0.2, ID: idp(-1)}, {Token: "☄", Logprob: -2}},
		}}
	line, _ := json.Marshal(rec)
	got, _, _, err := LoadSFT(writeFile(t, "l.jsonl", string(line)+"\n"), newFake(plainChatML, false), Options{MaxLen: 100})
	if err != nil {
		t.Fatal(err)
	}
	ex := got[0]
	tk := ex.TopK
	if tk == nil || tk.K != 4 {
		t.Fatalf("top-k %+v", tk)
	}
	n := len(ex.Tokens)
	at := n - 4 // "a", "b", <|im_end|>, "\n"
	if ex.Tokens[at] != 'a' || ex.Tokens[at+1] != 'b' {
		t.Fatalf("tokens %v", ex.Tokens)
	}
	for i, has := range tk.Has {
		if has != (i == at) {
			t.Fatalf("position %d has a teacher: %v (only %d should)", i, has, at)
		}
	}
	ids, lps := tk.IDs[at*4:at*4+4], tk.LogProbs[at*4:at*4+4]
	merged := math.Log(math.Exp(-0.3) + math.Exp(-4))
	if ids[0] != 'a' || ids[1] != 0 || math.Abs(float64(lps[0])-merged) > 1e-6 || lps[1] != -2 {
		t.Errorf("mapped entries: ids %v logprobs %v (want a merged to %v, then id 0 at -2)", ids, lps, merged)
	}
	for k := 2; k < 4; k++ {
		if !math.IsInf(float64(lps[k]), -1) || ids[k] == 'a' || ids[k] == 0 || ids[k] == ids[5-k] {
			t.Errorf("unused slot %d: id %d logprob %v (want a distinct id not in the row, −Inf)", k, ids[k], lps[k])
		}
	}
}

// TestLabelRecordRealigned: a teacher that split the answer's text in
// other tokens than the student's tokenizer does ("\n" "\n" where the
// student has one "\n\n" token) is re-aligned: its own tokens take the
// place of the rendered ones, each with its distribution.
func TestLabelRecordRealigned(t *testing.T) {
	toks := []labelTok{{Token: "x", Logprob: -0.1, ID: idp('x')}, {Token: "\n", Logprob: -0.2, ID: idp('\n')}, {Token: "\n", Logprob: -0.3, ID: idp('\n')}, {Token: "y", Logprob: -0.4, ID: idp('y')}}
	var top [][]labelTok
	for _, tk := range toks {
		top = append(top, []labelTok{tk})
	}
	line, _ := json.Marshal(map[string]any{"prompt": "p", "response": "x\n\ny", "teacher_tokens": toks, "teacher_top_logprobs": top})
	got, _, _, err := LoadSFT(writeFile(t, "l.jsonl", string(line)+"\n"), newFake(plainChatML, false), Options{MaxLen: 100, Vocab: 301})
	if err != nil {
		t.Fatal(err)
	}
	ex := got[0]
	f := newFake(plainChatML, false)
	prefix := f.Encode("<|im_start|>user\np<|im_end|>\n<|im_start|>assistant\n")
	wantToks := append(append(prefix, 'x', '\n', '\n', 'y'), f.specials["<|im_end|>"], '\n')
	if !reflect.DeepEqual(ex.Tokens, wantToks) {
		t.Fatalf("tokens %v, want %v", ex.Tokens, wantToks)
	}
	for i, tk := range toks {
		p := len(prefix) + i
		if !ex.TopK.Has[p] || ex.TopK.IDs[p] != *tk.ID || ex.TopK.LogProbs[p] != float32(tk.Logprob) || ex.Labels[p] != *tk.ID {
			t.Errorf("answer token %d: label %d, teacher %v %d %v", i, ex.Labels[p], ex.TopK.Has[p], ex.TopK.IDs[p], ex.TopK.LogProbs[p])
		}
	}
}

// TestLabelRecordRefused: a record whose teacher cannot be placed is a bad
// line naming the file and line and why: a token without a student id, an
// answer the chat template changes (Llama 3's trims it), fields that do not
// fit together.
func TestLabelRecordRefused(t *testing.T) {
	good, _ := labelLine(map[string]any{"prompt": "Hi"}, "ok")
	one := func(mut func(map[string]any)) string {
		var m map[string]any
		json.Unmarshal([]byte(good), &m)
		mut(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	for _, c := range []struct {
		name, line, tmpl, want string
	}{
		{"unmapped token", one(func(m map[string]any) {
			m["teacher_tokens"].([]any)[1].(map[string]any)["id"] = -1
		}), plainChatML, `teacher token 1 ("k") is not one token of the student's tokenizer`},
		{"another token", one(func(m map[string]any) {
			m["teacher_tokens"].([]any)[1].(map[string]any)["id"] = 'j'
		}), plainChatML, `teacher token 1 ("k") has id 106, which is not that text's id in the student's tokenizer ([107])`},
		{"another text", one(func(m map[string]any) {
			m["teacher_tokens"].([]any)[1].(map[string]any)["token"] = "j"
			m["teacher_tokens"].([]any)[1].(map[string]any)["id"] = 'j'
		}), plainChatML, `teacher_tokens spell "oj", but the response is "ok"`},
		{"trimmed", func() string { l, _ := labelLine(map[string]any{"prompt": "Hi"}, " ok "); return l }(), llama3Template,
			`the answer renders as tokens that are not the teacher's (teacher_tokens, 4 tokens): token 0 is id 111 in the rendering, id 32 (" ") in the teacher's; the chat template changes the answer's text`},
		{"no tokens", one(func(m map[string]any) { delete(m, "teacher_tokens") }), plainChatML, `"teacher_top_logprobs" needs "teacher_tokens"`},
		{"lengths", one(func(m map[string]any) { m["teacher_tokens"] = m["teacher_tokens"].([]any)[:1] }), plainChatML, `"teacher_tokens" has 1 tokens and "teacher_top_logprobs" 2 positions`},
		{"vocabulary", one(func(m map[string]any) {
			m["teacher_top_logprobs"].([]any)[0].([]any)[1].(map[string]any)["id"] = 5000
		}), plainChatML, "teacher_top_logprobs[0][1] has id 5000, outside the vocabulary"},
		{"mass", one(func(m map[string]any) {
			m["teacher_top_logprobs"].([]any)[0].([]any)[1].(map[string]any)["logprob"] = -0.01
		}), plainChatML, "teacher_top_logprobs[0]: the probabilities sum to"},
		{"positive", one(func(m map[string]any) {
			m["teacher_top_logprobs"].([]any)[0].([]any)[1].(map[string]any)["logprob"] = 0.5
		}), plainChatML, "teacher_top_logprobs[0][1] has no log-probability ≤ 0"},
	} {
		p := writeFile(t, "label.jsonl", good+"\n"+c.line+"\n")
		_, _, _, err := LoadSFT(p, newFake(c.tmpl, false), Options{MaxLen: 100, Vocab: 301})
		if err == nil || !strings.Contains(err.Error(), "label.jsonl:2: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v\nwant line 2 and %q", c.name, err, c.want)
		}
		// Skipped under on_bad_line skip, the rest loads.
		train, _, rep, err := LoadSFT(p, newFake(c.tmpl, false), Options{MaxLen: 100, Vocab: 301, OnBadLine: BadLineSkip})
		if err != nil || len(train) != 1 || rep.Skipped != 1 {
			t.Errorf("%s, skipped: %v, %d examples, %d skipped", c.name, err, len(train), rep.Skipped)
		}
	}
}

// TestLabelRecordWithoutIDs: teacher logprobs without student ids (label
// run without --student-tokenizer) train as text, counted in the report.
func TestLabelRecordWithoutIDs(t *testing.T) {
	line, _ := json.Marshal(map[string]any{"prompt": "p", "response": "ab",
		"teacher_tokens":       []map[string]any{{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -0.2}},
		"teacher_top_logprobs": [][]map[string]any{{{"token": "a", "logprob": -0.1}}, {{"token": "b", "logprob": -0.2}}}})
	got, _, rep, err := LoadSFT(writeFile(t, "l.jsonl", string(line)+"\n"), newFake(plainChatML, false), Options{MaxLen: 100})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].TopK != nil || rep.TeacherNoIDs != 1 || !strings.Contains(rep.String(), "1 with teacher logprobs but no student token ids") {
		t.Fatalf("top-k %v, report %s", got[0].TopK, rep.String())
	}
}
