package tokenizer

import "unicode/utf8"

// byteToRune is GPT-2's bytes_to_unicode: every byte maps to a printable rune.
// The printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves;
// the other 68 bytes map, in increasing order, to U+0100, U+0101, …, so that
// space (0x20) becomes 'Ġ' (U+0120) and newline (0x0A) becomes 'Ċ' (U+010A).
var byteToRune [256]rune

// runeToByte inverts byteToRune; runes outside its image are absent.
var runeToByte map[rune]byte

func init() {
	n := 0
	runeToByte = make(map[rune]byte, 256)
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			byteToRune[b] = rune(b)
		} else {
			byteToRune[b] = rune(256 + n)
			n++
		}
		runeToByte[byteToRune[b]] = byte(b)
	}
}

// byteLevelEncode maps raw bytes to their byte-level string ("Ġthe" for " the").
func byteLevelEncode(raw string) string {
	buf := make([]byte, 0, 2*len(raw))
	for i := 0; i < len(raw); i++ {
		buf = utf8.AppendRune(buf, byteToRune[raw[i]])
	}
	return string(buf)
}

// byteLevelDecode maps a byte-level string back to raw bytes. ok is false when
// some rune of tok is not in the byte-level alphabet; the ByteLevel decoder of
// Hugging Face tokenizers then emits the token's own UTF-8 bytes instead, and
// so do we.
func byteLevelDecode(tok string) (raw []byte, ok bool) {
	raw = make([]byte, 0, len(tok))
	for _, r := range tok {
		b, found := runeToByte[r]
		if !found {
			return []byte(tok), false
		}
		raw = append(raw, b)
	}
	return raw, true
}

// appendLossy appends the UTF-8 text of b to dst, replacing each maximal
// ill-formed subsequence with one U+FFFD, as Rust's String::from_utf8_lossy
// and Python's bytes.decode("utf-8", "replace") do (Unicode §3.9, "U+FFFD
// substitution of maximal subparts"). Go's own conversion would instead emit
// one U+FFFD per byte of a truncated sequence.
func appendLossy(dst []byte, b []byte) []byte {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			dst = append(dst, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || size > 1 {
			dst = append(dst, b[i:i+size]...)
			i += size
			continue
		}
		dst = append(dst, "\uFFFD"...)
		i += maximalSubpart(b[i:])
	}
	return dst
}

// maximalSubpart is the length (≥ 1) of the longest prefix of b that starts
// an ill-formed sequence yet could begin a well-formed one; b[0] is known not
// to start a valid rune.
func maximalSubpart(b []byte) int {
	var need int
	lo, hi := byte(0x80), byte(0xBF) // allowed range of the second byte
	switch c := b[0]; {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		need = 2
	case c == 0xED:
		need, hi = 2, 0x9F
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for k := 0; k < need && n < len(b); k++ {
		c := b[n]
		if k == 0 {
			if c < lo || c > hi {
				break
			}
		} else if c < 0x80 || c > 0xBF {
			break
		}
		n++
	}
	return n
}
