#!/usr/bin/env python3
"""Make model/tokenizer/unicode_tables.go: the Unicode data of HF tokenizers.

Usage (from the repository root, or by `go generate ./model/tokenizer`):

    python3 -m pip install -r scripts/tokenizer/requirements.txt
    python3 scripts/tokenizer/gen_unicode.py

Hugging Face tokenizers does not use one Unicode version, and none of them is
Go's (the unicode package and golang.org/x/text are Unicode 15.0):

  - the Split and ByteLevel regular expressions run on Oniguruma, whose \\p{L}
    and \\p{N} are Unicode 16.0;
  - the Digits pre-tokenizer splits on Rust's char::is_numeric (general
    category N), Unicode 17.0 in the wheels of the pinned version;
  - single_word added tokens test the Rust regex crate's \\w (Alphabetic,
    marks, Nd, Pc, Join_Control), Unicode 16.0;
  - the NFC, NFD, NFKC and NFKD normalizers use the crate
    unicode-normalization-alignments, whose tables are Unicode 9.0: a mark
    encoded later is a starter to them, a character encoded later never
    decomposes. They also never insert U+034F after 30 non-starters (the
    stream-safe rule that golang.org/x/text applies).

The data comes from unicodedata2 (Unicode 17.0), with each version's subset
cut by unicode-age (the Age property, DerivedAge.txt): by Unicode's stability
policies a character's general category, combining class and decomposition do
not change once it is encoded, and a composite added later is excluded from
composition, so "encoded by version V" is all that differs. Other_Alphabetic
(for \\w) comes from the regex package. model/tokenizer's tests check every
code point of these tables against what HF tokenizers itself does
(scripts/tokenizer/make_fixtures.py, the charclass, ccc and normchar records).
"""

import os
import sys

import regex
import unicodedata2 as ucd
from unicode_age import unicode_age_db

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "model", "tokenizer", "unicode_tables.go")

REGEX_VERSION = (16, 0)    # Oniguruma and the regex crate
NUMERIC_VERSION = (17, 0)  # Rust's char::is_numeric
NORM_VERSION = (9, 0)      # unicode-normalization-alignments

S_BASE, S_COUNT = 0xAC00, 11172


def ages():
    """Code point → (major, minor) of the version that encoded it."""
    age = {}
    for lo, hi, major, minor in unicode_age_db.iter_spans():
        for c in range(lo, hi + 1):
            age[c] = (major, minor)
    return age


def ranges(cps):
    out = []
    for c in sorted(cps):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def range_table(name, doc, cps):
    rs = ranges(cps)
    r16 = [r for r in rs if r[1] <= 0xFFFF]
    r32 = [r for r in rs if r[0] > 0xFFFF]
    for r in rs:
        if r[0] <= 0xFFFF < r[1]:  # split a range across the planes
            r16.append([r[0], 0xFFFF])
            r32.insert(0, [0x10000, r[1]])
    r16.sort()
    latin = sum(1 for r in r16 if r[1] <= 0xFF)
    lines = [doc, "var %s = &unicode.RangeTable{" % name, "\tR16: []unicode.Range16{"]
    lines += ["\t\t{0x%04x, 0x%04x, 1}," % (lo, hi) for lo, hi in r16]
    lines += ["\t},", "\tR32: []unicode.Range32{"]
    lines += ["\t\t{0x%x, 0x%x, 1}," % (lo, hi) for lo, hi in r32]
    lines += ["\t},", "\tLatinOffset: %d," % latin, "}", ""]
    return lines


def go_string(s):
    out = []
    for ch in s:
        c = ord(ch)
        if 0x20 <= c < 0x7F and ch not in '"\\':
            out.append(ch)
        elif c <= 0xFFFF:
            out.append("\\u%04x" % c)
        else:
            out.append("\\U%08x" % c)
    return '"' + "".join(out) + '"'


