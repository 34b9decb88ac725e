package convert_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/gguf"
	"github.com/kdnative/kdnative/model/gguf/convert"
	"github.com/kdnative/kdnative/model/tokenizer"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// withTokenizer rewrites a tiny fixture GGUF with a byte-level tokenizer in
// its metadata (the first 97 byte tokens, no merges), as convert needs one.
func withTokenizer(t *testing.T, src string) string {
	t.Helper()
	var toks []string
	for b := range 97 {
		toks = append(toks, string(rune('!'+b)))
	}
	return withMetadata(t, src,
		gguf.KV{Key: "tokenizer.ggml.model", Value: gguf.StringValue("gpt2")},
		gguf.KV{Key: "tokenizer.ggml.pre", Value: gguf.StringValue("qwen2")},
		gguf.KV{Key: "tokenizer.ggml.tokens", Value: gguf.StringsValue(toks)},
		gguf.KV{Key: "tokenizer.ggml.merges", Value: gguf.StringsValue(nil)},
		gguf.KV{Key: "tokenizer.ggml.eos_token_id", Value: gguf.Uint32Value(2)},
		gguf.KV{Key: "tokenizer.chat_template", Value: gguf.StringValue("{% for m in messages %}{{ m.content }}{% endfor %}")},
	)
}

// withSPMTokenizer rewrites a tiny fixture GGUF with a SentencePiece
// tokenizer (tokenizer.ggml.model "llama", as Llama 2, TinyLlama and
// Mistral v0.1 files have) of 97 tokens: <unk> <s> </s>, ▁, letters and
// digits, a few merged words, then byte tokens <0x00>…, scores falling
// with the id.
func withSPMTokenizer(t *testing.T, src string) string {
	t.Helper()
	toks := []string{"<unk>", "<s>", "</s>", "▁"}
	types := []int64{2, 3, 3, 1}
	for _, r := range "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" {
		toks = append(toks, string(r))
		types = append(types, 1)
	}
	toks = append(toks, "▁t", "he", "▁the", "▁a", "an", "▁an", "nd", "▁and")
	types = append(types, 1, 1, 1, 1, 1, 1, 1, 1)
	for b := 0; len(toks) < 97; b++ {
		toks = append(toks, fmt.Sprintf("<0x%02X>", b))
		types = append(types, 6)
	}
	scores := make([]float64, len(toks))
	for i := range scores {
		scores[i] = -float64(i)
	}
	return withMetadata(t, src,
		gguf.KV{Key: "tokenizer.ggml.model", Value: gguf.StringValue("llama")},
		gguf.KV{Key: "tokenizer.ggml.tokens", Value: gguf.StringsValue(toks)},
		gguf.KV{Key: "tokenizer.ggml.scores", Value: gguf.FloatsValue(gguf.TypeFloat32, scores)},
		gguf.KV{Key: "tokenizer.ggml.token_type", Value: gguf.IntsValue(gguf.TypeInt32, types)},
		gguf.KV{Key: "tokenizer.ggml.bos_token_id", Value: gguf.Uint32Value(1)},
		gguf.KV{Key: "tokenizer.ggml.eos_token_id", Value: gguf.Uint32Value(2)},
		gguf.KV{Key: "tokenizer.ggml.unknown_token_id", Value: gguf.Uint32Value(0)},
		gguf.KV{Key: "tokenizer.ggml.add_bos_token", Value: gguf.BoolValue(true)},
		gguf.KV{Key: "tokenizer.chat_template", Value: gguf.StringValue("{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}")},
	)
}

// withMetadata rewrites the GGUF src with kvs added to its metadata.
func withMetadata(t *testing.T, src string, kvs ...gguf.KV) string {
	t.Helper()
	f, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	md := append(f.Metadata.KVs(), kvs...)
	var ts []gguf.WriteTensor
	for _, ti := range f.Tensors {
		_, data, err := f.Raw(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, gguf.WriteTensor{Name: ti.Name, Dims: ti.Dims, Type: ti.Type, Data: data})
	}
	b, err := gguf.Encode(md, ts)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkConverted converts in and checks that the folder loads as the same
// model (identical logits on ids) and the same tokenizer.
func checkConverted(t *testing.T, in string, ids []int32) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "hf")
	if err := convert.Run(convert.Config{In: in, Out: out}, cpu.New()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	logits := func(path string) []float32 {
		m, err := model.LoadDir(path, cpu.New())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Forward(model.Batch{B: 1, T: len(ids), IDs: ids}); err != nil {
			t.Fatal(err)
		}
		v := make([]float32, m.Logits().Numel())
		if err := cpu.New().Download(m.Logits(), v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	a, b := logits(in), logits(out)
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("logit %d: GGUF %g, converted folder %g", i, a[i], b[i])
		}
	}
	ta, err := tokenizer.LoadDir(in)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := tokenizer.LoadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	if ta.Hash() != tb.Hash() || ta.ChatTemplate() != tb.ChatTemplate() || ta.Special() != tb.Special() {
		t.Error("the converted folder's tokenizer differs from the GGUF's")
	}
	return out
}

