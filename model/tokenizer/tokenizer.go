package tokenizer

import (
	"sync"
	"unicode/utf8"
)

// Tokenizer is a BPE tokenizer, byte-level or SentencePiece-style, loaded
// from a Hugging Face tokenizer.json (or GPT-2's vocab.json and merges.txt,
// or a GGUF file's metadata). It is immutable after loading and safe for
// concurrent use.
type Tokenizer struct {
	model      bpe
	normalizer []normStep // applied in order; none when empty
	asciiSafe  bool       // every normalizer step leaves ASCII text as it is
	stages     []stage    // pre-tokenizer steps before the byte-level mapping

	added     []*addedToken
	rawAdded  *addedMatcher // added tokens with normalized=false, found in the raw text
	normAdded *addedMatcher // added tokens with normalized=true, found in normalized text

	vocab     map[string]int32 // model tokens, in byte-level form ("Ġthe")
	addedIDs  map[string]int32 // added tokens by content
	idToken   []string         // token text by id ("" for ids that have none)
	idPresent []bool
	idBytes   [][]byte   // what each id decodes to, before UTF-8 repair
	merges    [][2]int32 // merges in rank order, for Hash
	dec       spmDecoder // how Decode joins tokens (model.spm)
	byteTok   []bool     // ids of <0xNN> byte tokens (model.spm)
	isSpecial []bool     // ids of special added tokens (IsSpecial)
	special   Special    // BOS, EOS, PAD
	template  string     // chat template
	hashOnce  sync.Once  // guards hash
	hash      string     // hex SHA-256, computed on first use
	pool      sync.Pool  // *encodeScratch
	normSpecs []string   // normalizer names, for Hash
}

// Special holds the special tokens a model's prompt format uses. An ID is -1
// and its string empty when the tokenizer has no such token.
type Special struct {
	BOS, EOS, PAD                int32
	BOSToken, EOSToken, PADToken string
	// AddBOS and AddEOS say whether the model expects BOS before (EOS after)
	// each sequence: tokenizer_config.json's add_bos_token / add_eos_token
	// where given, else what tokenizer.json's post-processor template adds.
	// Encode never adds them itself.
	AddBOS, AddEOS bool
}

// maxPooledPieces bounds the piece buffers kept for the next Encode.
const maxPooledPieces = 1 << 14

type encodeScratch struct {
	spans []addedSpan
	inner []addedSpan
	a, b  []string
}

// Encode returns the ids of text. Added tokens written literally in text
// (such as "<|im_start|>" or "<think>") come out as their ids, special or not,
// as Hugging Face's tokenizer.encode does; the rest goes through the
// normalizer, the pre-tokenizer and BPE. Nothing is added around the text: no
// BOS or EOS (see Special). Bytes of text that are not valid UTF-8 are encoded
// as the byte tokens of those bytes.
func (t *Tokenizer) Encode(text string) []int32 {
	return t.encode(text, false)
}

// EncodeOrdinary is Encode for untrusted text: special tokens written in text
// are not recognized and are encoded as the plain text they are
// ("<|im_end|>" becomes "<", "|", "im", "_end", "|", ">"), as Hugging Face does
// with split_special_tokens / encode_special_tokens. Added tokens that are not
// special (Qwen3's "<think>", "<tool_call>") are still recognized.
func (t *Tokenizer) EncodeOrdinary(text string) []int32 {
	return t.encode(text, true)
}

func (t *Tokenizer) encode(text string, skipSpecial bool) []int32 {
	ids := make([]int32, 0, len(text)/3+1)
	if len(text) == 0 {
		return ids
	}
	sc, _ := t.pool.Get().(*encodeScratch)
	if sc == nil {
		sc = new(encodeScratch)
	}
	sc.spans = t.rawAdded.find(text, skipSpecial, sc.spans[:0])
	at := 0
	for _, sp := range sc.spans {
		ids = t.encodeNormalizing(text[at:sp.start], at == 0, skipSpecial, sc, ids)
		ids = append(ids, sp.tok.ID)
		at = sp.end
	}
	ids = t.encodeNormalizing(text[at:], at == 0, skipSpecial, sc, ids)
	t.pool.Put(sc)
	return ids
}

