package tokenizer

import (
	"fmt"
	"sync"
	"unicode"
	"unicode/utf8"
)

// The split patterns of byte-level BPE tokenizers use a negative look-ahead
// (\s+(?!\S)) that Go's regexp lacks, so each known pattern has a hand-written
// scanner here that reproduces what a backtracking engine (Oniguruma in Hugging
// Face tokenizers, fancy-regex in tiktoken) returns: at each position the first
// alternative that matches, each quantifier greedy. Patterns are recognized by
// their exact text; any other pattern is refused when the file is loaded.

// Pattern texts as they appear in tokenizer.json files.
const (
	// PatternGPT2 is GPT-2's pattern, also used implicitly by the ByteLevel
	// pre-tokenizer when use_regex is true (GPT-2, SmolLM, StarCoder, RoBERTa).
	PatternGPT2 = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	// PatternQwen2 is the Qwen2/Qwen2.5/Qwen3 pattern: digits one at a time.
	PatternQwen2 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// PatternLlama3 is the Llama 3 pattern (tiktoken's cl100k_base): digits in
	// groups of one to three.
	PatternLlama3 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// Character classes of the patterns: \p{L}, \p{N}, \s and everything else.
// \p{L} and \p{N} are those of Oniguruma, Unicode 16.0 (regexLetter and
// regexNumber, generated: Go's unicode package is older); \s is Unicode
// White_Space, which is what unicode.IsSpace tests.
const (
	clsOther uint8 = iota
	clsLetter
	clsNumber
	clsSpace
)

var asciiClass [utf8.RuneSelf]uint8

func init() {
	for c := rune(0); c < utf8.RuneSelf; c++ {
		asciiClass[c] = classOf(c)
	}
}

func classOf(r rune) uint8 {
	switch {
	case unicode.Is(regexLetter, r):
		return clsLetter
	case unicode.Is(regexNumber, r):
		return clsNumber
	case unicode.IsSpace(r):
		return clsSpace
	}
	return clsOther
}

// classAt returns the class of the rune at s[i] and its length in bytes. A
// byte that does not start valid UTF-8 is one rune of class other.
func classAt(s string, i int) (uint8, int) {
	c := s[i]
	if c < utf8.RuneSelf {
		return asciiClass[c], 1
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && n == 1 {
		return clsOther, 1
	}
	if r < 0x10000 {
		return bmpClass()[r], n
	}
	return classOf(r), n
}

// bmpClass is the class of every rune of the Basic Multilingual Plane,
// built on first use (64 KiB), which spares the unicode range-table searches
// for non-Latin text.
var bmpClass = sync.OnceValue(func() *[0x10000]uint8 {
	var t [0x10000]uint8
	for r := range t {
		t[r] = classOf(rune(r))
	}
	return &t
})

// runEnd returns the end of the run of runes of class cls starting at i.
func runEnd(s string, i int, cls uint8) int {
	for i < len(s) {
		c, n := classAt(s, i)
		if c != cls {
			break
		}
		i += n
	}
	return i
}

// lastRuneStart returns the start of the last rune in s[:j] (j > 0).
func lastRuneStart(s string, j int) int {
	_, n := utf8.DecodeLastRuneInString(s[:j])
	return j - n
}

// contraction returns the length of the contraction ('s 't 're 've 'm 'll 'd)
// at s[i] (an apostrophe), or 0. With fold set, letters match case-blind, and
// U+017F (ſ, whose case folding is s) matches s, as (?i:…) does in Oniguruma.
func contraction(s string, i int, fold bool) int {
	rest := s[i+1:]
	if len(rest) == 0 {
		return 0
	}
	lower := func(c byte) byte {
		if fold && c >= 'A' && c <= 'Z' {
			return c + ('a' - 'A')
		}
		return c
	}
	c1 := lower(rest[0])
	switch c1 {
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v', 'l':
		if len(rest) >= 2 {
			c2 := lower(rest[1])
			if (c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l') {
				return 3
			}
		}
	}
	if fold && len(rest) >= 2 && rest[0] == 0xC5 && rest[1] == 0xBF { // ſ
		return 3
	}
	return 0
}

// splitGPT2 appends to dst the pieces of s under PatternGPT2.
func splitGPT2(s string, dst []string) []string {
	for i := 0; i < len(s); {
		j := gpt2Match(s, i)
		dst = append(dst, s[i:j])
		i = j
	}
	return dst
}

// gpt2Match returns the end of the match of PatternGPT2 at i (i < len(s)).
func gpt2Match(s string, i int) int {
	if s[i] == '\'' {
		if n := contraction(s, i, false); n > 0 {
			return i + n
		}
	}
	cls, n := classAt(s, i)
	if s[i] == ' ' && i+1 < len(s) {
		// ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+` with the space.
		if c2, n2 := classAt(s, i+1); c2 != clsSpace {
			return runEnd(s, i+1+n2, c2)
		}
	}
	if cls != clsSpace {
		return runEnd(s, i+n, cls)
	}
	return spaceMatch(s, i)
}

// spaceMatch matches `\s+(?!\S)|\s+` at i, where s[i] is white space: the
// whole run if it ends the text or is one rune long, else the run less its
// last rune (which is left to prefix the word that follows).
func spaceMatch(s string, i int) int {
	j := runEnd(s, i, clsSpace)
	if j == len(s) {
		return j
	}
	if last := lastRuneStart(s, j); last > i {
		return last
	}
	return j
}

// splitLlama appends to dst the pieces of s under PatternQwen2 (maxDigits 1)
// or PatternLlama3 (maxDigits 3).
func splitLlama(s string, maxDigits int, dst []string) []string {
	for i := 0; i < len(s); {
		j := llamaMatch(s, i, maxDigits)
		dst = append(dst, s[i:j])
		i = j
	}
	return dst
}

func isCRLF(c byte) bool { return c == '\r' || c == '\n' }

// llamaMatch returns the end of the match of the Qwen2/Llama 3 pattern at i.
func llamaMatch(s string, i int, maxDigits int) int {
	c0 := s[i]
	if c0 == '\'' {
		if n := contraction(s, i, true); n > 0 {
			return i + n
		}
	}
	cls, n := classAt(s, i)
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if cls == clsLetter {
		return runEnd(s, i+n, clsLetter)
	}
	if cls != clsNumber && !isCRLF(c0) && i+n < len(s) {
		if c2, n2 := classAt(s, i+n); c2 == clsLetter {
			return runEnd(s, i+n+n2, clsLetter)
		}
	}
	// \p{N} or \p{N}{1,3}
	if cls == clsNumber {
		j := i + n
		for k := 1; k < maxDigits && j < len(s); k++ {
			c2, n2 := classAt(s, j)
			if c2 != clsNumber {
				break
			}
			j += n2
		}
		return j
	}
	// ` ?[^\s\p{L}\p{N}]+[\r\n]*`
	start := -1
	if cls == clsOther {
		start = i
	} else if c0 == ' ' && i+1 < len(s) {
		if c2, _ := classAt(s, i+1); c2 == clsOther {
			start = i + 1
		}
	}
	if start >= 0 {
		j := runEnd(s, start, clsOther)
		for j < len(s) && isCRLF(s[j]) {
			j++
		}
		return j
	}
	// \s*[\r\n]+ : up to and including the last \r or \n of the space run.
	j := runEnd(s, i, clsSpace)
	for k := j - 1; k >= i; k-- {
		if isCRLF(s[k]) {
			return k + 1
		}
	}
	return spaceMatch(s, i)
}

// numericAt reports whether the rune at s[i] is numeric for the Digits
// pre-tokenizer (Rust's char::is_numeric: general category N of Unicode 17.0,
// rustNumeric), and its length in bytes.
func numericAt(s string, i int) (bool, int) {
	c := s[i]
	if c < utf8.RuneSelf {
		return c >= '0' && c <= '9', 1
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && n == 1 {
		return false, 1
	}
	return unicode.Is(rustNumeric, r), n
}

// splitDigits is the Digits pre-tokenizer: runs of numeric characters (or
// each one when individual) become pieces of their own.
func splitDigits(s string, individual bool, dst []string) []string {
	start := 0
	for i := 0; i < len(s); {
		num, n := numericAt(s, i)
		if !num {
			i += n
			continue
		}
		if i > start {
			dst = append(dst, s[start:i])
		}
		j := i + n
		for !individual && j < len(s) {
			num, n := numericAt(s, j)
			if !num {
				break
			}
			j += n
		}
		dst = append(dst, s[i:j])
		start, i = j, j
	}
	if start < len(s) {
		dst = append(dst, s[start:])
	}
	return dst
}

// stage is one step of the pre-tokenizer: it cuts a piece into smaller ones.
type stage struct {
	kind       stageKind
	individual bool // digits: one piece per digit
	meta       metaspace
}

type stageKind int

const (
	stageGPT2        stageKind = iota // split by PatternGPT2
	stageQwen2                        // split by PatternQwen2
	stageLlama3                       // split by PatternLlama3
	stageDigits                       // Digits pre-tokenizer
	stagePrefixSpace                  // ByteLevel add_prefix_space: prepend " " unless present
	stageMetaspace                    // Metaspace: " " → "▁", a "▁" prefix, split before each "▁"
)

// apply appends the pieces of s to dst. atStart says s begins the text.
func (st stage) apply(s string, atStart bool, dst []string) []string {
	switch st.kind {
	case stageGPT2:
		return splitGPT2(s, dst)
	case stageQwen2:
		return splitLlama(s, 1, dst)
	case stageLlama3:
		return splitLlama(s, 3, dst)
	case stageDigits:
		return splitDigits(s, st.individual, dst)
	case stagePrefixSpace:
		if len(s) > 0 && s[0] != ' ' {
			s = " " + s
		}
		return append(dst, s)
	case stageMetaspace:
		return st.meta.apply(s, atStart, dst)
	}
	panic(fmt.Sprintf("tokenizer: unknown pre-tokenizer stage %d", st.kind))
}

// spec names the stage for Hash.
func (st stage) spec() string {
	switch st.kind {
	case stageGPT2:
		return "split:" + PatternGPT2
	case stageQwen2:
		return "split:" + PatternQwen2
	case stageLlama3:
		return "split:" + PatternLlama3
	case stageDigits:
		return fmt.Sprintf("digits:individual=%v", st.individual)
	case stagePrefixSpace:
		return "prefix-space"
	case stageMetaspace:
		return st.meta.spec()
	}
	return "?"
}

// patternStage maps a Split pattern text to its scanner.
func patternStage(pattern string) (stage, bool) {
	switch pattern {
	case PatternGPT2:
		return stage{kind: stageGPT2}, true
	case PatternQwen2:
		return stage{kind: stageQwen2}, true
	case PatternLlama3:
		return stage{kind: stageLlama3}, true
	}
	return stage{}, false
}
