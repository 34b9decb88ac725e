package tokenizer

import (
	"slices"
	"sort"
	"sync"
	"unicode/utf8"
)

// The Unicode normalization forms as Hugging Face tokenizers computes them:
// with the data of Unicode 9.0 (its crate unicode-normalization-alignments),
// so a mark encoded later is a starter and a character encoded later never
// decomposes, and without the stream-safe rule of
// golang.org/x/text/unicode/norm, which inserts U+034F after 30 non-starters.
// Both differences change tokens, and no Go library normalizes with another
// Unicode version than its own, so the forms are implemented here on the
// generated tables of unicode_tables.go (UAX #15: full decomposition,
// canonical ordering, canonical composition).
//
// Bytes that are not UTF-8 (which HF never sees: Python strings are valid)
// are kept as they are and act as starters that compose with nothing.

// normForm is one of the four normalization forms.
type normForm uint8

const (
	formNFC normForm = iota
	formNFD
	formNFKC
	formNFKD
)

func (f normForm) composes() bool { return f == formNFC || f == formNFKC }
func (f normForm) compat() bool   { return f == formNFKC || f == formNFKD }

// normChar is one entry of normChars.
type normChar struct {
	r      rune
	ccc    uint8
	flags  uint8
	canon  string // full canonical decomposition; "" when none
	compat string // full compatibility decomposition when it differs from canon
}

// normChar flags: the quick-check values (UAX #15) that are not Yes, and
// whether the character composes with one before it.
const (
	nfcNo     = 1 << iota // never in NFC
	nfcMaybe              // in NFC unless it composes with what precedes it
	nfkcNo                // never in NFKC
	nfkcMaybe             // in NFKC unless it composes with what precedes it
	second                // the second character of a primary composite
)

// Hangul syllables decompose and compose by arithmetic (Unicode 3.12).
const (
	hangulS     = 0xAC00
	hangulL     = 0x1100
	hangulV     = 0x1161
	hangulT     = 0x11A7
	hangulLN    = 19
	hangulVN    = 21
	hangulTN    = 28
	hangulNN    = hangulVN * hangulTN
	hangulSN    = hangulLN * hangulNN
	hangulSLast = hangulS + hangulSN - 1
)

// bmpNorm maps each character of the Basic Multilingual Plane to its index
// in normChars plus one (0: nothing to do), built on first use (128 KiB).
var bmpNorm = sync.OnceValue(func() *[0x10000]uint16 {
	var t [0x10000]uint16
	for i := range normChars {
		if r := normChars[i].r; r < 0x10000 {
			t[r] = uint16(i + 1)
		}
	}
	return &t
})

// astralNorm is the index in normChars of the first character past the BMP.
var astralNorm = sort.Search(len(normChars), func(i int) bool { return normChars[i].r >= 0x10000 })

// lookupNorm returns r's entry, or nil when normalization copies r.
func lookupNorm(r rune) *normChar {
	if r < 0x10000 {
		if i := bmpNorm()[r]; i != 0 {
			return &normChars[i-1]
		}
		return nil
	}
	rest := normChars[astralNorm:]
	i := sort.Search(len(rest), func(i int) bool { return rest[i].r >= r })
	if i < len(rest) && rest[i].r == r {
		return &rest[i]
	}
	return nil
}

// composeTable maps a pair of characters to their primary composite.
var composeTable = sync.OnceValue(func() map[[2]rune]rune {
	m := make(map[[2]rune]rune, len(composePairs))
	for _, p := range composePairs {
		m[[2]rune{p[0], p[1]}] = p[2]
	}
	return m
})

// compose returns the primary composite of a and b.
func compose(a, b rune) (rune, bool) {
	switch {
	case a >= hangulL && a < hangulL+hangulLN && b >= hangulV && b < hangulV+hangulVN:
		return hangulS + ((a-hangulL)*hangulVN+(b-hangulV))*hangulTN, true
	case a >= hangulS && a <= hangulSLast && (a-hangulS)%hangulTN == 0 && b > hangulT && b < hangulT+hangulTN:
		return a + (b - hangulT), true
	case a < 0 || b < 0:
		return 0, false
	}
	c, ok := composeTable()[[2]rune{a, b}]
	return c, ok
}

// String returns s in form f. Text that the quick check passes is copied;
// the rest is normalized between boundaries (characters of class 0 that are
// quick-check Yes: nothing before one interacts with anything after it).
func (f normForm) String(s string) string {
	i, ok := f.quickCheck(s, 0)
	if ok {
		return s
	}
	out := make([]byte, 0, len(s)+len(s)/8)
	out = append(out, s[:i]...)
	var buf []normRune
	for i < len(s) {
		j := f.nextBoundary(s, i)
		out, buf = f.appendNormal(out, s[i:j], buf[:0])
		k, _ := f.quickCheck(s, j)
		out = append(out, s[j:k]...)
		i = k
	}
	return string(out)
}

