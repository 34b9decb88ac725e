package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestHFFixtures matches, id for id, what Hugging Face tokenizers gives for
// the corpus of scripts/tokenizer/make_fixtures.py: Encode, EncodeOrdinary
// (encode_special_tokens=True) and Decode of the result.
func TestHFFixtures(t *testing.T) {
	counts := map[string]int{}
	for _, f := range fixtures(t, "encode") {
		tok := named(t, f.Tok)
		counts[f.Tok]++
		if got := tok.Encode(f.Text); !equalIDs(got, f.IDs) {
			t.Errorf("%s: Encode(%q)\n got %v\nwant %v", f.Tok, f.Text, got, f.IDs)
			continue
		}
		want := f.IDs
		if f.Ordinary != nil {
			want = f.Ordinary
		}
		if got := tok.EncodeOrdinary(f.Text); !equalIDs(got, want) {
			t.Errorf("%s: EncodeOrdinary(%q)\n got %v\nwant %v", f.Tok, f.Text, got, want)
		}
		wantText := f.Text
		if f.Decoded != nil {
			wantText = *f.Decoded
		}
		if got := tok.Decode(f.IDs); got != wantText {
			t.Errorf("%s: Decode(Encode(%q)) = %q, want %q", f.Tok, f.Text, got, wantText)
		}
	}
	t.Logf("encode fixtures matched: %v", counts)
}

// TestHFDecodeFixtures decodes arbitrary id sequences (broken UTF-8 across
// byte tokens, special tokens in between) as HF does.
func TestHFDecodeFixtures(t *testing.T) {
	n := 0
	for _, f := range fixtures(t, "decode") {
		tok := named(t, f.Tok)
		if got := tok.Decode(f.IDs); got != f.Text {
			t.Errorf("%s: Decode(%v) = %q, want %q", f.Tok, f.IDs, got, f.Text)
		}
		n++
	}
	t.Logf("decode fixtures matched: %d", n)
}

// TestSplitFixtures checks each pattern scanner against Oniguruma's matches
// (HF's Split pre-tokenizer with the same regular expression).
func TestSplitFixtures(t *testing.T) {
	split := map[string]func(string) []string{
		"gpt2":   func(s string) []string { return splitGPT2(s, nil) },
		"qwen2":  func(s string) []string { return splitLlama(s, 1, nil) },
		"llama3": func(s string) []string { return splitLlama(s, 3, nil) },
	}
	n := 0
	for _, f := range fixtures(t, "split") {
		got := split[f.Pattern](f.Text)
		if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", f.Pieces) {
			t.Errorf("%s: split(%q)\n got %q\nwant %q", f.Pattern, f.Text, got, f.Pieces)
		}
		n++
	}
	t.Logf("split fixtures matched: %d", n)
}

// testPlan is one case of gpt-tokenizer's data/TestPlans.txt.
type testPlan struct {
	encoding, sample string
	encoded          []int32
}

// readTestPlans parses TestPlans.txt: blocks separated by a blank line, each
// "EncodingName: …", "Sample: …", "Encoded: [ids]" (as gpt-tokenizer's own
// test reads them).
func readTestPlans(t *testing.T) []testPlan {
	data, err := os.ReadFile(testPlansPath)
	if err != nil {
		t.Fatal(err)
	}
	var plans []testPlan
	for _, block := range strings.Split(string(data), "\n\n") {
		lines := strings.Split(block, "\n")
		if len(lines) < 3 || lines[0] == "" || lines[1] == "" || lines[2] == "" {
			continue
		}
		_, enc, _ := strings.Cut(lines[0], ": ")
		_, sample, _ := strings.Cut(lines[1], ": ")
		_, ids, _ := strings.Cut(lines[2], ": ")
		var p testPlan
		p.encoding, p.sample = enc, sample
		if err := json.Unmarshal([]byte(ids), &p.encoded); err != nil {
			t.Fatalf("TestPlans: %q: %v", lines[2], err)
		}
		plans = append(plans, p)
	}
	return plans
}

