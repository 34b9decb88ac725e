package tokenizer

// TokenBytes returns the bytes id stands for in text — a model token's
// byte-level form mapped back to bytes, an added token's content; for
// SentencePiece-style BPE the token with "▁" read as a space, and a <0xNN>
// byte token's one byte — as Decode joins them before its UTF-8 repair, and
// false for an id that names no token. The caller must not change the slice.
//
// The bytes of an encoded text's ids, joined, give the text as the tokenizer
// saw it after its normalizer (byte-level BPE changes nothing else;
// SentencePiece-style BPE adds the space before the text, and after each
// special token, that Decode strips at the start), so their running lengths
// are each token's byte offsets in that text: what cross-tokenizer
// alignment (kd/xtok) compares. Where a normalizer changed
// the text (NFC on text that was not in NFC) those offsets are offsets into
// the normalized text, not the original; Hugging Face's offset mapping
// points into the original instead.
func (t *Tokenizer) TokenBytes(id int32) ([]byte, bool) {
	if id < 0 || int(id) >= len(t.idBytes) || !t.idPresent[id] {
		return nil, false
	}
	return t.idBytes[id], true
}

// IsSpecial reports whether id is a special token: an added token marked
// special (tokenizer.json's "special": true; a GGUF file's control and
// unknown tokens), such as "<s>", "<|endoftext|>" or "<|im_end|>". Such a
// token marks structure rather than standing for text: its TokenBytes are
// its content, which is how Decode writes it, not text the tokenizer read.
// Added tokens that are not special (Qwen3's "<think>") and model tokens
// are not.
func (t *Tokenizer) IsSpecial(id int32) bool {
	return id >= 0 && int(id) < len(t.isSpecial) && t.isSpecial[id]
}
