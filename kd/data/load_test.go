package data

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadSFTShapes(t *testing.T) {
	imS, imE := []int32{257}, []int32{258}
	nl := bytesOf("\n")
	sys := "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
	sysTurn := cat(imS, bytesOf("system\n"+sys), imE, nl)
	for _, c := range []struct {
		name, template, line string
		tokens, labels       []int32
	}{
		{
			name: "prompt/response plain", template: "",
			line:   `{"prompt": "Q?", "response": " A."}`,
			tokens: cat(bytesOf("Q? A."), []int32{256}),
			labels: cat(ignore(2), bytesOf(" A."), []int32{256}),
		},
		{
			name: "prompt/completion plain", template: "",
			line:   `{"prompt": "x=", "completion": "1", "extra": {"teacher_topk": [[1, -0.5]]}}`,
			tokens: cat(bytesOf("x=1"), []int32{256}),
			labels: cat(ignore(2), bytesOf("1"), []int32{256}),
		},
		{
			name: "prompt/response chatml", template: smolTemplate,
			line:   `{"prompt": "Hi", "response": "Yo"}`,
			tokens: cat(sysTurn, imS, bytesOf("user\nHi"), imE, nl, imS, bytesOf("assistant\nYo"), imE, nl),
			labels: cat(ignore(len(sysTurn)), ignore(1+len("user\nHi")+2), ignore(1+len("assistant\n")), bytesOf("Yo"), imE, nl),
		},
		{
			name: "messages chatml", template: smolTemplate,
			line: `{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]}`,
			tokens: cat(imS, bytesOf("system\nS"), imE, nl, imS, bytesOf("user\nu1"), imE, nl, imS, bytesOf("assistant\na1"), imE, nl,
				imS, bytesOf("user\nu2"), imE, nl, imS, bytesOf("assistant\na2"), imE, nl),
			labels: cat(ignore(1+len("system\nS")+2), ignore(1+len("user\nu1")+2), ignore(1+len("assistant\n")), bytesOf("a1"), imE, nl,
				ignore(1+len("user\nu2")+2), ignore(1+len("assistant\n")), bytesOf("a2"), imE, nl),
		},
		{
			name: "sharegpt conversations", template: plainChatML,
			line:   `{"conversations": [{"from": "human", "value": "h"}, {"from": "gpt", "value": "g"}]}`,
			tokens: cat(imS, bytesOf("user\nh"), imE, nl, imS, bytesOf("assistant\ng"), imE, nl),
			labels: cat(ignore(1+len("user\nh")+2), ignore(1+len("assistant\n")), bytesOf("g"), imE, nl),
		},
		{
			name: "conversational prompt/completion", template: plainChatML,
			line:   `{"prompt": [{"role": "user", "content": "p"}], "completion": [{"role": "assistant", "content": "c"}]}`,
			tokens: cat(imS, bytesOf("user\np"), imE, nl, imS, bytesOf("assistant\nc"), imE, nl),
			labels: cat(ignore(1+len("user\np")+2), ignore(1+len("assistant\n")), bytesOf("c"), imE, nl),
		},
		{
			name: "text", template: plainChatML,
			line:   `{"text": "<|im_start|>ab"}`,
			tokens: cat(imS, bytesOf("ab"), []int32{256}),
			labels: cat(imS, bytesOf("ab"), []int32{256}),
		},
		{
			name: "input_ids and labels", template: "",
			line:   `{"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8]}`,
			tokens: []int32{5, 6, 7, 8},
			labels: []int32{IgnoreIndex, IgnoreIndex, 7, 8},
		},
		{
			name: "input_ids alone", template: "",
			line:   `{"input_ids": [5, 6, 7]}`,
			tokens: []int32{5, 6, 7},
			labels: []int32{5, 6, 7},
		},
		{
			name: "attention mask removes padding", template: "",
			line:   `{"input_ids": [0, 0, 5, 6, 7], "labels": [-100, -100, -100, 6, 7], "attention_mask": [0, 0, 1, 1, 1]}`,
			tokens: []int32{5, 6, 7},
			labels: []int32{IgnoreIndex, 6, 7},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeFile(t, "d.jsonl", c.line+"\n")
			train, val, rep, err := LoadSFT(p, newFake(c.template, false), Options{MaxLen: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if len(train) != 1 || len(val) != 0 || rep.Examples != 1 || rep.Lines != 1 {
				t.Fatalf("%d train, %d val, report %+v", len(train), len(val), rep)
			}
			if !slices.Equal(train[0].Tokens, c.tokens) {
				t.Errorf("tokens\n%v\nwant\n%v", train[0].Tokens, c.tokens)
			}
			if !slices.Equal(train[0].Labels, c.labels) {
				t.Errorf("labels\n%v\nwant\n%v", train[0].Labels, c.labels)
			}
		})
	}
}

func TestLoadSFTPretokenizedWithoutTokenizer(t *testing.T) {
	p := writeFile(t, "d.jsonl", `{"input_ids": [1, 2]}`+"\n"+`{"input_ids": [3, 4, 5], "labels": [-100, 4, 5]}`+"\n")
	train, _, rep, err := LoadSFT(p, nil, Options{MaxLen: 8})
	if err != nil {
		t.Fatal(err)
	}
	if len(train) != 2 || rep.Template != "" || rep.Tokens != 5 || rep.LossTokens != 3 {
		t.Fatalf("%d examples, report %+v", len(train), rep)
	}
	p = writeFile(t, "d.jsonl", `{"prompt": "a", "response": "b"}`+"\n")
	if _, _, _, err := LoadSFT(p, nil, Options{MaxLen: 8, OnBadLine: BadLineSkip}); err == nil || !strings.Contains(err.Error(), "tokenizer") {
		t.Fatalf("text without a tokenizer: %v", err)
	}
}

func TestOverflow(t *testing.T) {
	// Plain template: "p" + 20 bytes of response + EOS = 22 tokens.
	long := `{"prompt": "p", "response": "` + strings.Repeat("r", 20) + `"}`
	short := `{"prompt": "p", "response": "rr"}`
	// The response starts after MaxLen: nothing to learn once truncated.
	late := `{"prompt": "` + strings.Repeat("p", 30) + `", "response": "r"}`
	p := writeFile(t, "o.jsonl", short+"\n"+long+"\n"+late+"\n")
	tok := newFake("", false)

	train, _, rep, err := LoadSFT(p, tok, Options{MaxLen: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(train) != 2 || rep.Truncated != 1 || rep.Dropped != 1 {
		t.Fatalf("truncate: %d examples, report %+v", len(train), rep)
	}
	if got := train[1]; len(got.Tokens) != 10 || !slices.Equal(got.Tokens, bytesOf("p"+strings.Repeat("r", 9))) || got.Labels[0] != IgnoreIndex || got.Labels[9] != 'r' {
		t.Fatalf("truncated example %v / %v", got.Tokens, got.Labels)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Line != 3 || !strings.Contains(rep.Problems[0].Reason, "no response token") {
		t.Fatalf("problems %+v", rep.Problems)
	}

	train, _, rep, err = LoadSFT(p, tok, Options{MaxLen: 10, Overflow: OverflowDrop})
	if err != nil {
		t.Fatal(err)
	}
	if len(train) != 1 || rep.Dropped != 2 || rep.Truncated != 0 || rep.Lines != 3 {
		t.Fatalf("drop: %d examples, report %+v", len(train), rep)
	}

	// error stops even under skip, naming file:line and both lengths.
	_, _, _, err = LoadSFT(p, tok, Options{MaxLen: 10, Overflow: OverflowError, OnBadLine: BadLineSkip})
	var le *LineError
	if !errors.As(err, &le) || le.Line != 2 || le.File != p {
		t.Fatalf("error: %v", err)
	}
	for _, s := range []string{p + ":2:", "22 tokens", "maximum length 10"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q lacks %q", err, s)
		}
	}
}

func TestPacking(t *testing.T) {
	var b strings.Builder
	total := 0
	for i := range 23 {
		resp := strings.Repeat(string(rune('a'+i%26)), 1+i%7)
		fmt.Fprintf(&b, `{"prompt": "P%d:", "response": "%s"}`+"\n", i, resp)
		total += len(fmt.Sprintf("P%d:", i)) + len(resp) + 1
	}
	p := writeFile(t, "p.jsonl", b.String())
	const L = 16
	train, _, rep, err := LoadSFT(p, newFake("", false), Options{MaxLen: L, Pack: true, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for i, r := range train {
		if len(r.Tokens) != len(r.Labels) {
			t.Fatalf("row %d: %d tokens, %d labels", i, len(r.Tokens), len(r.Labels))
		}
		if i < len(train)-1 && len(r.Tokens) != L {
			t.Fatalf("row %d has %d tokens, want %d", i, len(r.Tokens), L)
		}
		for j, l := range r.Labels {
			if l != IgnoreIndex && l != r.Tokens[j] {
				t.Fatalf("row %d: label %d at %d is not its token %d", i, l, j, r.Tokens[j])
			}
		}
		got += len(r.Tokens)
	}
	if got != total || len(train) != (total+L-1)/L || rep.Train != len(train) {
		t.Fatalf("%d tokens in %d rows, want %d in %d", got, len(train), total, (total+L-1)/L)
	}
	// The stream is the examples concatenated in the seeded order: every
	// example's tokens appear, each EOS followed by the next prompt.
	eos := 0
	for _, r := range train {
		for _, id := range r.Tokens {
			if id == 256 {
				eos++
			}
		}
	}
	if eos != 23 {
		t.Fatalf("%d EOS tokens in the packed rows, want 23", eos)
	}
	// Packing is seeded.
	again, _, _, _ := LoadSFT(p, newFake("", false), Options{MaxLen: L, Pack: true, Seed: 3})
	other, _, _, _ := LoadSFT(p, newFake("", false), Options{MaxLen: L, Pack: true, Seed: 4})
	if !slices.EqualFunc(train, again, exampleEqual) || slices.EqualFunc(train, other, exampleEqual) {
		t.Fatal("packing order is not a function of the seed")
	}
}

func exampleEqual(a, b Example) bool {
	return slices.Equal(a.Tokens, b.Tokens) && slices.Equal(a.Labels, b.Labels)
}

func TestValidationSplit(t *testing.T) {
	var b strings.Builder
	for i := range 50 {
		fmt.Fprintf(&b, `{"prompt": "q%02d", "response": "r%02d"}`+"\n", i, i)
	}
	p := writeFile(t, "v.jsonl", b.String())
	tok := newFake("", false)
	key := func(e Example) string { return tok.decode(e.Tokens) }
	load := func(seed uint64, frac float64) (tr, va []Example) {
		t.Helper()
		tr, va, rep, err := LoadSFT(p, tok, Options{MaxLen: 64, Seed: seed, ValFraction: frac})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Train != len(tr) || rep.Val != len(va) {
			t.Fatalf("report %d/%d, got %d/%d", rep.Train, rep.Val, len(tr), len(va))
		}
		return tr, va
	}
	tr, va := load(1, 0.1)
	if len(tr) != 45 || len(va) != 5 {
		t.Fatalf("split %d/%d, want 45/5", len(tr), len(va))
	}
	seen := map[string]bool{}
	for _, e := range tr {
		seen[key(e)] = true
	}
	for _, e := range va {
		if seen[key(e)] {
			t.Fatalf("%q is in both sets", key(e))
		}
		seen[key(e)] = true
	}
	if len(seen) != 50 {
		t.Fatalf("%d distinct examples, want 50", len(seen))
	}
	_, va2 := load(1, 0.1)
	_, va3 := load(2, 0.1)
	if !slices.EqualFunc(va, va2, exampleEqual) || slices.EqualFunc(va, va3, exampleEqual) {
		t.Fatal("the split is not a function of the seed")
	}
	if _, va := load(1, 0.001); len(va) != 1 {
		t.Fatalf("a tiny fraction gave %d validation examples, want 1", len(va))
	}

	one := writeFile(t, "one.jsonl", `{"prompt": "a", "response": "b"}`+"\n")
	if _, _, _, err := LoadSFT(one, tok, Options{MaxLen: 8, ValFraction: 0.5}); err == nil || !strings.Contains(err.Error(), "too few") {
		t.Fatalf("one example split: %v", err)
	}

	// A validation file, and packing after the split keeps them apart.
	vf := writeFile(t, "val.jsonl", `{"prompt": "vq", "response": "vr"}`+"\n")
	tr, va, rep, err := LoadSFT(p, tok, Options{MaxLen: 64, ValFile: vf})
	if err != nil {
		t.Fatal(err)
	}
	if len(tr) != 50 || len(va) != 1 || len(rep.Files) != 2 || rep.Examples != 51 {
		t.Fatalf("val file: %d/%d, report %+v", len(tr), len(va), rep)
	}
	if _, _, _, err := LoadSFT(p, tok, Options{MaxLen: 64, ValFile: vf, ValFraction: 0.1}); err == nil {
		t.Fatal("both a validation file and a fraction were accepted")
	}
}

func TestBadLines(t *testing.T) {
	good := `{"prompt": "p", "response": "r"}`
	bad := []struct{ line, reason string }{
		{`{"prompt": "p", "response": "r"`, "not valid JSON"},
		{`not json at all`, "not valid JSON"},
		{`[1, 2]`, "JSON array, want an object"},
		{`"just a string"`, "want an object"},
		{`{"prompt": "p"}`, `lacks "response"`},
		{`{"response": "r"}`, `lacks "prompt"`},
		{`{"foo": 1, "bar": 2}`, `no known fields (found "bar", "foo")`},
		{`{"prompt": 5, "response": "r"}`, `"prompt" is a number, want a string`},
		{`{"prompt": "p", "response": null}`, `"response" is null`},
		{`{"messages": [{"role": "wizard", "content": "x"}]}`, `unknown role "wizard"`},
		{`{"messages": [{"role": "user", "content": "x"}]}`, "no assistant message"},
		{`{"messages": [{"role": "user"}]}`, `lacks "content"`},
		{`{"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}`, "multimodal"},
		{`{"messages": "hi"}`, `"messages" is a string, want a list of messages`},
		{`{"messages": [{"role": "tool", "content": "x"}]}`, "tool messages are not supported"},
		{`{"prompt": "p", "chosen": "a", "rejected": "b"}`, "load it as DPO data"},
		{`{"text": "` + strings.Repeat("x", 300) + `"}`, "longer than 256 bytes"},
	}
	var b strings.Builder
	b.WriteString(good + "\n")
	for _, l := range bad {
		b.WriteString(l.line + "\n")
	}
	b.WriteString("\n   \n" + good + "\r\n")
	p := writeFile(t, "bad.jsonl", b.String())
	tok := newFake(plainChatML, false)

	train, _, rep, err := LoadSFT(p, tok, Options{MaxLen: 100, OnBadLine: BadLineSkip, MaxLineBytes: 256})
	if err != nil {
		t.Fatal(err)
	}
	if len(train) != 2 || rep.Skipped != len(bad) || rep.Lines != len(bad)+2 || rep.Blank != 2 || rep.Examples != 2 {
		t.Fatalf("%d examples, report %+v", len(train), rep)
	}
	if len(rep.Problems) != len(bad) {
		t.Fatalf("%d problems, want %d", len(rep.Problems), len(bad))
	}
	for i, want := range bad {
		pr := rep.Problems[i]
		if pr.File != p || pr.Line != i+2 || !strings.Contains(pr.Reason, want.reason) {
			t.Errorf("problem %d: %s, want line %d with %q", i, pr.Error(), i+2, want.reason)
		}
	}
	if s := rep.String(); !strings.Contains(s, fmt.Sprintf("%d bad lines skipped", len(bad))) || !strings.Contains(s, p+":2:") {
		t.Errorf("report summary:\n%s", s)
	}

	// Under stop each bad line alone stops the load with its file:line.
	for i, l := range bad {
		q := writeFile(t, "stop.jsonl", good+"\n"+l.line+"\n"+good+"\n")
		_, _, _, err := LoadSFT(q, tok, Options{MaxLen: 100, MaxLineBytes: 256})
		var le *LineError
		if !errors.As(err, &le) || le.Line != 2 || !strings.HasPrefix(err.Error(), q+":2: ") || !strings.Contains(err.Error(), l.reason) {
			t.Errorf("bad line %d under stop: %v", i, err)
		}
	}
}

func TestChatWithoutTemplateStops(t *testing.T) {
	p := writeFile(t, "c.jsonl", `{"prompt": "p", "response": "r"}`+"\n"+`{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}`+"\n")
	_, _, _, err := LoadSFT(p, newFake("", false), Options{MaxLen: 100, OnBadLine: BadLineSkip})
	if err == nil || !strings.HasPrefix(err.Error(), p+":2: ") || !strings.Contains(err.Error(), "chat template") {
		t.Fatalf("messages without a template under skip: %v", err)
	}
	p = writeFile(t, "l.jsonl", `{"prompt": "p", "response": "r"}`+"\n")
	_, _, _, err = LoadSFT(p, newFake(brokenTemplate, false), Options{MaxLen: 100, OnBadLine: BadLineSkip})
	if err == nil || !strings.Contains(err.Error(), "chat template") || !strings.Contains(err.Error(), "does not compile") {
		t.Fatalf("a template that does not compile: %v", err)
	}
}

func TestMixedKinds(t *testing.T) {
	p := writeFile(t, "m.jsonl", `{"input_ids": [1, 2, 3]}`+"\n"+`{"prompt": "p", "response": "r"}`+"\n")
	_, _, rep, err := LoadSFT(p, newFake("", false), Options{MaxLen: 100, OnBadLine: BadLineSkip})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Skipped != 1 || !strings.Contains(rep.Problems[0].Reason, "a text line among pre-tokenized examples") || !strings.Contains(rep.Problems[0].Reason, p+":1") {
		t.Fatalf("report %+v", rep)
	}
}

func TestPretokenizedValidation(t *testing.T) {
	for _, c := range []struct{ line, reason string }{
		{`{"input_ids": [1, 2.5]}`, "input_ids[1] is 2.5, want an integer"},
		{`{"input_ids": [1, "2"]}`, "input_ids[1] is a string"},
		{`{"input_ids": [1, -3]}`, "input_ids[1] is -3, want a token id ≥ 0"},
		{`{"input_ids": [1, 5000]}`, "outside the vocabulary of 1000"},
		{`{"input_ids": []}`, `"input_ids" is empty`},
		{`{"input_ids": {"a": 1}}`, "want a list of integers"},
		{`{"input_ids": [1, 2], "labels": [1]}`, `"labels" has 1 values for 2 input_ids`},
		{`{"input_ids": [1, 2], "labels": [-100, -5]}`, "labels[1] is -5"},
		{`{"input_ids": [1, 2], "labels": [1, -100]}`, "nothing to learn"},
		{`{"input_ids": [1, 2], "attention_mask": [1, 2]}`, "want 0 or 1"},
		{`{"input_ids": [1]}`, "nothing to learn"},
		{`{"input_ids": [1, 99999999999]}`, "outside the vocabulary"},
	} {
		p := writeFile(t, "t.jsonl", c.line+"\n")
		_, _, _, err := LoadSFT(p, nil, Options{MaxLen: 10, Vocab: 1000})
		if err == nil || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: err %v, want %q", c.line, err, c.reason)
		}
	}
	// Integers written as floats are integers.
	p := writeFile(t, "t.jsonl", `{"input_ids": [1.0, 2e0, 3]}`+"\n")
	train, _, _, err := LoadSFT(p, nil, Options{MaxLen: 10})
	if err != nil || !slices.Equal(train[0].Tokens, []int32{1, 2, 3}) {
		t.Fatalf("%v %v", train, err)
	}
}

func TestEmptyFiles(t *testing.T) {
	tok := newFake("", false)
	for name, content := range map[string]string{
		"empty":    "",
		"blank":    "\n\n  \n",
		"all bad":  "{}\nnope\n",
		"all long": `{"prompt": "` + strings.Repeat("p", 50) + `", "response": "r"}` + "\n",
	} {
		p := writeFile(t, "e.jsonl", content)
		_, _, _, err := LoadSFT(p, tok, Options{MaxLen: 10, OnBadLine: BadLineSkip})
		if err == nil || !strings.Contains(err.Error(), "no usable example") || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, _, _, err := LoadSFT(filepath.Join(t.TempDir(), "missing.jsonl"), tok, Options{MaxLen: 10}); err == nil {
		t.Error("a missing file loaded")
	}
	if _, _, _, err := LoadSFT("x", tok, Options{}); err == nil || !strings.Contains(err.Error(), "max length") {
		t.Errorf("MaxLen 0: %v", err)
	}
}

func TestGzipAndBOM(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte("\xef\xbb\xbf" + `{"prompt": "a", "response": "b"}` + "\n" + `{"prompt": "c", "response": "d"}`))
	zw.Close()
	p := filepath.Join(t.TempDir(), "d.jsonl.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	train, _, _, err := LoadSFT(p, newFake("", false), Options{MaxLen: 10})
	if err != nil || len(train) != 2 {
		t.Fatalf("%d examples, %v", len(train), err)
	}
}

func TestLongLinesStreamed(t *testing.T) {
	// Lines longer than the reader's buffer, under and over the limit.
	ok := `{"prompt": "p", "response": "` + strings.Repeat("r", 200<<10) + `"}`
	tooLong := `{"prompt": "p", "response": "` + strings.Repeat("r", 400<<10) + `"}`
	p := writeFile(t, "l.jsonl", ok+"\n"+tooLong+"\n"+ok)
	train, _, rep, err := LoadSFT(p, newFake("", false), Options{MaxLen: 1 << 20, MaxLineBytes: 300 << 10, OnBadLine: BadLineSkip})
	if err != nil {
		t.Fatal(err)
	}
	if len(train) != 2 || rep.Skipped != 1 || rep.Problems[0].Line != 2 {
		t.Fatalf("%d examples, report %+v", len(train), rep.Problems)
	}
	if n := len(train[1].Tokens); n != 1+(200<<10)+1 {
		t.Fatalf("%d tokens", n)
	}
}

func TestLoadPairs(t *testing.T) {
	imS, imE := []int32{257}, []int32{258}
	nl := bytesOf("\n")
	lines := []string{
		`{"prompt": "Q", "chosen": "good", "rejected": "bad"}`,
		`{"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "assistant", "content": "good"}], "rejected": [{"role": "assistant", "content": "bad"}]}`,
		`{"chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "good"}], "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "bad"}]}`,
	}
	p := writeFile(t, "pairs.jsonl", strings.Join(lines, "\n")+"\n")
	train, val, rep, err := LoadPairs(p, newFake(plainChatML, false), Options{MaxLen: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(train) != 3 || len(val) != 0 || rep.Template != TemplateJinja {
		t.Fatalf("%d pairs, report %+v", len(train), rep)
	}
	prompt := cat(imS, bytesOf("user\nQ"), imE, nl, imS, bytesOf("assistant\n"))
	for i, pr := range train {
		if !slices.Equal(pr.Prompt, prompt) || !slices.Equal(pr.Chosen, cat(bytesOf("good"), imE, nl)) || !slices.Equal(pr.Rejected, cat(bytesOf("bad"), imE, nl)) {
			t.Errorf("pair %d: %v | %v | %v", i, pr.Prompt, pr.Chosen, pr.Rejected)
		}
	}
	ce := train[0].ChosenExample()
	if !slices.Equal(ce.Tokens, cat(prompt, bytesOf("good"), imE, nl)) || !slices.Equal(ce.Labels, cat(ignore(len(prompt)), bytesOf("good"), imE, nl)) {
		t.Errorf("chosen example %v / %v", ce.Tokens, ce.Labels)
	}

	// Plain text and pre-tokenized pairs.
	p = writeFile(t, "plain.jsonl", `{"prompt": "Q:", "chosen": " yes", "rejected": " no"}`+"\n")
	train, _, _, err = LoadPairs(p, newFake("", false), Options{MaxLen: 100})
	if err != nil {
		t.Fatal(err)
	}
	if pr := train[0]; !slices.Equal(pr.Prompt, bytesOf("Q:")) || !slices.Equal(pr.Chosen, cat(bytesOf(" yes"), []int32{256})) || !slices.Equal(pr.Rejected, cat(bytesOf(" no"), []int32{256})) {
		t.Errorf("plain pair %v", pr)
	}
	p = writeFile(t, "tok.jsonl", `{"prompt_input_ids": [1, 2], "chosen_input_ids": [3], "rejected_input_ids": [4, 5]}`+"\n")
	train, _, _, err = LoadPairs(p, nil, Options{MaxLen: 100})
	if err != nil {
		t.Fatal(err)
	}
	if pr := train[0]; !slices.Equal(pr.Prompt, []int32{1, 2}) || !slices.Equal(pr.Chosen, []int32{3}) || !slices.Equal(pr.Rejected, []int32{4, 5}) {
		t.Errorf("pre-tokenized pair %v", pr)
	}

	// Bad pair lines.
	for _, c := range []struct{ line, reason string }{
		{`{"prompt": "Q", "chosen": "good"}`, `lacks "rejected"`},
		{`{"prompt": "Q", "response": "r"}`, "an SFT example"},
		{`{"prompt": "Q", "chosen": "", "rejected": "b"}`, `"chosen" is empty`},
		{`{"chosen": "a", "rejected": "b"}`, `lacks "prompt"`},
		{`{"prompt": "Q", "chosen": [{"role": "user", "content": "x"}], "rejected": "b"}`, "assistant turns only"},
		{`{"chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "a"}]}`, "the same conversation"},
	} {
		p := writeFile(t, "b.jsonl", c.line+"\n")
		_, _, _, err := LoadPairs(p, newFake(plainChatML, false), Options{MaxLen: 100})
		if err == nil || !strings.Contains(err.Error(), c.reason) || !strings.Contains(err.Error(), p+":1:") {
			t.Errorf("%s: %v, want %q", c.line, err, c.reason)
		}
	}
	if _, _, _, err := LoadPairs(p, nil, Options{MaxLen: 100, Pack: true}); err == nil {
		t.Error("packed pairs accepted")
	}
}

func TestPairOverflow(t *testing.T) {
	tok := newFake("", false)
	line := `{"prompt": "` + strings.Repeat("p", 8) + `", "chosen": "` + strings.Repeat("c", 6) + `", "rejected": "rr"}`
	p := writeFile(t, "po.jsonl", line+"\n")
	// 8 + 7 = 15 tokens for the longest side.
	train, _, rep, err := LoadPairs(p, tok, Options{MaxLen: 12})
	if err != nil {
		t.Fatal(err)
	}
	if pr := train[0]; len(pr.Prompt) != 8 || len(pr.Chosen) != 4 || len(pr.Rejected) != 3 || rep.Truncated != 1 {
		t.Fatalf("truncated pair %v, report %+v", pr, rep)
	}
	train, _, _, err = LoadPairs(p, tok, Options{MaxLen: 12, MaxPromptLen: 5})
	if err != nil {
		t.Fatal(err)
	}
	if pr := train[0]; len(pr.Prompt) != 5 || len(pr.Chosen) != 7 {
		t.Fatalf("prompt-cut pair %v", pr)
	}
	if _, _, _, err = LoadPairs(p, tok, Options{MaxLen: 8, OnBadLine: BadLineSkip}); err == nil || !strings.Contains(err.Error(), "no room") {
		t.Fatalf("no room: %v", err)
	}
	_, _, _, err = LoadPairs(p, tok, Options{MaxLen: 12, Overflow: OverflowError})
	if err == nil || !strings.Contains(err.Error(), p+":1:") || !strings.Contains(err.Error(), "15 tokens") || !strings.Contains(err.Error(), "maximum length 12") {
		t.Fatalf("error: %v", err)
	}
}