def main():
    if ucd.unidata_version != "17.0.0":
        sys.exit("need unicodedata2 with Unicode 17.0.0, have %s" % ucd.unidata_version)
    if unicode_age_db.UCD_VERSION[:2] < NUMERIC_VERSION:
        sys.exit("unicode-age is older than Unicode 17.0")
    age = ages()
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]

    def cat(c):
        return ucd.category(chr(c))

    def encoded_by(c, v):
        return c in age and age[c] <= v

    letter = [c for c in cps if encoded_by(c, REGEX_VERSION) and cat(c)[0] == "L"]
    number = [c for c in cps if encoded_by(c, REGEX_VERSION) and cat(c)[0] == "N"]
    numeric = [c for c in cps if encoded_by(c, NUMERIC_VERSION) and cat(c)[0] == "N"]
    other_alpha = regex.compile(r"\p{Other_Alphabetic}|\p{Join_Control}")
    word = [c for c in cps if encoded_by(c, REGEX_VERSION) and
            (cat(c)[0] in "LM" or cat(c) in ("Nd", "Nl", "Pc") or other_alpha.match(chr(c)))]

    # Normalization data as of Unicode 9.0. Hangul syllables are algorithmic
    # (normalize.go) and left out.
    old = [c for c in cps if encoded_by(c, NORM_VERSION) and not S_BASE <= c < S_BASE + S_COUNT]
    chars = {}  # code point → [ccc, flags, canonical, compatibility]
    pairs = []
    for c in old:
        ch = chr(c)
        ccc = ucd.combining(ch)
        nfd, nfkd = ucd.normalize("NFD", ch), ucd.normalize("NFKD", ch)
        nfc, nfkc = ucd.normalize("NFC", ch), ucd.normalize("NFKC", ch)
        flags = []
        if nfc != ch:
            flags.append("nfcNo")
        if nfkc != ch:
            flags.append("nfkcNo")
        canon = nfd if nfd != ch else ""
        compat = nfkd if nfkd != nfd else ""
        if ccc or flags or canon or compat:
            chars[c] = [ccc, flags, canon, compat]
        m = ucd.decomposition(ch)
        if m and not m.startswith("<") and nfc == ch:
            parts = [int(x, 16) for x in m.split()]
            if len(parts) == 2:  # a primary composite
                pairs.append((parts[0], parts[1], c))
    # Characters that compose with what precedes them may change in NFC
    # (quick check Maybe): second halves of pairs, and Hangul V and T jamo.
    seconds = {b for _, b, _ in pairs} | set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))
    for c in seconds:
        e = chars.setdefault(c, [ucd.combining(chr(c)), [], "", ""])
        e[1].append("second")
        for f in ("nfc", "nfkc"):
            if f + "No" not in e[1]:
                e[1].append(f + "Maybe")

    lines = [
        "// Code generated by scripts/tokenizer/gen_unicode.py; DO NOT EDIT.",
        "",
        "package tokenizer",
        "",
        'import "unicode"',
        "",
        "// The tables follow the Unicode versions of Hugging Face tokenizers: %d.%d for" % REGEX_VERSION,
        "// the Oniguruma regular expressions and the Rust regex crate (\\p{L}, \\p{N},",
        "// \\w), %d.%d for Rust's char::is_numeric (the Digits pre-tokenizer), %d.%d for" % (NUMERIC_VERSION + NORM_VERSION),
        "// the normalizers (unicode-normalization-alignments).",
        "",
    ]
    lines += range_table("regexLetter", "// regexLetter is \\p{L}, general category L, of Unicode %d.%d." % REGEX_VERSION, letter)
    lines += range_table("regexNumber", "// regexNumber is \\p{N}, general category N, of Unicode %d.%d." % REGEX_VERSION, number)
    lines += range_table("rustNumeric", "// rustNumeric is Rust's char::is_numeric, general category N, of Unicode %d.%d." % NUMERIC_VERSION, numeric)
    lines += range_table("regexWord", "// regexWord is the Rust regex crate's \\w (Alphabetic, M, Nd, Pc, Join_Control) of\n// Unicode %d.%d." % REGEX_VERSION, word)
    lines += [
        "// normChars is every character, but Hangul syllables, that normalization",
        "// does not simply copy, as of Unicode %d.%d, by code point: its canonical" % NORM_VERSION,
        "// combining class, whether it may change under NFC and NFKC (quick check No",
        "// or Maybe) and whether it is the second of a primary composite, its full",
        "// canonical decomposition (empty when none) and its full compatibility",
        "// decomposition where that differs from the canonical one.",
        "var normChars = [...]normChar{",
    ]
    for c in sorted(chars):
        ccc, flags, canon, compat = chars[c]
        lines.append("\t{0x%04x, %d, %s, %s, %s}," % (c, ccc, " | ".join(sorted(flags)) or "0", go_string(canon), go_string(compat)))
    lines += ["}", ""]
    lines += [
        "// composePairs is every primary composite of Unicode %d.%d (Hangul aside):" % NORM_VERSION,
        "// the two characters of its canonical decomposition and itself.",
        "var composePairs = [...][3]rune{",
    ]
    lines += ["\t{0x%04x, 0x%04x, 0x%04x}," % p for p in sorted(pairs)]
    lines += ["}", ""]
    with open(OUT, "w") as f:
        f.write("\n".join(lines))
    print("wrote %s: %d letters, %d numbers, %d numeric, %d word, %d normalization entries, %d pairs"
          % (OUT, len(letter), len(number), len(numeric), len(word), len(chars), len(pairs)), file=sys.stderr)


if __name__ == "__main__":
    main()
