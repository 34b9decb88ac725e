package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/kdnative/kdnative/internal/atomicfile"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kdnative/kdnative/model/gguf"
)

// A GGUF file (llama.cpp's format) carries its tokenizer as metadata:
// tokenizer.ggml.model ("gpt2" for byte-level BPE, "llama" for
// SentencePiece-style BPE), tokens, token_type, merges (gpt2) or scores
// (llama), the special token ids, tokenizer.ggml.pre (the name of the
// pre-tokenizer llama.cpp applies to gpt2), tokenizer.ggml.add_space_prefix
// (llama) and tokenizer.chat_template. GGUFFiles turns that into the Hugging
// Face files transformers would have (tokenizer.json, tokenizer_config.json,
// chat_template.jinja), following transformers' GGUF loader
// (integrations/gguf/gguf_tokenizer_mapping.py), except where llama.cpp
// (llama-vocab.cpp) differs, whose reading we follow:
//
//   - the pre-tokenizer of gpt2 follows llama.cpp's definition of each name:
//     transformers keeps GPT-2's split for names it does not list, which for
//     "smollm" and the StarCoder family loses their one-digit-at-a-time
//     split;
//   - llama's space prefix is the normalizer Prepend("▁") and
//     Replace(" ", "▁") (llama.cpp puts a space before every stretch of text
//     and escapes them all; transformers does so for Phi-3 but uses
//     Metaspace with prepend_scheme "first" for Llama, which does not
//     prepend to text that starts with a space);
//   - llama's tokens of type unknown (<unk> in most files) are special added
//     tokens, as llama.cpp matches them, besides control (special) and
//     user-defined (not special) ones;
//   - llama's merges always come from the scores: llama.cpp never reads
//     tokenizer.ggml.merges for it (transformers would use them if a file
//     had them).
//
// FromGGUF builds the Tokenizer from those same files, so a converted folder
// and the GGUF file tokenize alike, with one refinement for llama: a file
// lists no merges, and transformers derives them from the scores, ranked
// one by one (scoreMerges); llama.cpp instead merges the pair whose token
// has the highest score, the leftmost among equal scores, and FromGGUF does
// that. The two differ only where two overlapping pairs make the same token
// (or tokens of equal score); Hash treats them as one tokenizer.

// ggufPre maps tokenizer.ggml.pre to a tokenizer.json pre_tokenizer, by the
// regular expressions llama.cpp uses for each name.
var ggufPre = func() map[string]json.RawMessage {
	byteLevel := `{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}`
	split := func(pattern string) json.RawMessage {
		p, _ := json.Marshal(pattern)
		return json.RawMessage(`{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":` + string(p) +
			`},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":false,"use_regex":false}]}`)
	}
	gpt2 := json.RawMessage(byteLevel)
	digitsGPT2 := json.RawMessage(`{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},` + byteLevel + `]}`)
	qwen2, llama3 := split(PatternQwen2), split(PatternLlama3)
	m := map[string]json.RawMessage{}
	for _, n := range []string{"gpt2", "mpt", "olmo", "jais"} {
		m[n] = gpt2
	}
	for _, n := range []string{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva"} {
		m[n] = digitsGPT2
	}
	for _, n := range []string{"qwen2", "stablelm2", "deepseek-r1-qwen", "megrez"} {
		m[n] = qwen2
	}
	for _, n := range []string{"llama3", "llama-v3", "llama-bpe", "smaug-bpe", "falcon3", "dbrx"} {
		m[n] = llama3
	}
	return m
}()

