package tokenizer

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/kdnative/kdnative/model/gguf"
)

// SentencePiece-style BPE (Llama 2, Mistral v0.1–v0.3, TinyLlama, Phi-3;
// llama.cpp's tokenizer.ggml.model "llama") differs from byte-level BPE in
// four places:
//
//   - the text is not mapped to a byte alphabet: a space becomes "▁" (U+2581)
//     and a "▁" is put in front (the normalizer Prepend("▁") and
//     Replace(" ", "▁"), or the Metaspace pre-tokenizer);
//   - a word starts as one symbol per character, and a character missing
//     from the vocabulary falls back to the tokens <0x00>…<0xFF> of its UTF-8
//     bytes (byte_fallback);
//   - in a GGUF file the merges are not listed: a pair of adjacent symbols
//     merges when their concatenation is a token, the token of highest score
//     first and the leftmost first among equal scores (llama.cpp's
//     llm_tokenizer_spm); a tokenizer.json lists merges and HF applies them
//     by rank;
//   - decoding reads "▁" as a space, joins runs of byte tokens into UTF-8 and
//     strips the prepended space.
//
// The model is bpe with spm set; this file holds the normalizer steps, the
// Metaspace pre-tokenizer, the decoder and the GGUF reader of that family.

// metaSpace is SentencePiece's stand-in for a space.
const metaSpace = "\u2581"

// normStep is one step of the normalizer.
type normStep struct {
	op       normOp
	form     normForm // normUnicode
	from, to string   // normPrepend: to; normReplace: every from becomes to
}

type normOp uint8

const (
	normUnicode normOp = iota // NFC, NFD, NFKC or NFKD
	normPrepend               // HF's Prepend: put to in front of non-empty text
	normReplace               // HF's Replace with a String pattern
)

func (n normStep) apply(s string) string {
	switch n.op {
	case normPrepend:
		if s == "" {
			return s
		}
		return n.to + s
	case normReplace:
		return strings.ReplaceAll(s, n.from, n.to)
	}
	return n.form.String(s)
}

// spec names the step for Hash: the Unicode forms by name, as before these
// steps existed, so byte-level tokenizers keep their hashes.
func (n normStep) spec() string {
	switch n.op {
	case normPrepend:
		return fmt.Sprintf("prepend:%q", n.to)
	case normReplace:
		return fmt.Sprintf("replace:%q:%q", n.from, n.to)
	}
	return [...]string{formNFC: "NFC", formNFD: "NFD", formNFKC: "NFKC", formNFKD: "NFKD"}[n.form]
}

// prependScheme is Metaspace's prepend_scheme.
type prependScheme uint8

const (
	prependAlways prependScheme = iota // every piece the pre-tokenizer sees
	prependFirst                       // only the piece that begins the text
	prependNever
)

// metaspace is HF's Metaspace pre-tokenizer: spaces become the replacement,
// the replacement is put in front (by the scheme) unless the piece starts
// with it, and with split each piece is cut before every replacement (HF's
// MergedWithNext: "▁a▁▁b" gives "▁a", "▁", "▁b").
type metaspace struct {
	repl   string
	scheme prependScheme
	split  bool
}

func (m metaspace) apply(s string, atStart bool, dst []string) []string {
	s = strings.ReplaceAll(s, " ", m.repl)
	if (m.scheme == prependAlways || (m.scheme == prependFirst && atStart)) && !strings.HasPrefix(s, m.repl) {
		s = m.repl + s
	}
	if !m.split {
		return append(dst, s)
	}
	start := 0
	for i := 0; i < len(s); {
		if i > start && strings.HasPrefix(s[i:], m.repl) {
			dst = append(dst, s[start:i])
			start = i
		}
		if strings.HasPrefix(s[i:], m.repl) {
			i += len(m.repl)
		} else {
			i++
		}
	}
	if start < len(s) {
		dst = append(dst, s[start:])
	}
	return dst
}

func (m metaspace) spec() string {
	return fmt.Sprintf("metaspace:%q:%s:split=%v", m.repl, [...]string{"always", "first", "never"}[m.scheme], m.split)
}