// TestPlans runs gpt-tokenizer's test plans for r50k_base (GPT-2) and
// cl100k_base (tiktoken; Llama 3's split pattern).
func TestPlans(t *testing.T) {
	byEncoding := map[string]string{"r50k_base": "gpt2", "cl100k_base": "cl100k"}
	counts := map[string]int{}
	for _, p := range readTestPlans(t) {
		name, ok := byEncoding[p.encoding]
		if !ok {
			continue
		}
		tok := named(t, name)
		got := tok.Encode(p.sample)
		if !equalIDs(got, p.encoded) {
			t.Errorf("%s: Encode(%q)\n got %v\nwant %v", p.encoding, p.sample, got, p.encoded)
			continue
		}
		if dec := tok.Decode(got); dec != p.sample {
			t.Errorf("%s: Decode(Encode(%q)) = %q", p.encoding, p.sample, dec)
		}
		counts[p.encoding]++
	}
	if counts["r50k_base"] != 64 || counts["cl100k_base"] != 64 {
		t.Errorf("plans matched %v, want 64 of each", counts)
	}
	t.Logf("test plans matched: %v", counts)
}

// roundTripCorpus is the fixture and plan texts plus a few of our own.
func roundTripCorpus(t *testing.T) []string {
	texts := []string{"", "a", "  \n\t \r\n x  ", "<|im_start|>user\nhi<|im_end|>", "Ǆemo ǅ ǆ"}
	for _, f := range fixtures(t, "encode") {
		texts = append(texts, f.Text)
	}
	for _, p := range readTestPlans(t) {
		texts = append(texts, p.sample)
	}
	return texts
}

// TestRoundTrip: Decode(Encode(s)) == s for valid UTF-8 (NFC(s) for Qwen3).
func TestRoundTrip(t *testing.T) {
	for _, name := range []string{"gpt2", "gpt2-digits", "qwen3", "qwen3-llama3", "cl100k"} {
		tok := named(t, name)
		for _, s := range roundTripCorpus(t) {
			want := s
			if name == "qwen3" {
				if formNFC.String(s) != s {
					continue // the normalizer runs between added tokens; NFC(s) may differ there
				}
			}
			for _, ids := range [][]int32{tok.Encode(s), tok.EncodeOrdinary(s)} {
				if got := tok.Decode(ids); got != want {
					t.Errorf("%s: Decode(Encode(%q)) = %q", name, s, got)
				}
			}
		}
	}
}

// TestQwen3NFC: a text encodes like its NFC form (as HF's NFC normalizer
// makes it), and decodes to that form.
func TestQwen3NFC(t *testing.T) {
	tok := named(t, "qwen3")
	n := 0
	for _, f := range fixtures(t, "normalize") {
		if f.Form != "NFC" {
			continue
		}
		if a, b := tok.Encode(f.Text), tok.Encode(f.Out); !equalIDs(a, b) {
			t.Errorf("Encode(%q) = %v, Encode of its NFC %q = %v", f.Text, a, f.Out, b)
		}
		if got := tok.Decode(tok.Encode(f.Text)); got != f.Out {
			t.Errorf("Decode(Encode(%q)) = %q, want %q", f.Text, got, f.Out)
		}
		n++
	}
	t.Logf("%d texts", n)
}

// TestSpecialTokens: literal special tokens are recognized by Encode and not
// by EncodeOrdinary; non-special added tokens by both.
func TestSpecialTokens(t *testing.T) {
	tok := named(t, "qwen3")
	id := func(s string) int32 {
		v, ok := tok.TokenID(s)
		if !ok {
			t.Fatalf("no token %q", s)
		}
		return v
	}
	start, end, think := id("<|im_start|>"), id("<|im_end|>"), id("<think>")
	ids := tok.Encode("<|im_start|>user<|im_end|><think>")
	if len(ids) != 4 || ids[0] != start || ids[2] != end || ids[3] != think {
		t.Errorf("Encode = %v, want [%d user %d %d]", ids, start, end, think)
	}
	ord := tok.EncodeOrdinary("<|im_start|>user<|im_end|><think>")
	for _, v := range ord {
		if v == start || v == end {
			t.Errorf("EncodeOrdinary matched a special token: %v", ord)
		}
	}
	if ord[len(ord)-1] != think {
		t.Errorf("EncodeOrdinary should still match <think>: %v", ord)
	}
	if got := tok.Decode(ord); got != "<|im_start|>user<|im_end|><think>" {
		t.Errorf("Decode(EncodeOrdinary) = %q", got)
	}
}

