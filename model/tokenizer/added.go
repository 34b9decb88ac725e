package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// addedToken is an entry of tokenizer.json's added_tokens.
type addedToken struct {
	ID         int32
	Content    string
	Special    bool
	LStrip     bool // absorb white space to the left of a match
	RStrip     bool // absorb white space to the right of a match
	SingleWord bool // match only where not inside a word
	Normalized bool // match in the normalized text rather than the raw text
}

// addedMatcher finds added tokens in text as Hugging Face's AddedVocabulary
// does: non-overlapping matches, leftmost first and longest among those that
// start at the same place (aho-corasick LeftmostLongest), then single_word,
// lstrip and rstrip applied to each match.
type addedMatcher struct {
	tokens []*addedToken
	first  [256]bool // bytes that start some token
	nodes  []trieNode
}

type trieNode struct {
	edges []trieEdge
	tok   int32 // index in tokens of the token ending here, or -1
}

type trieEdge struct {
	b    byte
	node int32
}

// newAddedMatcher builds a matcher for toks, each matched by key(tok). Tokens
// with an empty key are left out.
func newAddedMatcher(toks []*addedToken, key func(*addedToken) string) *addedMatcher {
	m := &addedMatcher{nodes: []trieNode{{tok: -1}}}
	for _, t := range toks {
		k := key(t)
		if k == "" {
			continue
		}
		m.first[k[0]] = true
		n := int32(0)
		for i := 0; i < len(k); i++ {
			n = m.child(n, k[i], true)
		}
		if m.nodes[n].tok < 0 {
			m.nodes[n].tok = int32(len(m.tokens))
			m.tokens = append(m.tokens, t)
		}
	}
	if len(m.tokens) == 0 {
		return nil
	}
	return m
}

func (m *addedMatcher) child(n int32, b byte, create bool) int32 {
	for _, e := range m.nodes[n].edges {
		if e.b == b {
			return e.node
		}
	}
	if !create {
		return -1
	}
	c := int32(len(m.nodes))
	m.nodes = append(m.nodes, trieNode{tok: -1})
	m.nodes[n].edges = append(m.nodes[n].edges, trieEdge{b, c})
	return c
}

// next returns the leftmost-longest match at or after from: its span and the
// token, or tok == nil when there is none.
func (m *addedMatcher) next(s string, from int) (start, end int, tok *addedToken) {
	for i := from; i < len(s); i++ {
		if !m.first[s[i]] {
			continue
		}
		n, best := int32(0), -1
		for j := i; j < len(s); j++ {
			n = m.child(n, s[j], false)
			if n < 0 {
				break
			}
			if t := m.nodes[n].tok; t >= 0 {
				best, tok = j+1, m.tokens[t]
			}
		}
		if best >= 0 {
			return i, best, tok
		}
	}
	return 0, 0, nil
}

// addedSpan is a matched added token in a text.
type addedSpan struct {
	start, end int
	tok        *addedToken
}

// find appends to dst the matches in s, in order. With skipSpecial, matches
// of special tokens are dropped and their text is left to the model, as HF
// does when encode_special_tokens is set.
func (m *addedMatcher) find(s string, skipSpecial bool, dst []addedSpan) []addedSpan {
	if m == nil {
		return dst
	}
	offset := 0 // end of the previous kept match
	for from := 0; from < len(s); {
		start, stop, tok := m.next(s, from)
		if tok == nil {
			break
		}
		from = stop
		if start < offset {
			continue // overlaps a previous match widened by rstrip
		}
		if skipSpecial && tok.Special {
			continue
		}
		if tok.SingleWord {
			if (start > 0 && endsWithWord(s[:start])) || (stop < len(s) && startsWithWord(s[stop:])) {
				continue
			}
		}
		if tok.LStrip {
			start = max(start-trailingSpace(s[:start]), offset)
		}
		if tok.RStrip {
			stop += leadingSpace(s[stop:])
		}
		dst = append(dst, addedSpan{start, stop, tok})
		offset = stop
		from = max(from, stop)
	}
	return dst
}

// isWordRune is \w of the Rust regex crate, which HF tokenizers tests around
// single_word tokens: Alphabetic, marks, Nd, Pc and Join_Control of Unicode
// 16.0 (regexWord, generated).
func isWordRune(r rune) bool {
	return unicode.Is(regexWord, r)
}

func endsWithWord(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return isWordRune(r)
}

func startsWithWord(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return isWordRune(r)
}

// trailingSpace is the length in bytes of the white space that ends s.
func trailingSpace(s string) int {
	n := 0
	for len(s) > n {
		r, size := utf8.DecodeLastRuneInString(s[:len(s)-n])
		if !unicode.IsSpace(r) {
			break
		}
		n += size
	}
	return n
}

// leadingSpace is the length in bytes of the white space that starts s.
func leadingSpace(s string) int {
	n := 0
	for n < len(s) {
		r, size := utf8.DecodeRuneInString(s[n:])
		if !unicode.IsSpace(r) {
			break
		}
		n += size
	}
	return n
}
