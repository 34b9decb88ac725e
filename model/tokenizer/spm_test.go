package tokenizer

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model/gguf"
)

// llamaCppCase is one test string of llama.cpp's vocabulary tests and the ids
// its .out file expects (generated from the Hugging Face tokenizer of the
// model with add_special_tokens=False: no BOS).
type llamaCppCase struct {
	text string
	ids  []int32
}

// llamaCppCases reads testdata/llamacpp/NAME.inp and NAME.out as llama.cpp's
// test-tokenizer-0 does: the strings are separated by lines
// "__ggml_vocab_test__", the ids are one line per string.
func llamaCppCases(t *testing.T, name string) []llamaCppCase {
	t.Helper()
	inp, err := os.ReadFile(filepath.Join("testdata", "llamacpp", name+".inp"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(filepath.Join("testdata", "llamacpp", name+".out"))
	if err != nil {
		t.Fatal(err)
	}
	texts := strings.Split(string(inp), "\n__ggml_vocab_test__\n")
	lines := strings.Split(string(out), "\n")
	// Both files end with a separator or newline: the last piece is empty.
	if texts[len(texts)-1] == "" {
		texts = texts[:len(texts)-1]
	}
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(texts) != len(lines) || len(texts) < 40 {
		t.Fatalf("%s: %d strings, %d lines of ids", name, len(texts), len(lines))
	}
	cases := make([]llamaCppCase, len(texts))
	for i := range texts {
		cases[i].text = texts[i]
		for _, f := range strings.Fields(lines[i]) {
			id, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("%s.out line %d: %v", name, i+1, err)
			}
			cases[i].ids = append(cases[i].ids, int32(id))
		}
	}
	return cases
}

// TestSPMLlamaCppVocab encodes llama.cpp's test strings with the tokenizers
// of its vocabulary-only GGUF files for Llama 2 (SentencePiece) and Phi-3
// and matches the expected ids exactly; decoding gives the text back.
func TestSPMLlamaCppVocab(t *testing.T) {
	for _, name := range []string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-phi-3.gguf"} {
		t.Run(name, func(t *testing.T) {
			tok, err := LoadDir(filepath.Join("testdata", "llamacpp", name))
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range llamaCppCases(t, name) {
				got := tok.Encode(c.text)
				if !slices.Equal(got, c.ids) {
					t.Errorf("%q: %v, llama.cpp %v", c.text, got, c.ids)
				}
				if d := tok.Decode(got); d != c.text {
					t.Errorf("decode of %q gives %q", c.text, d)
				}
			}
		})
	}
}

// spmFixtures is testdata/spm/fixtures.json (scripts/fixtures/make_spm_fixtures.py).
type spmFixtures struct {
	Texts    []string `json:"texts"`
	Variants map[string]struct {
		Normalizer   json.RawMessage `json:"normalizer"`
		PreTokenizer json.RawMessage `json:"pre_tokenizer"`
		Decoder      json.RawMessage `json:"decoder"`
		IDs          [][]int32       `json:"ids"`
		Decoded      []string        `json:"decoded"`
		Decodes      []struct {
			IDs  []int32 `json:"ids"`
			Text string  `json:"text"`
		} `json:"decodes"`
	} `json:"variants"`
}

func loadSPMFixtures(t *testing.T) spmFixtures {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "spm", "fixtures.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx spmFixtures
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	if len(fx.Variants) != 4 || len(fx.Texts) < 50 {
		t.Fatalf("fixtures.json: %d variants, %d texts", len(fx.Variants), len(fx.Texts))
	}
	return fx
}

