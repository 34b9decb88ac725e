package gguf

import (
	"encoding/binary"
	"fmt"

	"github.com/kdnative/kdnative/runtime/half"
)

// Block layouts (ggml-common.h; all little-endian, d and m are F16):
//
//	Q4_0 (32 values, 18 bytes)  d, qs[16]: v[j] = (qs[j]&15 − 8)·d, v[j+16] = (qs[j]>>4 − 8)·d
//	Q4_1 (32, 20)               d, m, qs[16]: v = q·d + m
//	Q5_0 (32, 22)               d, qh[4], qs[16]: the 5th bit of v[j] is bit j of qh; v = (q − 16)·d
//	Q5_1 (32, 24)               d, m, qh[4], qs[16]: v = q·d + m
//	Q8_0 (32, 34)               d, int8 qs[32]: v = q·d
//	Q4_K (256, 144)             d, dmin, scales[12], qs[128]: eight sub-blocks of 32 with
//	                            6-bit scale sc and min mn: v = d·sc·q − dmin·mn
//	Q5_K (256, 176)             d, dmin, scales[12], qh[32], qs[128]: as Q4_K with a 5th bit
//	Q6_K (256, 210)             ql[128], qh[64], int8 scales[16], d: sixteen sub-blocks of
//	                            16: v = d·scale·(q − 32), q 6 bits (4 from ql, 2 from qh)
//
// Each function below is written from llama.cpp's dequantize_row_* and does
// the arithmetic in the same float32 order, so the results are bit-identical.

type dequantizer func(dst []float32, src []byte)

var dequantizers = map[Type]dequantizer{
	F32:  func(dst []float32, src []byte) { half.DecodeF32(dst, src) },
	F16:  func(dst []float32, src []byte) { half.DecodeF16(dst, src) },
	BF16: func(dst []float32, src []byte) { half.DecodeBF16(dst, src) },
	Q8_0: blocks(32, 34, dequantQ8_0),
	Q4_0: blocks(32, 18, dequantQ4_0),
	Q4_1: blocks(32, 20, dequantQ4_1),
	Q5_0: blocks(32, 22, dequantQ5_0),
	Q5_1: blocks(32, 24, dequantQ5_1),
	Q4_K: blocks(256, 144, dequantQ4_K),
	Q5_K: blocks(256, 176, dequantQ5_K),
	Q6_K: blocks(256, 210, dequantQ6_K),
}

// blocks applies a one-block dequantizer to every block of a row set.
func blocks(elems, size int, one func(y []float32, x []byte)) dequantizer {
	return func(dst []float32, src []byte) {
		for i := 0; i*elems < len(dst); i++ {
			one(dst[i*elems:(i+1)*elems], src[i*size:(i+1)*size])
		}
	}
}

// Dequantize expands src, the bytes of len(dst) values of type t, into dst.
// len(dst) must be a whole number of t's blocks and src exactly their size.
func Dequantize(t Type, src []byte, dst []float32) error {
	fn, ok := dequantizers[t]
	if !ok {
		return fmt.Errorf("%w: ggml type %s cannot be dequantized (kdnative reads %s)", ErrUnsupported, t, SupportedTypes)
	}
	be, bb, _ := t.BlockSize()
	if len(dst)%be != 0 || len(src) != len(dst)/be*bb {
		return fmt.Errorf("%w: %d values of %s need %d bytes in blocks of %d, got %d bytes",
			ErrInvalid, len(dst), t, len(dst)/be*bb, be, len(src))
	}
	fn(dst, src)
	return nil
}

func f16(b []byte) float32 { return half.F16ToF32(binary.LittleEndian.Uint16(b)) }

func dequantQ8_0(y []float32, x []byte) {
	d := f16(x)
	for j := range 32 {
		y[j] = float32(int8(x[2+j])) * d
	}
}

func dequantQ4_0(y []float32, x []byte) {
	d := f16(x)
	qs := x[2:18]
	for j := range 16 {
		y[j] = float32(int(qs[j]&0x0f)-8) * d
		y[j+16] = float32(int(qs[j]>>4)-8) * d
	}
}

func dequantQ4_1(y []float32, x []byte) {
	d, m := f16(x), f16(x[2:])
	qs := x[4:20]
	for j := range 16 {
		y[j] = float32(float32(qs[j]&0x0f)*d) + m
		y[j+16] = float32(float32(qs[j]>>4)*d) + m
	}
}

