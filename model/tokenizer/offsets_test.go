package tokenizer

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/kdnative/kdnative/model/gguf"
)

// TestTokenBytesJoinToText: the bytes of an encoded text's tokens, joined,
// are the text (after the normalizer: NFC for Qwen3), for GPT-2's and
// Qwen3's tokenizers, special tokens included; an id that names no token
// has none.
func TestTokenBytesJoinToText(t *testing.T) {
	texts := []string{
		"Hello, world! It's 2026.",
		"<|im_start|>user\nWhat is 7×8?<|im_end|>\n<|im_start|>assistant\n56<|im_end|>\n",
		"naïve café — 東京 🚀\t\n  spaced",
	}
	for _, name := range []string{"gpt2", "qwen3"} {
		tok := named(t, name)
		for _, text := range texts {
			var joined []byte
			for _, id := range tok.Encode(text) {
				b, ok := tok.TokenBytes(id)
				if !ok {
					t.Fatalf("%s: id %d of %q has no bytes", name, id, text)
				}
				joined = append(joined, b...)
			}
			if !bytes.Equal(joined, []byte(text)) {
				t.Errorf("%s: tokens of %q join to %q", name, text, joined)
			}
		}
		if _, ok := tok.TokenBytes(-1); ok {
			t.Errorf("%s: id -1 has bytes", name)
		}
		if _, ok := tok.TokenBytes(int32(tok.VocabSize())); ok {
			t.Errorf("%s: id %d (past the vocabulary) has bytes", name, tok.VocabSize())
		}
	}
	// Qwen3 normalizes to NFC: "e" + U+0301 becomes "é", and the tokens'
	// bytes are those of the normalized text.
	tok := named(t, "qwen3")
	var joined []byte
	for _, id := range tok.Encode("cafe\u0301") {
		b, _ := tok.TokenBytes(id)
		joined = append(joined, b...)
	}
	if string(joined) != "café" {
		t.Errorf("qwen3: tokens of a decomposed é join to %q, want the NFC text %q", joined, "café")
	}
}

// TestIsSpecial: the special ids are those the files mark special: for a
// tokenizer.json (Qwen3's, and the one transformers' GGUF converter made of
// Phi-3's vocabulary, testdata/spm) every added token with "special": true
// and no other id; for Phi-3's GGUF file the tokens of llama.cpp's types
// control and unknown ("<unk>", "<s>", "<|end|>", the [PAD…] fillers, but
// not "</s>"), read from tokenizer.ggml.token_type; for GPT-2's files
// <|endoftext|> alone (50256, as transformers' GPT2TokenizerFast has it).
func TestIsSpecial(t *testing.T) {
	phi3JSON := filepath.Join("testdata", "spm", "phi3_tokenizer.json.zst")
	check := func(name string, tok *Tokenizer, want func(id int32) bool) {
		t.Helper()
		n := 0
		for id := range int32(tok.VocabSize()) {
			if got := tok.IsSpecial(id); got != want(id) {
				s, _ := tok.Token(id)
				t.Errorf("%s: IsSpecial(%d %q) = %v, the file says %v", name, id, s, got, want(id))
			} else if got {
				n++
			}
		}
		if n == 0 {
			t.Errorf("%s: no special token", name)
		}
		for _, id := range []int32{-1, int32(tok.VocabSize())} {
			if tok.IsSpecial(id) {
				t.Errorf("%s: IsSpecial(%d) for an id that names no token", name, id)
			}
		}
	}
	for _, path := range []string{qwen3JSON, phi3JSON} {
		tok, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := readFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Added []struct {
				ID      int32 `json:"id"`
				Special bool  `json:"special"`
			} `json:"added_tokens"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		special := map[int32]bool{}
		for _, a := range doc.Added {
			special[a.ID] = a.Special
		}
		check(path, tok, func(id int32) bool { return special[id] })
	}

	phi3GGUF := filepath.Join("testdata", "llamacpp", "ggml-vocab-phi-3.gguf")
	tok, err := FromGGUF(phi3GGUF)
	if err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(phi3GGUF)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	types, err := f.Metadata.Ints("tokenizer.ggml.token_type")
	if err != nil {
		t.Fatal(err)
	}
	check(phi3GGUF, tok, func(id int32) bool { return types[id] == 2 || types[id] == 3 })
	if tok.IsSpecial(2) {
		t.Errorf("%s: </s> is special", phi3GGUF)
	}

	gpt2 := named(t, "gpt2")
	check("gpt2", gpt2, func(id int32) bool { return id == 50256 })
}