// GGUFPreTokenizers lists the tokenizer.ggml.pre names kdnative reads.
func GGUFPreTokenizers() []string {
	names := make([]string, 0, len(ggufPre))
	for n := range ggufPre {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// llama.cpp's token types (enum llama_token_type).
const (
	ggufTokenUnknown     = 2
	ggufTokenControl     = 3
	ggufTokenUserDefined = 4
)

// FromGGUF builds the tokenizer of the GGUF file at path (see GGUFFiles).
func FromGGUF(path string) (*Tokenizer, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return FromGGUFFile(f)
}

// FromGGUFFile builds the tokenizer of an open GGUF file: the one its
// tokenizer.json, tokenizer_config.json and chat_template.jinja from
// GGUFFiles describe.
func FromGGUFFile(f *gguf.File) (*Tokenizer, error) {
	files, ranks, err := ggufFiles(f)
	if err != nil {
		return nil, err
	}
	b, err := parseTokenizerJSON(f.Path()+" (tokenizer.json from its metadata)", files["tokenizer.json"])
	if err != nil {
		return nil, err
	}
	if ranks != nil {
		if len(ranks) != len(b.merges) {
			return nil, fmt.Errorf("tokenizer: %s: %d merge ranks for %d merges", f.Path(), len(ranks), len(b.merges))
		}
		b.mergeRank = ranks
	}
	if err := b.applyConfig(f.Path()+" (tokenizer_config.json from its metadata)", files["tokenizer_config.json"]); err != nil {
		return nil, err
	}
	b.template = string(files["chat_template.jinja"])
	return b.build()
}

// GGUFFiles returns the Hugging Face tokenizer files that describe a GGUF
// file's tokenizer: "tokenizer.json", "tokenizer_config.json", and
// "chat_template.jinja" when the file has tokenizer.chat_template. Byte-level
// BPE (tokenizer.ggml.model "gpt2") with a known tokenizer.ggml.pre and
// SentencePiece-style BPE ("llama") are supported; anything else is an error
// naming it.
func GGUFFiles(f *gguf.File) (map[string][]byte, error) {
	files, _, err := ggufFiles(f)
	return files, err
}

// ggufFiles is GGUFFiles, and for "llama" the rank of each merge of the
// tokenizer.json by its score alone (scoreRanks; nil for "gpt2").
func ggufFiles(f *gguf.File) (map[string][]byte, []int32, error) {
	md := f.Metadata
	fail := func(format string, a ...any) error {
		return fmt.Errorf("tokenizer: %s: %s", f.Path(), fmt.Sprintf(format, a...))
	}
	kind, err := md.String("tokenizer.ggml.model")
	if err != nil {
		return nil, nil, fmt.Errorf("tokenizer: %w", err)
	}
	switch kind {
	case "gpt2", "llama":
	default:
		return nil, nil, fail("tokenizer.ggml.model %q is not supported (kdnative reads \"gpt2\", byte-level BPE, and \"llama\", SentencePiece-style BPE)", kind)
	}
	tokens, err := md.Strings("tokenizer.ggml.tokens")
	if err != nil {
		return nil, nil, fmt.Errorf("tokenizer: %w", err)
	}
	if len(tokens) == 0 || len(tokens) > maxID {
		return nil, nil, fail("tokenizer.ggml.tokens has %d entries, want 1 to %d", len(tokens), maxID)
	}
	var types []int64
	if md.Has("tokenizer.ggml.token_type") {
		if types, err = md.Ints("tokenizer.ggml.token_type"); err != nil {
			return nil, nil, fmt.Errorf("tokenizer: %w", err)
		}
		if len(types) != len(tokens) {
			return nil, nil, fail("tokenizer.ggml.token_type has %d entries for %d tokens", len(types), len(tokens))
		}
	}
	var (
		tj    map[string]any
		ranks []int32
	)
	if kind == "llama" {
		if tj, ranks, err = spmTokenizerJSON(f, tokens, types); err != nil {
			return nil, nil, err
		}
	} else if tj, err = byteLevelTokenizerJSON(f, tokens, types); err != nil {
		return nil, nil, err
	}
	cfg := map[string]any{
		"tokenizer_class":              "PreTrainedTokenizerFast",
		"clean_up_tokenization_spaces": false,
	}
	if kind == "llama" {
		// llama.cpp and transformers add BOS to a SentencePiece
		// vocabulary whose file does not say otherwise.
		cfg["add_bos_token"] = true
	}
	for key, name := range map[string]string{
		"tokenizer.ggml.bos_token_id":     "bos_token",
		"tokenizer.ggml.eos_token_id":     "eos_token",
		"tokenizer.ggml.unknown_token_id": "unk_token",
		"tokenizer.ggml.padding_token_id": "pad_token",
	} {
		if !md.Has(key) {
			continue
		}
		id, err := md.IntIn(key, 0, int64(len(tokens))-1)
		if err != nil {
			return nil, nil, fmt.Errorf("tokenizer: %w", err)
		}
		cfg[name] = tokens[id]
	}
	for key, name := range map[string]string{
		"tokenizer.ggml.add_bos_token": "add_bos_token",
		"tokenizer.ggml.add_eos_token": "add_eos_token",
	} {
		if md.Has(key) {
			v, err := md.Bool(key)
			if err != nil {
				return nil, nil, fmt.Errorf("tokenizer: %w", err)
			}
			cfg[name] = v
		}
	}
	out := map[string][]byte{}
	if out["tokenizer.json"], err = marshalIndent(tj); err != nil {
		return nil, nil, fail("%v", err)
	}
	if out["tokenizer_config.json"], err = marshalIndent(cfg); err != nil {
		return nil, nil, fail("%v", err)
	}
	if md.Has("tokenizer.chat_template") {
		tmpl, err := md.String("tokenizer.chat_template")
		if err != nil {
			return nil, nil, fmt.Errorf("tokenizer: %w", err)
		}
		out["chat_template.jinja"] = []byte(tmpl)
	}
	return out, ranks, nil
}

// byteLevelTokenizerJSON is the tokenizer.json of tokenizer.ggml.model
// "gpt2".
func byteLevelTokenizerJSON(f *gguf.File, tokens []string, types []int64) (map[string]any, error) {
	md := f.Metadata
	fail := func(format string, a ...any) error {
		return fmt.Errorf("tokenizer: %s: %s", f.Path(), fmt.Sprintf(format, a...))
	}
	var err error
	pre := "default"
	if md.Has("tokenizer.ggml.pre") {
		if pre, err = md.String("tokenizer.ggml.pre"); err != nil {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
	}
	preJSON, ok := ggufPre[pre]
	if !ok {
		return nil, fail("tokenizer.ggml.pre %q is not supported (kdnative knows %s)", pre, strings.Join(GGUFPreTokenizers(), ", "))
	}
	merges, err := md.Strings("tokenizer.ggml.merges")
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}

	// The vocabulary, with tokens spelled outside the byte-level alphabet
	// respelled as the byte-level form of their UTF-8 (as transformers does;
	// llama.cpp writes some added tokens as plain text). A later duplicate
	// wins, as in a Python dict.
	vocab := make(map[string]int, len(tokens))
	for i, t := range tokens {
		if !inByteAlphabet(t) {
			t = byteLevelEncode(t)
		}
		vocab[t] = i
	}
	type addedJSON struct {
		ID         int    `json:"id"`
		Content    string `json:"content"`
		SingleWord bool   `json:"single_word"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		Normalized bool   `json:"normalized"`
		Special    bool   `json:"special"`
	}
	var added []addedJSON
	for i, typ := range types {
		t := tokens[i]
		switch {
		case typ == ggufTokenControl && inByteAlphabet(t):
			added = append(added, addedJSON{ID: i, Content: t, Special: true})
		case typ == ggufTokenUserDefined && vocab[t] == i && inByteAlphabet(t):
			added = append(added, addedJSON{ID: i, Content: t})
		}
	}
	pairs := make([][2]string, len(merges))
	for i, m := range merges {
		a, c, ok := strings.Cut(m, " ")
		if !ok || strings.Contains(c, " ") {
			return nil, fail("tokenizer.ggml.merges[%d] %q is not two tokens separated by one space", i, m)
		}
		pairs[i] = [2]string{a, c}
	}
	tj := map[string]any{
		"version":        "1.0",
		"truncation":     nil,
		"padding":        nil,
		"added_tokens":   added,
		"normalizer":     nil,
		"pre_tokenizer":  preJSON,
		"post_processor": nil,
		"decoder":        json.RawMessage(`{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}`),
		"model": map[string]any{
			"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": "",
			"end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
			"vocab": orderedVocab(vocab), "merges": pairs,
		},
	}

	return tj, nil
}

// inByteAlphabet reports whether every rune of s is in GPT-2's byte-level
// alphabet.
func inByteAlphabet(s string) bool {
	for _, r := range s {
		if _, ok := runeToByte[r]; !ok {
			return false
		}
	}
	return true
}

// orderedVocab writes a vocabulary as a JSON object in id order, as
// tokenizers does, so that the file reads like one it wrote.
type orderedVocab map[string]int

// MarshalJSON writes the entries in id order.
func (v orderedVocab) MarshalJSON() ([]byte, error) {
	type entry struct {
		tok string
		id  int
	}
	es := make([]entry, 0, len(v))
	for t, id := range v {
		es = append(es, entry{t, id})
	}
	sort.Slice(es, func(i, j int) bool { return es[i].id < es[j].id })
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, e := range es {
		if i > 0 {
			buf.WriteByte(',')
		}
		k, err := json.Marshal(e.tok)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&buf, "%s:%d", k, e.id)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

func marshalIndent(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteGGUFFiles writes the tokenizer files of the GGUF file at path (see
// GGUFFiles) into dir, each to a temporary name and renamed, so that a model
// folder saved from a GGUF model (a checkpoint of a GGUF student) loads on
// its own.
func WriteGGUFFiles(path, dir string) error {
	f, err := gguf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	files, err := GGUFFiles(f)
	if err != nil {
		return err
	}
	for name, data := range files {
		if err := atomicfile.WriteFile(filepath.Join(dir, name), data); err != nil {
			return fmt.Errorf("tokenizer: %w", err)
		}
	}
	return nil
}