// TestAPI covers the accessors on the shipped files.
func TestAPI(t *testing.T) {
	q, err := LoadDir(qwen3DirForTest(t))
	if err != nil {
		t.Fatal(err)
	}
	if q.VocabSize() != 151669 {
		t.Errorf("Qwen3 VocabSize = %d, want 151669", q.VocabSize())
	}
	sp := q.Special()
	if sp.BOS != -1 || sp.EOS != 151645 || sp.EOSToken != "<|im_end|>" || sp.PAD != 151643 || sp.PADToken != "<|endoftext|>" || sp.AddBOS {
		t.Errorf("Qwen3 Special = %+v", sp)
	}
	if !strings.Contains(q.ChatTemplate(), "<|im_start|>") {
		t.Errorf("Qwen3 chat template missing: %.80q", q.ChatTemplate())
	}
	if tok, ok := q.Token(151644); !ok || tok != "<|im_start|>" {
		t.Errorf("Token(151644) = %q, %v", tok, ok)
	}
	if id, ok := q.TokenID("Ġthe"); !ok || q.Decode([]int32{id}) != " the" {
		t.Errorf("TokenID(Ġthe) = %d, %v", id, ok)
	}
	if _, ok := q.Token(-1); ok {
		t.Error("Token(-1) ok")
	}
	if _, ok := q.Token(1 << 30); ok {
		t.Error("Token(1<<30) ok")
	}
	if got := q.Decode([]int32{-5, 1 << 30}); got != "" {
		t.Errorf("Decode of unknown ids = %q", got)
	}

	g := named(t, "gpt2")
	if g.VocabSize() != 50257 {
		t.Errorf("GPT-2 VocabSize = %d", g.VocabSize())
	}
	if sp := g.Special(); sp.BOS != 50256 || sp.EOS != 50256 || sp.PAD != -1 {
		t.Errorf("GPT-2 Special = %+v", sp)
	}
}