// encodeNormalizing normalizes a stretch of text between raw added tokens,
// then splits it at added tokens that match normalized text. atStart says
// the stretch begins the text (Metaspace's prepend_scheme "first").
func (t *Tokenizer) encodeNormalizing(s string, atStart, skipSpecial bool, sc *encodeScratch, ids []int32) []int32 {
	if s == "" {
		return ids
	}
	s = t.normalize(s)
	if t.normAdded == nil {
		return t.encodePlain(s, atStart, sc, ids)
	}
	sc.inner = t.normAdded.find(s, skipSpecial, sc.inner[:0])
	at := 0
	for _, sp := range sc.inner {
		ids = t.encodePlain(s[at:sp.start], atStart && at == 0, sc, ids)
		ids = append(ids, sp.tok.ID)
		at = sp.end
	}
	return t.encodePlain(s[at:], atStart && at == 0, sc, ids)
}

func (t *Tokenizer) normalize(s string) string {
	if len(t.normalizer) == 0 || (t.asciiSafe && isASCII(s)) {
		return s // ASCII is invariant under NFC, NFD, NFKC and NFKD
	}
	for _, f := range t.normalizer {
		s = f.apply(s)
	}
	return s
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// encodePlain pre-tokenizes normalized text and runs BPE on each piece.
func (t *Tokenizer) encodePlain(s string, atStart bool, sc *encodeScratch, ids []int32) []int32 {
	if s == "" {
		return ids
	}
	pieces := append(sc.a[:0], s)
	other := sc.b[:0]
	for _, st := range t.stages {
		other = other[:0]
		for i, p := range pieces {
			other = st.apply(p, atStart && i == 0, other)
		}
		pieces, other = other, pieces
	}
	for _, p := range pieces {
		ids = t.model.encodeWord(p, ids)
	}
	// Drop the references into text before the buffers go back to the pool.
	// Each stage only splits, so these lengths cover every slot used here.
	clear(pieces)
	clear(other)
	sc.a, sc.b = pieces[:0], other[:0]
	if cap(sc.a) > maxPooledPieces {
		sc.a, sc.b = nil, nil
	}
	return ids
}

// Decode returns the text of ids. Nothing is skipped, special tokens
// included; ids that name no token are left out. For byte-level BPE the
// bytes of all tokens are joined first and then read as UTF-8, each
// ill-formed sequence becoming one U+FFFD, as Hugging Face's ByteLevel
// decoder does, so a character split over several tokens decodes whole. For
// SentencePiece-style BPE "▁" reads as a space, each run of <0xNN> byte
// tokens as the UTF-8 text of its bytes (one U+FFFD per byte where they are
// not valid UTF-8), and the space the encoder prepended is stripped, as HF's
// Replace, ByteFallback, Fuse and Strip decoders do.
func (t *Tokenizer) Decode(ids []int32) string {
	if t.model.spm {
		return t.decodeSPM(ids)
	}
	buf := make([]byte, 0, 4*len(ids))
	for _, id := range ids {
		if id >= 0 && int(id) < len(t.idBytes) {
			buf = append(buf, t.idBytes[id]...)
		}
	}
	if utf8.Valid(buf) {
		return string(buf)
	}
	return string(appendLossy(make([]byte, 0, len(buf)+8), buf))
}

// TokenID returns the id of a token given in its vocabulary form: byte-level
// text for model tokens of byte-level BPE ("Ġthe" for " the"), the piece for
// SentencePiece-style BPE ("▁the", "<0x0A>"), the content for added tokens.
func (t *Tokenizer) TokenID(tok string) (int32, bool) {
	if id, ok := t.addedIDs[tok]; ok {
		return id, true
	}
	id, ok := t.vocab[tok]
	return id, ok
}

// Token returns the vocabulary form of id (see TokenID).
func (t *Tokenizer) Token(id int32) (string, bool) {
	if id < 0 || int(id) >= len(t.idToken) || !t.idPresent[id] {
		return "", false
	}
	return t.idToken[id], true
}

// VocabSize is the largest id plus one, added tokens included. A model's
// embedding matrix may have more rows (Qwen pads to a multiple of 128).
func (t *Tokenizer) VocabSize() int { return len(t.idToken) }

// Special returns the BOS, EOS and PAD tokens.
func (t *Tokenizer) Special() Special { return t.special }

// EOSToken is the end-of-sequence token's text ("" when there is none), so
// that a Tokenizer serves kd/data as it is (data.EOSTokenizer).
func (t *Tokenizer) EOSToken() string { return t.special.EOSToken }

// ChatTemplate returns the Jinja chat template of tokenizer_config.json (or
// chat_template.jinja), or "" when there is none.
func (t *Tokenizer) ChatTemplate() string { return t.template }
