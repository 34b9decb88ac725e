package tokenizer

import (
	"bytes"
	"testing"
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