// qwen3DirForTest lays out a model folder: tokenizer.json (still compressed:
// Load reads zstd by its magic number) and tokenizer_config.json.
func qwen3DirForTest(t *testing.T) string {
	dir := t.TempDir()
	for src, dst := range map[string]string{qwen3JSON: "tokenizer.json", qwen3Config: "tokenizer_config.json"} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir+"/"+dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestHash: equal for the same tokenizer from different files, different for
// different tokenizers, stable across loads.
func TestHash(t *testing.T) {
	g, gj, gd := named(t, "gpt2"), named(t, "gpt2-json"), named(t, "gpt2-digits")
	if g.Hash() != gj.Hash() {
		t.Errorf("GPT-2 from vocab.json/merges.txt and from tokenizer.json hash differently")
	}
	if g.Hash() == gd.Hash() {
		t.Errorf("pre-tokenizer change not in Hash")
	}
	q, ql := named(t, "qwen3"), named(t, "qwen3-llama3")
	if q.Hash() == ql.Hash() || q.Hash() == g.Hash() {
		t.Errorf("different tokenizers hash the same")
	}
	q2, err := Load(qwen3JSON)
	if err != nil {
		t.Fatal(err)
	}
	if q2.Hash() != q.Hash() || len(q.Hash()) != 64 {
		t.Errorf("Hash not stable: %s vs %s", q2.Hash(), q.Hash())
	}
	t.Logf("gpt2 %s qwen3 %s", g.Hash(), q.Hash())
}

// TestLossyDecode: ill-formed UTF-8 becomes one U+FFFD per maximal subpart.
func TestLossyDecode(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"a\xffb", "a\uFFFDb"},
		{"\xe2\x82", "\uFFFD"},                 // truncated 3-byte sequence: one U+FFFD
		{"\xe2\x82x", "\uFFFDx"},               //
		{"\xf0\x9f\x98", "\uFFFD"},             // truncated emoji
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogate: ED then two stray continuations
		{"\xc0\xaf", "\uFFFD\uFFFD"},           // overlong
		{"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"\x80\x80", "\uFFFD\uFFFD"},
		{"ok\xe4\xb8", "ok\uFFFD"},
	} {
		if got := string(appendLossy(nil, []byte(c.in))); got != c.want {
			t.Errorf("lossy(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	g := named(t, "gpt2")
	ids := g.Encode("😀")
	if got := g.Decode(ids[:len(ids)-1]); got != "\uFFFD" {
		t.Errorf("Decode of a cut emoji = %q", got)
	}
}

// TestInvalidUTF8 encodes stray bytes as their byte tokens, so they come back
// as the same bytes (shown as U+FFFD by Decode).
func TestInvalidUTF8(t *testing.T) {
	for _, name := range []string{"gpt2", "qwen3-llama3"} {
		tok := named(t, name)
		for _, s := range []string{"a\xffb", "\xe2\x82 x", "hello \xf0\x9f world\x80"} {
			ids := tok.Encode(s)
			var raw []byte
			for _, id := range ids {
				raw = append(raw, tok.idBytes[id]...)
			}
			if string(raw) != s {
				t.Errorf("%s: bytes of Encode(%q) = %q", name, s, raw)
			}
			if got, want := tok.Decode(ids), string(appendLossy(nil, []byte(s))); got != want || !utf8.ValidString(got) {
				t.Errorf("%s: Decode(Encode(%q)) = %q, want %q", name, s, got, want)
			}
		}
	}
}

// TestMergePaths: the array and heap forms of the BPE loop agree.
func TestMergePaths(t *testing.T) {
	for _, name := range []string{"gpt2", "qwen3", "cl100k"} {
		m := &named(t, name).model
		for _, f := range fixtures(t, "encode") {
			for _, w := range splitGPT2(f.Text, nil) {
				if len(w) > smallWord {
					w = w[:smallWord]
				}
				a := m.mergeSmall(m.symbols(w, nil), nil)
				b := m.mergeHeap(m.symbols(w, nil), nil)
				if !equalIDs(a, b) {
					t.Fatalf("%s: %q: small %v, heap %v", name, w, a, b)
				}
			}
		}
	}
}

// TestConcurrent encodes from many goroutines (run with -race).
func TestConcurrent(t *testing.T) {
	tok := named(t, "qwen3")
	texts := roundTripCorpus(t)
	want := make([][]int32, len(texts))
	for i, s := range texts {
		want[i] = tok.Encode(s)
	}
	done := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := range texts {
				j := (i + g*7) % len(texts)
				if got := tok.Encode(texts[j]); !equalIDs(got, want[j]) {
					done <- fmt.Errorf("goroutine %d: Encode(%q) differs", g, texts[j])
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// TestLoadErrors: unsupported or broken files give errors that name the file
// and the problem.
func TestLoadErrors(t *testing.T) {
	bl := `{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}`
	good := func(model, pre, dec string) string {
		return `{"added_tokens":[],"normalizer":null,"pre_tokenizer":` + pre + `,"decoder":` + dec + `,"model":` + model + `}`
	}
	bpe := `{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}`
	cases := []struct{ name, doc, want string }{
		{"unigram", good(`{"type":"Unigram","vocab":[["a",-1.0]]}`, bl, bl), `model type "Unigram" is not supported`},
		{"wordpiece", good(`{"type":"WordPiece","vocab":{"a":0},"unk_token":"[UNK]"}`, bl, bl), `model type "WordPiece"`},
		{"malformed", `{"model": {"type": "BPE", "vocab": {`, "not a tokenizer.json"},
		{"no merges", good(`{"type":"BPE","vocab":{"a":0}}`, bl, bl), "model.merges is missing"},
		{"no vocab", good(`{"type":"BPE","merges":[]}`, bl, bl), "model.vocab is missing"},
		{"bad merge", good(`{"type":"BPE","vocab":{"a":0,"b":1},"merges":["a b"]}`, bl, bl), `makes "ab", which is not in model.vocab`},
		{"merge form", good(`{"type":"BPE","vocab":{"a":0},"merges":["a b c"]}`, bl, bl), "not two tokens"},
		{"byte fallback", good(`{"type":"BPE","byte_fallback":true,"vocab":{},"merges":[]}`, bl, bl), "byte_fallback"},
		{"metaspace", good(bpe, `{"type":"Metaspace","replacement":"▁"}`, bl), `pre_tokenizer Metaspace is supported only with a SentencePiece-style BPE`},
		{"no bytelevel", good(bpe, `null`, bl), "no ByteLevel step"},
		{"unknown regex", good(bpe, `{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"\\w+"},"behavior":"Isolated","invert":false},`+bl+`]}`, bl), `Split pattern "\\w+" is not supported`},
		{"removed split", good(bpe, `{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"x"},"behavior":"Removed","invert":false},`+bl+`]}`, bl), `behavior "Removed"`},
		{"decoder", good(bpe, bl, `{"type":"Metaspace"}`), `decoder "Metaspace" is not supported`},
		{"no decoder", good(bpe, bl, `null`), "no decoder"},
		{"normalizer", `{"normalizer":{"type":"Lowercase"},"pre_tokenizer":` + bl + `,"decoder":` + bl + `,"model":` + bpe + `}`, `normalizer "Lowercase" is not supported`},
		{"bad id", good(`{"type":"BPE","vocab":{"a":-3},"merges":[]}`, bl, bl), "outside"},
		{"empty vocab", good(`{"type":"BPE","vocab":{},"merges":[]}`, bl, bl), "model.vocab is empty"},
		{"only added tokens", `{"added_tokens":[{"id":0,"content":"<s>","special":true}],"normalizer":null,"pre_tokenizer":` + bl +
			`,"decoder":` + bl + `,"model":{"type":"BPE","vocab":{},"merges":[]}}`, "model.vocab is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := t.TempDir() + "/tokenizer.json"
			if err := os.WriteFile(path, []byte(c.doc), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil {
				t.Fatalf("Load succeeded, want error containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q: want it to name %s and contain %q", err, path, c.want)
			}
		})
	}
	if _, err := Load(t.TempDir() + "/missing.json"); err == nil {
		t.Error("Load of a missing file succeeded")
	}
	if _, err := LoadDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no tokenizer.json") {
		t.Errorf("LoadDir of an empty folder: %v", err)
	}
}

// TestLoadSmall checks a hand-written tokenizer.json end to end: merges as
// pairs, added tokens with lstrip/rstrip, TemplateProcessing BOS, config.
func TestLoadSmall(t *testing.T) {
	vocab := map[string]int32{}
	for b := 0; b < 256; b++ {
		vocab[string(byteToRune[b])] = int32(b)
	}
	vocab["ab"], vocab["abc"], vocab["Ġab"] = 256, 257, 258
	doc := map[string]any{
		"added_tokens": []any{
			map[string]any{"id": 300, "content": "<s>", "special": true, "normalized": false},
			map[string]any{"id": 301, "content": "[M]", "special": false, "normalized": false, "lstrip": true, "rstrip": true},
		},
		"normalizer":     nil,
		"pre_tokenizer":  map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
		"decoder":        map[string]any{"type": "ByteLevel"},
		"post_processor": map[string]any{"type": "TemplateProcessing", "single": []any{map[string]any{"SpecialToken": map[string]any{"id": "<s>", "type_id": 0}}, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}}},
		"model":          map[string]any{"type": "BPE", "vocab": vocab, "merges": [][2]string{{"a", "b"}, {"ab", "c"}, {"Ġ", "ab"}}},
	}
	tok, err := Load(writeJSONDoc(t, doc))
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Encode("abc ab<s>x  [M]  y"); !equalIDs(got, []int32{257, 258, 300, 'x', 301, 'y'}) {
		t.Errorf("Encode = %v", got)
	}
	if sp := tok.Special(); sp.BOS != 300 || !sp.AddBOS || sp.EOS != -1 {
		t.Errorf("Special = %+v", sp)
	}
	if tok.VocabSize() != 302 {
		t.Errorf("VocabSize = %d", tok.VocabSize())
	}
	if _, ok := tok.Token(299); ok {
		t.Error("Token(299) should be absent")
	}
}

// TestLoadDirGPT2 reads a GPT-2 style folder (vocab.json, merges.txt and a
// tokenizer_config.json with object-form tokens and a template list).
func TestLoadDirGPT2(t *testing.T) {
	dir := t.TempDir()
	for src, dst := range map[string]string{gpt2Vocab: "vocab.json", gpt2Merges: "merges.txt"} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir+"/"+dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := `{"bos_token":{"content":"<|endoftext|>","__type":"AddedToken"},"pad_token":"<|endoftext|>","eos_token":null,
		"add_bos_token":true,"chat_template":[{"name":"tool_use","template":"T"},{"name":"default","template":"D"}]}`
	if err := os.WriteFile(dir+"/tokenizer_config.json", []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if sp := tok.Special(); sp.BOS != 50256 || sp.PAD != 50256 || sp.EOS != -1 || !sp.AddBOS {
		t.Errorf("Special = %+v", sp)
	}
	if tok.ChatTemplate() != "D" {
		t.Errorf("ChatTemplate = %q", tok.ChatTemplate())
	}
	if err := os.WriteFile(dir+"/chat_template.jinja", []byte("J"), 0o644); err != nil {
		t.Fatal(err)
	}
	if tok, err = LoadDir(dir); err != nil || tok.ChatTemplate() != "J" {
		t.Errorf("chat_template.jinja not used: %v %q", err, tok.ChatTemplate())
	}
	if err := os.WriteFile(dir+"/tokenizer_config.json", []byte(`{"eos_token":"<nope>"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), `eos_token "<nope>" is not in the vocabulary`) {
		t.Errorf("unknown eos_token: %v", err)
	}
}

// TestLoadDirErrorsNameFile: in a model folder, a problem is reported with
// the file it is in: a bad merge in tokenizer.json names tokenizer.json (not
// tokenizer_config.json, read after it), an unknown eos_token in
// tokenizer_config.json names that file, and a bad line of merges.txt or an
// empty vocab.json names those.
func TestLoadDirErrorsNameFile(t *testing.T) {
	bl := `{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}`
	write := func(t *testing.T, dir, name, data string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	wantErr := func(t *testing.T, err error, file string, not string, what string) {
		t.Helper()
		if err == nil {
			t.Fatalf("loaded; want an error naming %s", file)
		}
		msg := err.Error()
		if !strings.Contains(msg, file+": ") || !strings.Contains(msg, what) || (not != "" && strings.Contains(msg, not)) {
			t.Errorf("error %q: want it to name %s (not %q) and say %q", msg, file, not, what)
		}
	}
	t.Run("merge in tokenizer.json", func(t *testing.T) {
		dir := t.TempDir()
		tj := write(t, dir, "tokenizer.json", `{"pre_tokenizer":`+bl+`,"decoder":`+bl+
			`,"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":["a b"]}}`)
		write(t, dir, "tokenizer_config.json", `{"eos_token":"a"}`)
		_, err := LoadDir(dir)
		wantErr(t, err, tj, "tokenizer_config.json", `makes "ab", which is not in model.vocab`)
	})
	t.Run("eos_token in tokenizer_config.json", func(t *testing.T) {
		dir := t.TempDir()
		tj := write(t, dir, "tokenizer.json", `{"pre_tokenizer":`+bl+`,"decoder":`+bl+
			`,"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}}`)
		cfg := write(t, dir, "tokenizer_config.json", `{"eos_token":"<nope>"}`)
		_, err := LoadDir(dir)
		wantErr(t, err, cfg, "", `eos_token "<nope>" is not in the vocabulary of `+tj)
	})
	t.Run("merges.txt line", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "vocab.json", `{"a":0,"b":1,"ab":2,"c":3}`)
		mt := write(t, dir, "merges.txt", "#version: 0.2\na b\nab c\n")
		_, err := LoadDir(dir)
		wantErr(t, err, mt+":3", "", `merge 1 ("ab" "c") makes "abc", which is not in vocab.json`)
	})
	t.Run("empty vocab.json", func(t *testing.T) {
		dir := t.TempDir()
		vj := write(t, dir, "vocab.json", `{}`)
		write(t, dir, "merges.txt", "#version: 0.2\na b\n")
		_, err := LoadDir(dir)
		wantErr(t, err, vj, "", "vocab.json is empty")
	})
}