// TestSPMTokenizerJSONMatchesTokenizers loads the tokenizer.json that
// transformers' GGUF converter makes of Phi-3's vocabulary (BPE with
// byte_fallback and merges), with each of the component layouts of this
// family (Prepend/Replace normalizer; Metaspace first, always with split,
// never), and matches tokenizers' encode and decode on every string.
func TestSPMTokenizerJSONMatchesTokenizers(t *testing.T) {
	fx := loadSPMFixtures(t)
	base, err := readFile(filepath.Join("testdata", "spm", "phi3_tokenizer.json.zst"))
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range fx.Variants {
		t.Run(name, func(t *testing.T) {
			var doc map[string]json.RawMessage
			if err := json.Unmarshal(base, &doc); err != nil {
				t.Fatal(err)
			}
			doc["normalizer"], doc["pre_tokenizer"], doc["decoder"] = v.Normalizer, v.PreTokenizer, v.Decoder
			data, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "tokenizer.json")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			tok, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			for i, text := range fx.Texts {
				got := tok.Encode(text)
				if !slices.Equal(got, v.IDs[i]) {
					t.Errorf("%q: %v, tokenizers %v", text, got, v.IDs[i])
				}
				if d := tok.Decode(v.IDs[i]); d != v.Decoded[i] {
					t.Errorf("decode of %q: %q, tokenizers %q", text, d, v.Decoded[i])
				}
			}
			for _, c := range v.Decodes {
				if d := tok.Decode(c.IDs); d != c.Text {
					t.Errorf("decode %v: %q, tokenizers %q", c.IDs, d, c.Text)
				}
			}
		})
	}
}

