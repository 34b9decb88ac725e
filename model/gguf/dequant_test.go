package gguf

import (
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model/safetensors"
)

// Each dequantizer must give what the gguf package's numpy dequantizers
// (gguf.quants, llama.cpp's Python port) give on the same blocks, bit for
// bit: testdata/dequant.safetensors, made by
// scripts/fixtures/make_gguf_fixtures.py from fixed random blocks.
func TestDequantizeMatchesGGUFPy(t *testing.T) {
	fx, err := safetensors.Open(filepath.Join("testdata", "dequant.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer fx.Close()
	for _, typ := range []Type{F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K} {
		t.Run(typ.String(), func(t *testing.T) {
			raw, err := fx.Raw(typ.String() + ".raw")
			if err != nil {
				t.Fatal(err)
			}
			want, err := fx.Float32(typ.String() + ".values")
			if err != nil {
				t.Fatal(err)
			}
			got := make([]float32, len(want))
			if err := Dequantize(typ, raw, got); err != nil {
				t.Fatal(err)
			}
			bad := 0
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					if bad < 5 {
						t.Errorf("value %d (block %d): %g, gguf.quants %g", i, i/blockElems(typ), got[i], want[i])
					}
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d values differ", bad, len(want))
			}
		})
	}
}

func blockElems(t Type) int {
	e, _, _ := t.BlockSize()
	return e
}

func TestDequantizeRejects(t *testing.T) {
	dst := make([]float32, 32)
	if err := Dequantize(Q4_0, make([]byte, 17), dst); !errors.Is(err, ErrInvalid) {
		t.Errorf("short data: %v", err)
	}
	if err := Dequantize(Q4_K, make([]byte, 144), dst); !errors.Is(err, ErrInvalid) {
		t.Errorf("32 values of a 256-value block type: %v", err)
	}
	err := Dequantize(Q2_K, make([]byte, 84), make([]float32, 256))
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "Q2_K") {
		t.Errorf("Q2_K: %v, want an error naming it", err)
	}
	for typ := range dequantizers {
		if !strings.Contains(SupportedTypes, typ.String()) {
			t.Errorf("SupportedTypes does not list %s", typ)
		}
	}
}

// An independent float64 check of the two packed layouts the numpy
// reference shares with us by construction (the 6-bit Q4_K scales and the
// Q6_K nibble/2-bit split), on a hand-built block.
func TestDequantizeHandBuiltK(t *testing.T) {
	// Q4_K: d = 1, dmin = 0.5; sub-block j has scale j+1 and min 2j+1.
	b := make([]byte, 144)
	b[0], b[1] = 0x00, 0x3c // F16 1.0
	b[2], b[3] = 0x00, 0x38 // F16 0.5
	for j := range 8 {
		sc, mn := byte(j+1), byte(2*j+1)
		if j < 4 {
			b[4+j] |= sc
			b[4+j+4] |= mn
		} else {
			b[4+j+4] = sc&0x0f | (mn&0x0f)<<4
			b[4+j-4] |= (sc >> 4) << 6
			b[4+j] |= (mn >> 4) << 6
		}
	}
	for l := range 128 {
		b[16+l] = byte(l%16) | byte((l+3)%16)<<4
	}
	got := make([]float32, 256)
	if err := Dequantize(Q4_K, b, got); err != nil {
		t.Fatal(err)
	}
	for i := range 256 {
		chunk, half, l := i/64, (i%64)/32, i%32
		j := 2*chunk + half
		q := b[16+32*chunk+l]
		if half == 0 {
			q &= 0x0f
		} else {
			q >>= 4
		}
		want := float64(j+1)*float64(q) - 0.5*float64(2*j+1)
		if float64(got[i]) != want {
			t.Fatalf("Q4_K value %d: %g, want %g", i, got[i], want)
		}
	}
	// Q6_K: d = 0.25, scales[s] = s−8; q = (i·7) mod 64.
	b = make([]byte, 210)
	b[208], b[209] = 0x00, 0x34 // F16 0.25
	for s := range 16 {
		b[192+s] = byte(int8(s - 8))
	}
	qOf := func(i int) int { return (i * 7) % 64 }
	for i := range 256 {
		n, r := i/128, i%128
		l, quarter := r%32, r/32
		q := qOf(i)
		ql := b[64*n : 64*n+64]
		qh := b[128+32*n : 128+32*n+32]
		switch quarter {
		case 0:
			ql[l] |= byte(q & 15)
		case 1:
			ql[l+32] |= byte(q & 15)
		case 2:
			ql[l] |= byte(q&15) << 4
		case 3:
			ql[l+32] |= byte(q&15) << 4
		}
		qh[l] |= byte(q>>4) << (2 * quarter)
	}
	if err := Dequantize(Q6_K, b, got); err != nil {
		t.Fatal(err)
	}
	for i := range 256 {
		want := 0.25 * float64(i/16-8) * float64(qOf(i)-32)
		if float64(got[i]) != want {
			t.Fatalf("Q6_K value %d: %g, want %g", i, got[i], want)
		}
	}
}