// spmDecoder is what a SentencePiece-style decoder does: HF's
// Sequence[Replace(from → to), ByteFallback, Fuse, Strip(content, start, 0)].
type spmDecoder struct {
	from, to     string // Replace; from empty: none
	byteFallback bool   // <0xNN> tokens decode to their byte
	strip        int    // how many leading copies of stripChar Strip removes
	stripChar    rune
}

// byteToken parses SentencePiece's byte token "<0xNN>" (two upper- or
// lower-case hex digits, as HF's ByteFallback decoder accepts).
func byteToken(tok string) (byte, bool) {
	if len(tok) != 6 || !strings.HasPrefix(tok, "<0x") || tok[5] != '>' {
		return 0, false
	}
	var v byte
	for _, c := range []byte(tok[3:5]) {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | (c - '0')
		case c >= 'A' && c <= 'F':
			v = v<<4 | (c - 'A' + 10)
		case c >= 'a' && c <= 'f':
			v = v<<4 | (c - 'a' + 10)
		default:
			return 0, false
		}
	}
	return v, true
}

// spmBytes is what token tok stands for in SentencePiece-style text: its
// byte for a byte token, else its text with "▁" read as a space.
func (d *spmDecoder) spmBytes(tok string) (raw []byte, isByte bool) {
	if d.byteFallback {
		if b, ok := byteToken(tok); ok {
			return []byte{b}, true
		}
	}
	if d.from != "" {
		tok = strings.ReplaceAll(tok, d.from, d.to)
	}
	return []byte(tok), false
}

// decodeSPM is Decode for SentencePiece-style BPE.
func (t *Tokenizer) decodeSPM(ids []int32) string {
	buf := make([]byte, 0, 4*len(ids))
	run := 0 // the byte tokens at the end of buf, not yet checked
	flush := func() {
		if run == 0 {
			return
		}
		// HF's ByteFallback: a run of byte tokens that is not valid UTF-8
		// becomes one U+FFFD per token.
		if bs := buf[len(buf)-run:]; !utf8.Valid(bs) {
			buf = buf[:len(buf)-run]
			for range run {
				buf = append(buf, "\uFFFD"...)
			}
		}
		run = 0
	}
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.idBytes) || !t.idPresent[id] {
			continue
		}
		if t.byteTok[id] {
			buf = append(buf, t.idBytes[id]...)
			run++
			continue
		}
		flush()
		buf = append(buf, t.idBytes[id]...)
	}
	flush()
	s := string(buf)
	if !utf8.ValidString(s) {
		s = string(appendLossy(make([]byte, 0, len(buf)+8), buf))
	}
	for range t.dec.strip {
		r, size := utf8.DecodeRuneInString(s)
		if size == 0 || r != t.dec.stripChar {
			break
		}
		s = s[size:]
	}
	return s
}

// scoreMerge is a merge implied by a SentencePiece vocabulary: tokens left
// and right, adjacent, make a token of the given score.
type scoreMerge struct {
	left, right string
	score       float64
}

// scoreMerges returns the merges a vocabulary of scored tokens implies, as
// transformers' generate_merges (tokenization_utils_base.py) derives them
// for a GGUF file without merges: every split of every token into two
// tokens, at character boundaries; within one token by the ids of its
// halves; then, stably, by the score of the made token, highest first, and
// by the lengths in characters of the left and right halves, longest first.
// vocab maps a token to its id (the last of duplicates, as a Python dict
// and llama.cpp's token_to_id keep it), order lists the distinct tokens by
// their first id (a Python dict's order), scores gives each token's score.
func scoreMerges(vocab map[string]int32, order []string, score func(string) float64) []scoreMerge {
	var merges []scoreMerge
	var local []scoreMerge
	for _, tok := range order {
		local = local[:0]
		for i := range tok {
			if i == 0 {
				continue
			}
			l, r := tok[:i], tok[i:]
			if _, ok := vocab[l]; !ok {
				continue
			}
			if _, ok := vocab[r]; !ok {
				continue
			}
			local = append(local, scoreMerge{l, r, score(tok)})
		}
		sort.SliceStable(local, func(i, j int) bool {
			a, b := local[i], local[j]
			if vocab[a.left] != vocab[b.left] {
				return vocab[a.left] < vocab[b.left]
			}
			return vocab[a.right] < vocab[b.right]
		})
		merges = append(merges, local...)
	}
	sort.SliceStable(merges, func(i, j int) bool {
		a, b := merges[i], merges[j]
		if a.score != b.score {
			return a.score > b.score
		}
		if la, lb := utf8.RuneCountInString(a.left), utf8.RuneCountInString(b.left); la != lb {
			return la > lb
		}
		return utf8.RuneCountInString(a.right) > utf8.RuneCountInString(b.right)
	})
	return merges
}