// quickCheck reports whether s[from:] is in form f by the quick check of
// UAX #15 (every character Yes and non-starters in canonical order), where
// s[from] is a boundary. When it cannot say, it returns the last boundary
// before the first character in doubt: s[from:] before it is in form f.
func (f normForm) quickCheck(s string, from int) (int, bool) {
	var lastCC uint8
	starter := from
	for i := from; i < len(s); {
		if s[i] < utf8.RuneSelf {
			lastCC, starter = 0, i
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r >= hangulS && r <= hangulSLast {
			if !f.composes() {
				return starter, false
			}
			lastCC, starter = 0, i
			i += n
			continue
		}
		var cc uint8
		if e := lookupNorm(r); e != nil {
			if e.ccc != 0 && lastCC > e.ccc {
				return starter, false
			}
			if !f.yes(e) {
				return starter, false
			}
			cc = e.ccc
		}
		if cc == 0 {
			starter = i
		}
		lastCC = cc
		i += n
	}
	return len(s), true
}

// nextBoundary returns the start of the first boundary in s after the
// character at i, or len(s).
func (f normForm) nextBoundary(s string, i int) int {
	_, n := utf8.DecodeRuneInString(s[i:])
	for i += n; i < len(s); i += n {
		if s[i] < utf8.RuneSelf {
			return i
		}
		var r rune
		r, n = utf8.DecodeRuneInString(s[i:])
		if r >= hangulS && r <= hangulSLast {
			if f.composes() {
				return i
			}
			continue
		}
		if e := lookupNorm(r); e == nil || (e.ccc == 0 && f.yes(e)) {
			return i
		}
	}
	return len(s)
}

// yes reports whether a character with entry e is quick-check Yes for f.
func (f normForm) yes(e *normChar) bool {
	switch f {
	case formNFC:
		return e.flags&(nfcNo|nfcMaybe) == 0
	case formNFKC:
		return e.flags&(nfkcNo|nfkcMaybe) == 0
	case formNFD:
		return e.canon == ""
	}
	return e.canon == "" && e.compat == ""
}

// normRune is a character being normalized, with its combining class and
// whether it may compose with a character before it. A byte b that is not
// UTF-8 is held as the rune -1-b.
type normRune struct {
	r      rune
	ccc    uint8
	second bool
}

// appendNormal appends s in form f to out: decomposition, canonical
// ordering, then composition for NFC and NFKC. buf is scratch space, returned
// for reuse.
func (f normForm) appendNormal(out []byte, s string, buf []normRune) ([]byte, []normRune) {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			buf = append(buf, normRune{r: -1 - rune(s[i])})
			i++
			continue
		}
		i += n
		buf = f.appendDecomposed(buf, r)
	}
	reorder(buf)
	if f.composes() {
		buf = composeAll(buf)
	}
	for _, c := range buf {
		if c.r < 0 {
			out = append(out, byte(-1-c.r))
		} else {
			out = utf8.AppendRune(out, c.r)
		}
	}
	return out, buf
}

// appendDecomposed appends the full decomposition of r under f.
func (f normForm) appendDecomposed(buf []normRune, r rune) []normRune {
	if r >= hangulS && r <= hangulSLast {
		si := r - hangulS
		buf = append(buf, normRune{r: hangulL + si/hangulNN}, normRune{r: hangulV + si%hangulNN/hangulTN, second: true})
		if t := si % hangulTN; t != 0 {
			buf = append(buf, normRune{r: hangulT + t, second: true})
		}
		return buf
	}
	e := lookupNorm(r)
	if e == nil {
		return append(buf, normRune{r: r})
	}
	d := e.canon
	if f.compat() && e.compat != "" {
		d = e.compat
	}
	if d == "" {
		return append(buf, normRune{r: r, ccc: e.ccc, second: e.flags&second != 0})
	}
	for _, c := range d {
		nr := normRune{r: c}
		if e := lookupNorm(c); e != nil {
			nr.ccc, nr.second = e.ccc, e.flags&second != 0
		}
		buf = append(buf, nr)
	}
	return buf
}

// reorder puts each run of non-starters in canonical order: a stable sort by
// combining class (O(n log n) however long the run, as there is no
// stream-safe limit).
func reorder(buf []normRune) {
	for i := 0; i < len(buf); {
		if buf[i].ccc == 0 {
			i++
			continue
		}
		j := i + 1
		for j < len(buf) && buf[j].ccc != 0 {
			j++
		}
		if j-i > 1 {
			slices.SortStableFunc(buf[i:j], func(a, b normRune) int { return int(a.ccc) - int(b.ccc) })
		}
		i = j
	}
}

// composeAll is canonical composition (UAX #15, D117) of a decomposed,
// canonically ordered buf, in place: each character that is not blocked from
// the last starter and forms a primary composite with it replaces it.
func composeAll(buf []normRune) []normRune {
	out := buf[:0]
	starter := -1 // index in out of the last starter
	for _, c := range buf {
		if starter >= 0 && c.second {
			// The characters after the starter are non-starters in canonical
			// order, so the last one has the highest class among them.
			adjacent := len(out)-1 == starter
			if adjacent || out[len(out)-1].ccc < c.ccc {
				if comp, ok := compose(out[starter].r, c.r); ok {
					out[starter].r = comp
					continue
				}
			}
		}
		if c.ccc == 0 {
			starter = len(out)
		}
		out = append(out, c)
	}
	return out
}