func dequantQ5_0(y []float32, x []byte) {
	d := f16(x)
	qh := binary.LittleEndian.Uint32(x[2:])
	qs := x[6:22]
	for j := range 16 {
		h0 := byte((qh>>j)<<4) & 0x10
		h1 := byte(qh>>(j+12)) & 0x10
		y[j] = float32(int32(qs[j]&0x0f|h0)-16) * d
		y[j+16] = float32(int32(qs[j]>>4|h1)-16) * d
	}
}

func dequantQ5_1(y []float32, x []byte) {
	d, m := f16(x), f16(x[2:])
	qh := binary.LittleEndian.Uint32(x[4:])
	qs := x[8:24]
	for j := range 16 {
		h0 := byte((qh>>j)<<4) & 0x10
		h1 := byte(qh>>(j+12)) & 0x10
		y[j] = float32(float32(qs[j]&0x0f|h0)*d) + m
		y[j+16] = float32(float32(qs[j]>>4|h1)*d) + m
	}
}

// scaleMinK4 unpacks the j-th 6-bit scale and min of a Q4_K/Q5_K block from
// its 12 packed bytes: the first four pairs sit in the low 6 bits of bytes
// 0–3 and 4–7; the last four take their low 4 bits from bytes 8–11 and their
// top 2 bits from the spare top bits of bytes 0–7.
func scaleMinK4(j int, q []byte) (sc, mn byte) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0x0f | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

func dequantQ4_K(y []float32, x []byte) {
	d, dmin := f16(x), f16(x[2:])
	scales := x[4:16]
	q := x[16:144]
	is := 0
	for j := 0; j < 256; j += 64 {
		sc, mn := scaleMinK4(is, scales)
		d1, m1 := d*float32(sc), dmin*float32(mn)
		sc, mn = scaleMinK4(is+1, scales)
		d2, m2 := d*float32(sc), dmin*float32(mn)
		for l := range 32 {
			y[j+l] = float32(d1*float32(q[l]&0x0f)) - m1
			y[j+32+l] = float32(d2*float32(q[l]>>4)) - m2
		}
		q = q[32:]
		is += 2
	}
}

func dequantQ5_K(y []float32, x []byte) {
	d, dmin := f16(x), f16(x[2:])
	scales := x[4:16]
	qh := x[16:48]
	ql := x[48:176]
	is := 0
	u1, u2 := byte(1), byte(2)
	for j := 0; j < 256; j += 64 {
		sc, mn := scaleMinK4(is, scales)
		d1, m1 := d*float32(sc), dmin*float32(mn)
		sc, mn = scaleMinK4(is+1, scales)
		d2, m2 := d*float32(sc), dmin*float32(mn)
		for l := range 32 {
			h1, h2 := byte(0), byte(0)
			if qh[l]&u1 != 0 {
				h1 = 16
			}
			if qh[l]&u2 != 0 {
				h2 = 16
			}
			y[j+l] = float32(d1*float32(ql[l]&0x0f+h1)) - m1
			y[j+32+l] = float32(d2*float32(ql[l]>>4+h2)) - m2
		}
		ql = ql[32:]
		is += 2
		u1 <<= 2
		u2 <<= 2
	}
}

func dequantQ6_K(y []float32, x []byte) {
	ql := x[0:128]
	qh := x[128:192]
	sc := x[192:208]
	d := f16(x[208:])
	for n := 0; n < 256; n += 128 {
		for l := range 32 {
			is := l / 16
			q1 := int8(ql[l]&0x0f|(qh[l]>>0&3)<<4) - 32
			q2 := int8(ql[l+32]&0x0f|(qh[l]>>2&3)<<4) - 32
			q3 := int8(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
			q4 := int8(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
			y[n+l] = d * float32(int8(sc[is])) * float32(q1)
			y[n+l+32] = d * float32(int8(sc[is+2])) * float32(q2)
			y[n+l+64] = d * float32(int8(sc[is+4])) * float32(q3)
			y[n+l+96] = d * float32(int8(sc[is+6])) * float32(q4)
		}
		ql = ql[64:]
		qh = qh[32:]
		sc = sc[8:]
	}
}