// scoreRanks gives each merge the rank of its score among the distinct
// scores, highest first: merges of equal score share a rank, so the merge
// loop takes the leftmost of them, as llama.cpp does.
func scoreRanks(merges []scoreMerge) []int32 {
	ranks := make([]int32, len(merges))
	r := int32(-1)
	for i, m := range merges {
		if i == 0 || m.score != merges[i-1].score {
			r++
		}
		ranks[i] = r
	}
	return ranks
}

// checkScores refuses scores no order can be made of.
func checkScores(scores []float64) (int, bool) {
	for i, s := range scores {
		if math.IsNaN(s) {
			return i, false
		}
	}
	return 0, true
}

// spmTokenizerJSON is the tokenizer.json of a GGUF file whose
// tokenizer.ggml.model is "llama", and the rank by score alone of each of
// its merges (scoreRanks). Scores default to 0 and the space prefix to on,
// as in llama.cpp; an empty token is named [EMPTY_id] as llama.cpp names it.
func spmTokenizerJSON(f *gguf.File, tokens []string, types []int64) (map[string]any, []int32, error) {
	md := f.Metadata
	fail := func(format string, a ...any) error {
		return fmt.Errorf("tokenizer: %s: %s", f.Path(), fmt.Sprintf(format, a...))
	}
	scores := make([]float64, len(tokens))
	if md.Has("tokenizer.ggml.scores") {
		sc, err := md.Floats("tokenizer.ggml.scores")
		if err != nil {
			return nil, nil, fmt.Errorf("tokenizer: %w", err)
		}
		if len(sc) != len(tokens) {
			return nil, nil, fail("tokenizer.ggml.scores has %d entries for %d tokens", len(sc), len(tokens))
		}
		if i, ok := checkScores(sc); !ok {
			return nil, nil, fail("tokenizer.ggml.scores[%d] is NaN", i)
		}
		scores = sc
	}
	addPrefix := true
	if md.Has("tokenizer.ggml.add_space_prefix") {
		v, err := md.Bool("tokenizer.ggml.add_space_prefix")
		if err != nil {
			return nil, nil, fmt.Errorf("tokenizer: %w", err)
		}
		addPrefix = v
	}
	words := make([]string, len(tokens))
	vocab := make(map[string]int32, len(tokens))
	order := make([]string, 0, len(tokens)) // distinct tokens by first id
	for i, t := range tokens {
		if t == "" {
			t = fmt.Sprintf("[EMPTY_%d]", i)
		}
		words[i] = t
		if _, dup := vocab[t]; !dup {
			order = append(order, t)
		}
		vocab[t] = int32(i) // a later duplicate wins, as in llama.cpp's token_to_id
	}
	merges := scoreMerges(vocab, order, func(t string) float64 { return scores[vocab[t]] })
	pairs := make([][2]string, len(merges))
	for i, m := range merges {
		pairs[i] = [2]string{m.left, m.right}
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
	added := []addedJSON{}
	for i, typ := range types {
		t := words[i]
		if vocab[t] != int32(i) {
			continue // a duplicate: the later one is the token
		}
		switch typ {
		case ggufTokenControl, ggufTokenUnknown:
			added = append(added, addedJSON{ID: i, Content: t, Special: true})
		case ggufTokenUserDefined:
			added = append(added, addedJSON{ID: i, Content: t})
		}
	}
	var unk any
	if md.Has("tokenizer.ggml.unknown_token_id") {
		id, err := md.IntIn("tokenizer.ggml.unknown_token_id", 0, int64(len(tokens))-1)
		if err != nil {
			return nil, nil, fmt.Errorf("tokenizer: %w", err)
		}
		unk = words[id]
	}
	replace := map[string]any{"type": "Replace", "pattern": map[string]string{"String": " "}, "content": metaSpace}
	normalizer := []any{replace}
	decoder := []any{
		map[string]any{"type": "Replace", "pattern": map[string]string{"String": metaSpace}, "content": " "},
		map[string]any{"type": "ByteFallback"},
		map[string]any{"type": "Fuse"},
	}
	if addPrefix {
		normalizer = []any{map[string]any{"type": "Prepend", "prepend": metaSpace}, replace}
		decoder = append(decoder, map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0})
	}
	vj := make(orderedVocab, len(vocab))
	for t, id := range vocab {
		vj[t] = int(id)
	}
	post, err := spmPostProcessor(md, words)
	if err != nil {
		return nil, nil, err
	}
	tj := map[string]any{
		"version":        "1.0",
		"truncation":     nil,
		"padding":        nil,
		"added_tokens":   added,
		"normalizer":     map[string]any{"type": "Sequence", "normalizers": normalizer},
		"pre_tokenizer":  nil,
		"post_processor": post,
		"decoder":        map[string]any{"type": "Sequence", "decoders": decoder},
		"model": map[string]any{
			"type": "BPE", "dropout": nil, "unk_token": unk, "continuing_subword_prefix": nil,
			"end_of_word_suffix": nil, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
			"vocab": vj, "merges": pairs,
		},
	}
	return tj, scoreRanks(merges), nil
}

