package tokenizer

import (
	"testing"
	"unicode"
)

// forEachRune calls fn for every Unicode scalar value (surrogates left out:
// they cannot be in a Python string, so HF never sees them).
func forEachRune(fn func(r rune)) {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if r >= 0xD800 && r <= 0xDFFF {
			continue
		}
		fn(r)
	}
}

// rangeSet reads a charclass or ccc record: code point → value (1 for a
// charclass, the class for ccc).
func rangeSet(t *testing.T, ranges [][]int32) map[rune]int32 {
	t.Helper()
	m := map[rune]int32{}
	for _, rg := range ranges {
		v := int32(1)
		if len(rg) == 3 {
			v = rg[2]
		}
		for r := rg[0]; r <= rg[1]; r++ {
			m[r] = v
		}
	}
	return m
}

// TestCharClasses checks, for every code point, the character classes the
// pre-tokenizers and added tokens use against what HF tokenizers does
// (probed by make_fixtures.py): \p{L}, \p{N} and \s of the Split and
// ByteLevel regular expressions, numeric for Digits, \w for single_word.
func TestCharClasses(t *testing.T) {
	classes := map[string]func(r rune) bool{
		"letter": func(r rune) bool { return classOf(r) == clsLetter },
		"number": func(r rune) bool { return classOf(r) == clsNumber },
		"space":  func(r rune) bool { return classOf(r) == clsSpace },
		"numeric": func(r rune) bool {
			ok, _ := numericAt(string(r), 0)
			return ok
		},
		"word": isWordRune,
	}
	seen := map[string]bool{}
	for _, f := range fixtures(t, "charclass") {
		is, ok := classes[f.Name]
		if !ok {
			t.Errorf("fixture for unknown class %q", f.Name)
			continue
		}
		seen[f.Name] = true
		want := rangeSet(t, f.Ranges)
		bad := 0
		forEachRune(func(r rune) {
			if got := is(r); got != (want[r] == 1) && bad < 10 {
				bad++
				t.Errorf("%s(U+%04X) = %v, HF says %v", f.Name, r, got, !got)
			}
		})
		t.Logf("%s: %d code points", f.Name, len(want))
	}
	for name := range classes {
		if !seen[name] {
			t.Errorf("no fixture for class %s", name)
		}
	}
	// The scanners read the classes through the ASCII and BMP tables.
	forEachRune(func(r rune) {
		s := string(r)
		if cls, _ := classAt(s, 0); cls != classOf(r) {
			t.Fatalf("classAt(U+%04X) = %d, classOf = %d", r, cls, classOf(r))
		}
	})
}

// TestCombiningClass checks the canonical combining class of every code
// point that the normalizers do not decompose against the one HF's NFD
// orders marks by (probed by make_fixtures.py).
func TestCombiningClass(t *testing.T) {
	var want map[rune]int32
	for _, f := range fixtures(t, "ccc") {
		want = rangeSet(t, f.Ranges)
	}
	decomposes := map[rune]bool{}
	for _, f := range fixtures(t, "normchar") {
		if f.Form == "NFD" {
			for _, r := range f.Chars {
				decomposes[r] = true
			}
		}
	}
	bad := 0
	forEachRune(func(r rune) {
		if decomposes[r] || (r >= hangulS && r <= hangulSLast) {
			return
		}
		var got uint8
		if e := lookupNorm(r); e != nil {
			got = e.ccc
		}
		if int32(got) != want[r] && bad < 10 {
			bad++
			t.Errorf("ccc(U+%04X) = %d, HF orders it as %d", r, got, want[r])
		}
	})
	t.Logf("%d non-starters", len(want))
}

// TestNormalizeChars puts every code point alone through each form and
// compares with HF's normalizers.
func TestNormalizeChars(t *testing.T) {
	forms := map[string]normForm{"NFC": formNFC, "NFD": formNFD, "NFKC": formNFKC, "NFKD": formNFKD}
	for _, f := range fixtures(t, "normchar") {
		form, ok := forms[f.Form]
		if !ok || len(f.Chars) != len(f.Outs) {
			t.Fatalf("bad normchar fixture for %q", f.Form)
		}
		want := make(map[rune]string, len(f.Chars))
		for i, r := range f.Chars {
			want[r] = f.Outs[i]
		}
		bad := 0
		forEachRune(func(r rune) {
			if r == '\n' || (r >= hangulS && r <= hangulSLast) {
				return // not probed (see make_fixtures.py)
			}
			w, ok := want[r]
			if !ok {
				w = string(r)
			}
			if got := form.String(string(r)); got != w && bad < 10 {
				bad++
				t.Errorf("%s(U+%04X) = %+q, HF %+q", f.Form, r, got, w)
			}
		})
		t.Logf("%s changes %d characters", f.Form, len(want))
	}
}

// TestNormalizeStrings compares each form on the fixture texts (combining
// sequences, long runs of marks, Hangul, blocked and excluded compositions)
// with HF's normalizers.
func TestNormalizeStrings(t *testing.T) {
	forms := map[string]normForm{"NFC": formNFC, "NFD": formNFD, "NFKC": formNFKC, "NFKD": formNFKD}
	n := 0
	for _, f := range fixtures(t, "normalize") {
		if got := forms[f.Form].String(f.Text); got != f.Out {
			t.Errorf("%s(%+q) = %+q, HF %+q", f.Form, f.Text, got, f.Out)
		}
		n++
	}
	t.Logf("%d texts", n)
}

// TestNormalizeInvalidUTF8: bytes that are not UTF-8 stay as they are and
// block composition across them.
func TestNormalizeInvalidUTF8(t *testing.T) {
	for _, c := range []struct{ in, nfc, nfd string }{
		{"e\xff\u0301", "e\xff\u0301", "e\xff\u0301"},
		{"\u00e9\xff", "\u00e9\xff", "e\u0301\xff"},
		{"e\u0301\xe2\x82", "\u00e9\xe2\x82", "e\u0301\xe2\x82"},
		{"\xed\xa0\x80\u0316\u0301", "\xed\xa0\x80\u0316\u0301", "\xed\xa0\x80\u0316\u0301"},
	} {
		if got := formNFC.String(c.in); got != c.nfc {
			t.Errorf("NFC(%+q) = %+q, want %+q", c.in, got, c.nfc)
		}
		if got := formNFD.String(c.in); got != c.nfd {
			t.Errorf("NFD(%+q) = %+q, want %+q", c.in, got, c.nfd)
		}
	}
}