func TestConvertTiny(t *testing.T) {
	in := withTokenizer(t, filepath.Join("..", "testdata", "tiny_qwen2_bias.gguf"))
	out := checkConverted(t, in, []int32{3, 1, 4, 1, 5, 9, 2, 6})
	// A second conversion into the same, now full, folder is refused.
	err := convert.Run(convert.Config{In: in, Out: out}, cpu.New())
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("converting over a full folder: %v", err)
	}
}

// TestConvertSentencePiece: a GGUF with a SentencePiece tokenizer converts
// to a folder whose tokenizer.json is a byte_fallback BPE that encodes and
// decodes as the GGUF does.
func TestConvertSentencePiece(t *testing.T) {
	in := withSPMTokenizer(t, filepath.Join("..", "testdata", "tiny_llama_gqa.gguf"))
	out := checkConverted(t, in, []int32{1, 3, 4, 5, 60, 2, 7, 8})
	raw, err := os.ReadFile(filepath.Join(out, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tj struct {
		Normalizer json.RawMessage `json:"normalizer"`
		Model      struct {
			ByteFallback bool        `json:"byte_fallback"`
			Merges       [][2]string `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(raw, &tj); err != nil {
		t.Fatal(err)
	}
	if !tj.Model.ByteFallback || !slices.Contains(tj.Model.Merges, [2]string{"▁t", "he"}) || !strings.Contains(string(tj.Normalizer), "Prepend") {
		t.Errorf("tokenizer.json: byte_fallback %v, merges %q, normalizer %s", tj.Model.ByteFallback, tj.Model.Merges, tj.Normalizer)
	}
	ta, err := tokenizer.LoadDir(in)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := tokenizer.LoadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"the and an", " the", "<s>the</s>", "Zebra 42 and é!", ""} {
		a, b := ta.Encode(s), tb.Encode(s)
		if !slices.Equal(a, b) || tb.Decode(b) != ta.Decode(a) {
			t.Errorf("%q: GGUF %v %q, folder %v %q", s, a, ta.Decode(a), b, tb.Decode(b))
		}
	}
	// "▁the" is one token; é and ! are not tokens and have no byte tokens
	// here (only <0x00>…<0x1A>): <unk>.
	if got, want := ta.Encode("the é!"), []int32{68, 3, 0}; !slices.Equal(got, want) {
		t.Errorf("Encode: %v, want %v", got, want)
	}
}

func TestConvertRejects(t *testing.T) {
	dir := t.TempDir()
	noTok := filepath.Join("..", "testdata", "tiny_llama_gqa.gguf") // no tokenizer metadata
	out := filepath.Join(dir, "out")
	err := convert.Run(convert.Config{In: noTok, Out: out}, cpu.New())
	if err == nil || !strings.Contains(err.Error(), "tokenizer.ggml.model") {
		t.Errorf("a GGUF without a tokenizer: %v", err)
	}
	if _, serr := os.Stat(out); !os.IsNotExist(serr) {
		t.Errorf("a failed conversion left %s", out)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a failed conversion left %v", entries)
	}
}

// The real SmolLM2-135M-Instruct Q4_1 file, when `make gguf-cache` fetched it.
func TestConvertSmolLM2(t *testing.T) {
	dir := os.Getenv("KDNATIVE_GGUF_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "testdata", "cache")
	}
	in := filepath.Join(dir, "SmolLM2-135M-Instruct.Q4_1.gguf")
	if _, err := os.Stat(in); err != nil {
		t.Skipf("%s is not here (%v): run `make gguf-cache` or set KDNATIVE_GGUF_DIR", in, err)
	}
	if testing.Short() {
		t.Skip("converts a 135M-parameter model")
	}
	out := checkConverted(t, in, []int32{1, 9690, 198, 2683, 359, 5356, 30, 2})
	tmpl, _ := os.ReadFile(filepath.Join(out, "chat_template.jinja"))
	if !slices.Contains(strings.Split(string(tmpl), "'"), "<|im_start|>") {
		t.Errorf("chat_template.jinja: %q", tmpl)
	}
}