// spmPostProcessor is the TemplateProcessing that puts BOS (and EOS) around
// a sequence as the GGUF file asks (tokenizer.ggml.add_bos_token, true when
// absent as in llama.cpp; add_eos_token), as Llama 2's own tokenizer.json
// does, so that transformers' encode adds them too; nil when it adds
// nothing.
func spmPostProcessor(md *gguf.Metadata, words []string) (any, error) {
	add := func(key string, def bool) (bool, error) {
		if !md.Has(key) {
			return def, nil
		}
		v, err := md.Bool(key)
		if err != nil {
			return false, fmt.Errorf("tokenizer: %w", err)
		}
		return v, nil
	}
	type special struct {
		ID     string   `json:"id"`
		IDs    []int    `json:"ids"`
		Tokens []string `json:"tokens"`
	}
	specials := map[string]special{}
	var single, pair []any
	piece := func(name string, typeID int) map[string]any {
		return map[string]any{"SpecialToken": map[string]any{"id": name, "type_id": typeID}}
	}
	seq := func(id string, typeID int) map[string]any {
		return map[string]any{"Sequence": map[string]any{"id": id, "type_id": typeID}}
	}
	var bos, eos string
	for _, s := range []struct {
		addKey, idKey string
		def           bool
		dst           *string
	}{
		{"tokenizer.ggml.add_bos_token", "tokenizer.ggml.bos_token_id", true, &bos},
		{"tokenizer.ggml.add_eos_token", "tokenizer.ggml.eos_token_id", false, &eos},
	} {
		on, err := add(s.addKey, s.def)
		if err != nil {
			return nil, err
		}
		if !on || !md.Has(s.idKey) {
			continue
		}
		id, err := md.IntIn(s.idKey, 0, int64(len(words))-1)
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		*s.dst = words[id]
		specials[words[id]] = special{ID: words[id], IDs: []int{id}, Tokens: []string{words[id]}}
	}
	if bos == "" && eos == "" {
		return nil, nil
	}
	for k, id := range []string{"A", "B"} {
		if bos != "" {
			pair = append(pair, piece(bos, k))
			if k == 0 {
				single = append(single, piece(bos, 0))
			}
		}
		pair = append(pair, seq(id, k))
		if k == 0 {
			single = append(single, seq(id, 0))
		}
		if eos != "" {
			pair = append(pair, piece(eos, k))
			if k == 0 {
				single = append(single, piece(eos, 0))
			}
		}
	}
	return map[string]any{"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials}, nil
}
