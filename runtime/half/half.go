package half

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// BF16ToF32 widens a bfloat16 bit pattern to float32. It is exact: a bfloat16
// is the top 16 bits of the float32 with the same value, NaN payloads included.
func BF16ToF32(b uint16) float32 {
	return math.Float32frombits(uint32(b) << 16)
}

// F32ToBF16 narrows f to the nearest bfloat16, ties to even. ±Inf stay ±Inf,
// finite values too large for bfloat16 round to ±Inf, and a NaN stays a NaN
// with its sign and the top bits of its payload (if the payload's top bits are
// all zero, the quiet bit is set so that the result is not an infinity). The
// NaN rule makes BF16 → F32 → BF16 the identity on all 65,536 patterns.
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 { // NaN
		b := uint16(u >> 16)
		if b&0x7f == 0 {
			b |= 0x40
		}
		return b
	}
	// Add half an ulp of bfloat16, minus one unless the kept part is odd
	// (ties to even). A carry out of the mantissa bumps the exponent, which
	// is correct, up to and including the overflow to Inf.
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// F16ToF32 widens an IEEE binary16 bit pattern to float32. It is exact for
// every finite value and infinity; a NaN stays a NaN with its sign and payload
// (a signalling NaN comes back quiet).
func F16ToF32(h uint16) float32 {
	return float16.Frombits(h).Float32()
}

// F32ToF16 narrows f to the nearest IEEE binary16, ties to even. Values whose
// magnitude rounds above 65504 (the largest finite half) become ±Inf, values
// below 2⁻¹⁴ become subnormals (down to 2⁻²⁴) or a signed zero, ±Inf stay ±Inf,
// and a NaN stays a quiet NaN with its sign and the top bits of its payload.
func F32ToF16(f float32) uint16 {
	return float16.Fromfloat32(f).Bits()
}

// DecodeBF16 converts len(dst) little-endian bfloat16 values from src to
// float32. It panics if src is shorter than 2·len(dst) bytes.
func DecodeBF16(dst []float32, src []byte) {
	checkLen("DecodeBF16", len(src), 2*len(dst))
	for i := range dst {
		dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

// EncodeBF16 converts src to little-endian bfloat16 in dst, rounding to
// nearest even. It panics if dst is shorter than 2·len(src) bytes.
func EncodeBF16(dst []byte, src []float32) {
	checkLen("EncodeBF16", len(dst), 2*len(src))
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
	}
}

// DecodeF16 converts len(dst) little-endian IEEE binary16 values from src to
// float32. It panics if src is shorter than 2·len(dst) bytes.
func DecodeF16(dst []float32, src []byte) {
	checkLen("DecodeF16", len(src), 2*len(dst))
	for i := range dst {
		dst[i] = F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

// EncodeF16 converts src to little-endian IEEE binary16 in dst, rounding to
// nearest even. It panics if dst is shorter than 2·len(src) bytes.
func EncodeF16(dst []byte, src []float32) {
	checkLen("EncodeF16", len(dst), 2*len(src))
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
	}
}

// DecodeF32 copies len(dst) little-endian float32 values from src, bit for
// bit. It panics if src is shorter than 4·len(dst) bytes.
func DecodeF32(dst []float32, src []byte) {
	checkLen("DecodeF32", len(src), 4*len(dst))
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// EncodeF32 writes src to dst as little-endian float32, bit for bit. It
// panics if dst is shorter than 4·len(src) bytes.
func EncodeF32(dst []byte, src []float32) {
	checkLen("EncodeF32", len(dst), 4*len(src))
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func checkLen(fn string, have, need int) {
	if have < need {
		panic(fmt.Sprintf("half.%s: byte slice has %d bytes, need %d", fn, have, need))
	}
}
