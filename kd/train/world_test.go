package train

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// byteLevelVocab is GPT-2's bytes_to_unicode: every byte as a printable rune.
func byteLevelVocab() map[string]int {
	var bs []int
	for b := '!'; b <= '~'; b++ {
		bs = append(bs, int(b))
	}
	for b := '¡'; b <= '¬'; b++ {
		bs = append(bs, int(b))
	}
	for b := '®'; b <= 'ÿ'; b++ {
		bs = append(bs, int(b))
	}
	in := map[int]bool{}
	for _, b := range bs {
		in[b] = true
	}
	cs := append([]int(nil), bs...)
	n := 0
	for b := range 256 {
		if !in[b] {
			bs = append(bs, b)
			cs = append(cs, 256+n)
			n++
		}
	}
	vocab := map[string]int{}
	for i, b := range bs {
		vocab[string(rune(cs[i]))] = b
	}
	return vocab
}

// writeByteTokenizer writes a byte-level BPE tokenizer without merges (one
// token per byte) plus three special tokens, as tokenizer.json.
func writeByteTokenizer(t *testing.T, dir string) {
	t.Helper()
	specials := []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}
	var added []map[string]any
	vocab := byteLevelVocab()
	for i, s := range specials {
		vocab[s] = 256 + i
		added = append(added, map[string]any{"id": 256 + i, "content": s, "single_word": false, "lstrip": false,
			"rstrip": false, "normalized": false, "special": true})
	}
	tj := map[string]any{
		"version": "1.0", "added_tokens": added, "normalizer": nil,
		"pre_tokenizer":  map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
		"post_processor": nil,
		"decoder":        map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model": map[string]any{"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": nil,
			"end_of_word_suffix": nil, "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []string{}},
	}
	writeJSON(t, filepath.Join(dir, "tokenizer.json"), tj)
	writeJSON(t, filepath.Join(dir, "tokenizer_config.json"), map[string]any{"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeModel makes a random-weight Llama-shaped model folder with the byte tokenizer.
func writeModel(t *testing.T, dir string, hidden, layers int, seed uint64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`{"model_type": "llama", "vocab_size": 259, "hidden_size": %d, "intermediate_size": %d,
		"num_hidden_layers": %d, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 96,
		"rms_norm_eps": 1e-5, "tie_word_embeddings": true}`, hidden, 2*hidden, layers)
	c, err := model.ParseConfig([]byte(cfg), "test")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(c, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.InitRandom(seed); err != nil {
		t.Fatal(err)
	}
	if err := m.SaveDir(dir, 0); err != nil {
		t.Fatal(err)
	}
	writeByteTokenizer(t, dir)
}

// world is a tiny training setup: a student, a larger teacher, and data.
type world struct {
	dir, student, teacher, sft, pairs string
}

var sentences = []string{
	"the whale swam", "call me ishmael", "the sea was calm", "a ship sailed north",
	"the captain spoke", "white whale ahead", "the crew slept", "the harpoon flew",
	"waves broke white", "the mast creaked", "salt on the deck", "a storm came",
}

func newWorld(t *testing.T) *world {
	t.Helper()
	dir := t.TempDir()
	w := &world{dir: dir, student: filepath.Join(dir, "student"), teacher: filepath.Join(dir, "teacher"),
		sft: filepath.Join(dir, "sft.jsonl"), pairs: filepath.Join(dir, "pairs.jsonl")}
	writeModel(t, w.student, 32, 2, 1)
	writeModel(t, w.teacher, 48, 2, 2)
	var sft, pairs strings.Builder
	for i, s := range sentences {
		line, _ := json.Marshal(map[string]string{"prompt": fmt.Sprintf("%d: ", i), "response": s})
		sft.Write(append(line, '\n'))
		rev := []rune(s)
		for a, b := 0, len(rev)-1; a < b; a, b = a+1, b-1 {
			rev[a], rev[b] = rev[b], rev[a]
		}
		pl, _ := json.Marshal(map[string]string{"prompt": "say: ", "chosen": s, "rejected": string(rev)})
		pairs.Write(append(pl, '\n'))
	}
	os.WriteFile(w.sft, []byte(sft.String()), 0o644)
	os.WriteFile(w.pairs, []byte(pairs.String()), 0o644)
	return w
}

// recipe is a small run over the world's data.
func (w *world) recipe(out string) Recipe {
	r := DefaultRecipe()
	r.Student, r.Output = w.student, out
	r.Data.Train, r.Data.MaxLen, r.Data.ValFraction, r.Data.Template = w.sft, 64, 0.25, "none"
	r.Optim.LR, r.Optim.WeightDecay = 3e-3, 0
	r.Schedule.Kind = "constant"
	r.BatchSize, r.MaxSteps, r.LogEvery, r.Seed = 4, 20, 5, 3
	return r
}