// TestSPMGGUFMatchesTransformers: the tokenizer of Phi-3's GGUF file gives
// the ids transformers' GGUF converter gives (fixtures.json, variant
// "phi3"), and the merges GGUFFiles derives from the scores are
// transformers' generate_merges, in the same order.
func TestSPMGGUFMatchesTransformers(t *testing.T) {
	fx := loadSPMFixtures(t)
	path := filepath.Join("testdata", "llamacpp", "ggml-vocab-phi-3.gguf")
	tok, err := FromGGUF(path)
	if err != nil {
		t.Fatal(err)
	}
	v := fx.Variants["phi3"]
	for i, text := range fx.Texts {
		if got := tok.Encode(text); !slices.Equal(got, v.IDs[i]) {
			t.Errorf("%q: %v, transformers %v", text, got, v.IDs[i])
		}
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, err := GGUFFiles(f)
	if err != nil {
		t.Fatal(err)
	}
	type modelJSON struct {
		Model struct {
			Vocab  map[string]int32 `json:"vocab"`
			Merges [][2]string      `json:"merges"`
		} `json:"model"`
	}
	var ours, theirs modelJSON
	if err := json.Unmarshal(files["tokenizer.json"], &ours); err != nil {
		t.Fatal(err)
	}
	ref, err := readFile(filepath.Join("testdata", "spm", "phi3_tokenizer.json.zst"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(ref, &theirs); err != nil {
		t.Fatal(err)
	}
	if len(ours.Model.Merges) != len(theirs.Model.Merges) {
		t.Fatalf("%d merges, transformers %d", len(ours.Model.Merges), len(theirs.Model.Merges))
	}
	for i := range ours.Model.Merges {
		if ours.Model.Merges[i] != theirs.Model.Merges[i] {
			t.Fatalf("merge %d: %q, transformers %q", i, ours.Model.Merges[i], theirs.Model.Merges[i])
		}
	}
	if !maps.Equal(ours.Model.Vocab, theirs.Model.Vocab) {
		t.Error("the vocabulary differs from transformers'")
	}
}

// miniSPMGGUF writes a SentencePiece GGUF tokenizer: <unk> (type unknown),
// <s> and </s> (control), the 256 byte tokens <0x00>… (ids 3–258), then
// ▁ a b ba ab <think> ▁a. "ba" and "ab" have equal scores, and "ba" comes
// first, so that llama.cpp's rule (leftmost of equal scores) and the merges
// transformers derives (ranked one by one, "b a" before "a b") part.
func miniSPMGGUF(t *testing.T, edit func([]gguf.KV) []gguf.KV) string {
	t.Helper()
	tokens := []string{"<unk>", "<s>", "</s>"}
	types := []int64{ggufTokenUnknown, ggufTokenControl, ggufTokenControl}
	scores := []float64{0, 0, 0}
	for b := range 256 {
		tokens = append(tokens, fmt.Sprintf("<0x%02X>", b))
		types = append(types, 6)
		scores = append(scores, 0)
	}
	tokens = append(tokens, "▁", "a", "b", "ba", "ab", "<think>", "▁a")
	types = append(types, 1, 1, 1, 1, 1, ggufTokenUserDefined, 1)
	scores = append(scores, -1, -2, -3, -10, -10, 0, -20)
	md := []gguf.KV{
		{Key: "general.architecture", Value: gguf.StringValue("llama")},
		{Key: "tokenizer.ggml.model", Value: gguf.StringValue("llama")},
		{Key: "tokenizer.ggml.tokens", Value: gguf.StringsValue(tokens)},
		{Key: "tokenizer.ggml.scores", Value: gguf.FloatsValue(gguf.TypeFloat32, scores)},
		{Key: "tokenizer.ggml.token_type", Value: gguf.IntsValue(gguf.TypeInt32, types)},
		{Key: "tokenizer.ggml.bos_token_id", Value: gguf.Uint32Value(1)},
		{Key: "tokenizer.ggml.eos_token_id", Value: gguf.Uint32Value(2)},
		{Key: "tokenizer.ggml.unknown_token_id", Value: gguf.Uint32Value(0)},
	}
	if edit != nil {
		md = edit(md)
	}
	b, err := gguf.Encode(md, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "spm.gguf")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSPMGGUFMini works llama.cpp's SentencePiece BPE through by hand on a
// small vocabulary (ids: <unk> 0, <s> 1, </s> 2, <0xNN> 3+NN, ▁ 259, a 260,
// b 261, ba 262, ab 263, <think> 264, ▁a 265).
func TestSPMGGUFMini(t *testing.T) {
	path := miniSPMGGUF(t, nil)
	tok, err := FromGGUF(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		text     string
		ordinary bool
		want     []int32
	}{
		// "▁abab": the best score among the pairs is -10, shared by a b
		// (at 1 and 3) and b a (at 2): the leftmost, a b at 1, merges; then
		// a b at 3. ▁ a (-20) never gets its turn: ▁ is now next to ab.
		{"abab", false, []int32{259, 263, 263}},
		// A space prefix after each special token; "<s>" is special.
		{"<s>ab</s>", false, []int32{1, 259, 263, 2}},
		// EncodeOrdinary leaves control tokens as text: "<", "s", ">" are
		// not tokens and fall back to their bytes 0x3C 0x73 0x3E.
		{"<s>", true, []int32{259, 3 + 0x3C, 3 + 0x73, 3 + 0x3E}},
		// A user-defined token is matched in ordinary text too; the text
		// after it gets the space prefix.
		{"a<think>b", true, []int32{265, 264, 259, 261}},
		// é is not a token: its UTF-8 bytes C3 A9.
		{"é", false, []int32{259, 3 + 0xC3, 3 + 0xA9}},
		// A space is ▁: "▁a▁b" has ▁ a at -20 as its only merge.
		{"a b", false, []int32{265, 259, 261}},
		{"", false, []int32{}},
	} {
		enc := tok.Encode
		if c.ordinary {
			enc = tok.EncodeOrdinary
		}
		if got := enc(c.text); !slices.Equal(got, c.want) {
			t.Errorf("%q (ordinary %v): %v, want %v", c.text, c.ordinary, got, c.want)
		}
	}
	for _, c := range []struct {
		ids  []int32
		want string
	}{
		{[]int32{259, 263, 263}, "abab"},    // the prefix space stripped
		{[]int32{259, 259, 261}, " b"},      // only one
		{[]int32{1, 259, 263}, "<s> ab"},    // not after a special token (HF's Strip)
		{[]int32{3 + 0xC3, 3 + 0xA9}, "é"},  // bytes joined into UTF-8
		{[]int32{3 + 0xC3, 260}, "\uFFFDa"}, // a broken run: U+FFFD per byte
		{[]int32{3 + 0xE2, 3 + 0x82}, "\uFFFD\uFFFD"},
		{[]int32{263, 999, -1}, "ab"}, // ids of no token left out
	} {
		if got := tok.Decode(c.ids); got != c.want {
			t.Errorf("Decode(%v) = %q, want %q", c.ids, got, c.want)
		}
	}
	if b, ok := tok.TokenBytes(265); !ok || string(b) != " a" {
		t.Errorf("TokenBytes(▁a) = %q, %v", b, ok)
	}
	if b, ok := tok.TokenBytes(3 + 0x0A); !ok || string(b) != "\n" {
		t.Errorf("TokenBytes(<0x0A>) = %q, %v", b, ok)
	}
	if id, ok := tok.TokenID("▁a"); !ok || id != 265 {
		t.Errorf("TokenID(▁a) = %d, %v", id, ok)
	}
	sp := tok.Special()
	if sp.BOS != 1 || sp.EOS != 2 || !sp.AddBOS || sp.AddEOS || sp.BOSToken != "<s>" {
		t.Errorf("special %+v: want <s> 1 added before, </s> 2", sp)
	}

	// The folder GGUFFiles writes ranks the derived merges one by one, as
	// transformers does ("b a" before "a b", then "▁ a"): on "▁abab" b a at
	// 2 merges first, then ▁ a. Hash counts the two as one tokenizer.
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	folder, err := LoadDir(writeGGUFFiles(t, f))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := folder.Encode("abab"), []int32{265, 262, 261}; !slices.Equal(got, want) {
		t.Errorf("folder: %v, want %v", got, want)
	}
	if folder.Hash() != tok.Hash() || folder.Special() != tok.Special() {
		t.Error("the folder GGUFFiles writes hashes or sets its special tokens apart from its GGUF")
	}
	// Its post-processor puts <s> first, as Llama 2's tokenizer.json does, so
	// that transformers' encode adds BOS as llama.cpp does.
	files, err := GGUFFiles(f)
	if err != nil {
		t.Fatal(err)
	}
	var tj struct {
		Post struct {
			Type   string `json:"type"`
			Single []map[string]struct {
				ID string `json:"id"`
			} `json:"single"`
		} `json:"post_processor"`
	}
	if err := json.Unmarshal(files["tokenizer.json"], &tj); err != nil {
		t.Fatal(err)
	}
	if p := tj.Post; p.Type != "TemplateProcessing" || len(p.Single) != 2 || p.Single[0]["SpecialToken"].ID != "<s>" || p.Single[1]["Sequence"].ID != "A" {
		t.Errorf("post_processor %+v: want <s> then the sequence", p)
	}

	// Without add_space_prefix nothing is prepended or stripped.
	np, err := FromGGUF(miniSPMGGUF(t, func(md []gguf.KV) []gguf.KV {
		return append(md, gguf.KV{Key: "tokenizer.ggml.add_space_prefix", Value: gguf.BoolValue(false)},
			gguf.KV{Key: "tokenizer.ggml.add_bos_token", Value: gguf.BoolValue(false)})
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := np.Encode(" ab"), []int32{259, 263}; !slices.Equal(got, want) {
		t.Errorf("no prefix: %v, want %v", got, want)
	}
	if got := np.Decode([]int32{259, 263}); got != " ab" {
		t.Errorf("no prefix: decode %q", got)
	}
	if np.Special().AddBOS || np.Hash() == tok.Hash() {
		t.Error("add_bos_token false or add_space_prefix false not taken")
	}
}

func TestSPMGGUFRejects(t *testing.T) {
	set := func(key string, v gguf.Value) func([]gguf.KV) []gguf.KV {
		return func(md []gguf.KV) []gguf.KV {
			for i := range md {
				if md[i].Key == key {
					md[i].Value = v
					return md
				}
			}
			return append(md, gguf.KV{Key: key, Value: v})
		}
	}
	for _, c := range []struct {
		name string
		edit func([]gguf.KV) []gguf.KV
		want string
	}{
		{"scores", set("tokenizer.ggml.scores", gguf.FloatsValue(gguf.TypeFloat32, []float64{1})), "tokenizer.ggml.scores has 1 entries for 266 tokens"},
		{"nan", set("tokenizer.ggml.scores", gguf.FloatsValue(gguf.TypeFloat32, slices.Repeat([]float64{math.NaN()}, 266))), "tokenizer.ggml.scores[0] is NaN"},
		{"prefix", set("tokenizer.ggml.add_space_prefix", gguf.Uint32Value(1)), "tokenizer.ggml.add_space_prefix"},
		{"unk", set("tokenizer.ggml.unknown_token_id", gguf.Uint32Value(266)), "tokenizer.ggml.unknown_token_id = 266"},
		{"model", set("tokenizer.ggml.model", gguf.StringValue("t5")), `tokenizer.ggml.model "t5" is not supported`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := FromGGUF(miniSPMGGUF(t, c.edit))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "spm.gguf") {
				t.Errorf("%v; want an error naming the file and %q", err, c.want)
			}
		})
	}
}

// TestSPMTokenBytes: the bytes of an encoded text's tokens, joined, are the
// text as the tokenizer saw it: with the space prefix, "▁" as a space and
// byte tokens as their bytes. Cross-tokenizer alignment (kd/xtok) reads the
// tokens' offsets from them.
func TestSPMTokenBytes(t *testing.T) {
	tok, err := FromGGUF(filepath.Join("testdata", "llamacpp", "ggml-vocab-llama-spm.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	fx := loadSPMFixtures(t)
	for _, text := range fx.Texts {
		if text == "" || strings.Contains(text, "<s>") || strings.Contains(text, "</s>") || strings.Contains(text, "▁") {
			continue
		}
		var got []byte
		for _, id := range tok.Encode(text) {
			b, ok := tok.TokenBytes(id)
			if !ok {
				t.Fatalf("%q: id %d has no bytes", text, id)
			}
			got = append(got, b...)
		}
		if want := " " + strings.ToValidUTF8(text, "\uFFFD"); string(got) != want {
			t.Errorf("%q: the tokens' bytes are %q, want %q", text, got, want)
		}
	}
}

func TestSPMLoadErrors(t *testing.T) {
	model := `{"type":"BPE","byte_fallback":true,"unk_token":"<unk>","fuse_unk":true,"vocab":{"<unk>":0,"▁":1,"a":2,"▁a":3},"merges":["▁ a"]}`
	dec := `{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]}`
	norm := `{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]}`
	doc := func(model, norm, pre, dec string) string {
		return `{"added_tokens":[],"normalizer":` + norm + `,"pre_tokenizer":` + pre + `,"decoder":` + dec + `,"model":` + model + `}`
	}
	// The good document loads and encodes.
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(path, []byte(doc(model, norm, "null", dec)), 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// é has no byte tokens in this vocabulary: <unk>, one for the run
	// (fuse_unk), one each without fuse_unk.
	if got, want := tok.Encode("a éé a"), []int32{3, 1, 0, 3}; !slices.Equal(got, want) {
		t.Errorf("Encode: %v, want %v", got, want)
	}
	if err := os.WriteFile(path, []byte(doc(strings.Replace(model, `"fuse_unk":true`, `"fuse_unk":false`, 1), norm, "null", dec)), 0o644); err != nil {
		t.Fatal(err)
	}
	if tok, err = Load(path); err != nil {
		t.Fatal(err)
	}
	if got, want := tok.Encode("a éé a"), []int32{3, 1, 0, 0, 3}; !slices.Equal(got, want) {
		t.Errorf("Encode without fuse_unk: %v, want %v", got, want)
	}
	for _, c := range []struct{ name, doc, want string }{
		{"bytelevel", doc(model, norm, `{"type":"ByteLevel"}`, dec), "pre_tokenizer ByteLevel with a byte_fallback BPE"},
		{"split", doc(model, norm, `{"type":"Split","pattern":{"Regex":"x"},"behavior":"Isolated","invert":false}`, dec), "pre_tokenizer Split with a byte_fallback BPE"},
		{"whitespace", doc(model, norm, `{"type":"Whitespace"}`, dec), `pre_tokenizer "Whitespace" is not supported with a byte_fallback BPE`},
		{"scheme", doc(model, "null", `{"type":"Metaspace","replacement":"▁","prepend_scheme":"sometimes","split":false}`, dec), `prepend_scheme "sometimes"`},
		{"replacement", doc(model, "null", `{"type":"Metaspace","replacement":"__","prepend_scheme":"first"}`, dec), `replacement "__" is not one character`},
		{"regex replace", doc(model, `{"type":"Replace","pattern":{"Regex":" +"},"content":"▁"}`, "null", dec), "normalizer Replace: only a {\"String\": …} pattern"},
		{"lowercase", doc(model, `{"type":"Lowercase"}`, "null", dec), `normalizer "Lowercase" is not supported`},
		{"no decoder", doc(model, norm, "null", "null"), "no decoder: a byte_fallback BPE needs"},
		{"bytelevel decoder", doc(model, norm, "null", `{"type":"ByteLevel"}`), `decoder "ByteLevel" is not supported with a byte_fallback BPE`},
		{"strip first", doc(model, norm, "null", `{"type":"Sequence","decoders":[{"type":"Strip","content":" ","start":1,"stop":0},{"type":"Fuse"}]}`), "decoder Strip before Fuse"},
		{"strip right", doc(model, norm, "null", `{"type":"Sequence","decoders":[{"type":"Fuse"},{"type":"Strip","content":" ","start":0,"stop":1}]}`), "decoder Strip with stop 1"},
		{"unk", doc(strings.Replace(model, `"unk_token":"<unk>"`, `"unk_token":"<UNK>"`, 1), norm, "null", dec), `model.unk_token "<UNK>" is not in model.vocab`},
		{"prepend in byte-level", doc(strings.Replace(model, `"byte_fallback":true`, `"byte_fallback":false`, 1), norm, `{"type":"ByteLevel"}`, `{"type":"ByteLevel"}`), "normalizer Prepend is supported only with a SentencePiece-style BPE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokenizer.json")
			if err := os.WriteFile(path, []byte(c.doc), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("%v; want an error naming %s and containing %q", err, path, c.want)
			}
		})
	}
}

// TestSPMCutAtSpace: merging SentencePiece text piece by piece, cut before
// each "▁" run (what the vocabulary allows), gives the ids of merging it
// whole, on llama.cpp's strings and the fixture texts, and on long text.
func TestSPMCutAtSpace(t *testing.T) {
	tok, err := FromGGUF(filepath.Join("testdata", "llamacpp", "ggml-vocab-llama-spm.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	if !tok.model.cutAtSpace {
		t.Fatal("Llama 2's vocabulary has a token with ▁ after another character?")
	}
	tok.model.noCache = true // each result computed, not one path's read back by the other
	texts := loadSPMFixtures(t).Texts
	texts = append(texts, strings.Repeat(strings.Join(texts, "\n"), 4))
	for _, s := range texts {
		tok.model.cutAtSpace = true
		cut := tok.Encode(s)
		tok.model.cutAtSpace = false
		whole := tok.Encode(s)
		tok.model.cutAtSpace = true
		if !slices.Equal(cut, whole) {
			t.Errorf("%.60q: cut %v, whole %v", s, cut, whole)
		}
	}
	// A token with ▁ after another character turns the cut off.
	doc := `{"normalizer":{"type":"Replace","pattern":{"String":" "},"content":"▁"},"decoder":{"type":"ByteFallback"},` +
		`"model":{"type":"BPE","byte_fallback":true,"vocab":{"a":0,"▁":1,"a▁":2},"merges":["a ▁"]}}`
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	small, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if small.model.cutAtSpace {
		t.Error("cutAtSpace with a token a▁")
	}
	if got, want := small.Encode("a a"), []int32{2, 0}; !slices.Equal(got, want) {
		t.Errorf("Encode(a a) = %v, want %v", got, want)
	}
}
