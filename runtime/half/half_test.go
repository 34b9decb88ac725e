package half

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// format describes a binary floating-point format for the reference model:
// every value is computed in float64 from the bit fields alone, independently
// of the code under test.
type format struct {
	name     string
	expBits  int
	mantBits int
	toF32    func(uint16) float32
	fromF32  func(float32) uint16
	// table holds the non-negative finite values in bit-pattern order, with
	// one extra entry at the end: the infinity pattern, valued at the next
	// power of two above the largest finite value. IEEE rounding of an
	// overflowing value is defined as if the exponent range were unbounded,
	// so that "value" decides between the largest finite number and Inf.
	table []float64
}

func (f *format) bias() int       { return 1<<(f.expBits-1) - 1 }
func (f *format) infBits() uint16 { return uint16((1<<f.expBits - 1) << f.mantBits) }
func (f *format) signBit() uint16 { return 0x8000 }

// value decodes a non-negative finite pattern (or the Inf pattern, as above).
func (f *format) value(b uint16) float64 {
	e := int(b >> f.mantBits)
	m := float64(b & (1<<f.mantBits - 1))
	if e == 0 {
		return math.Ldexp(m, 1-f.bias()-f.mantBits)
	}
	return math.Ldexp(1+m/float64(int(1)<<f.mantBits), e-f.bias())
}

func newFormat(name string, expBits, mantBits int, to func(uint16) float32, from func(float32) uint16) *format {
	f := &format{name: name, expBits: expBits, mantBits: mantBits, toF32: to, fromF32: from}
	for b := uint16(0); b <= f.infBits(); b++ {
		f.table = append(f.table, f.value(b))
	}
	return f
}

var formats = []*format{
	newFormat("bf16", 8, 7, BF16ToF32, F32ToBF16),
	newFormat("f16", 5, 10, F16ToF32, F32ToF16),
}

// reference rounds the finite float32 x to the nearest table entry, ties to
// the even bit pattern, and returns the pattern.
func (f *format) reference(x float32) uint16 {
	var sign uint16
	if math.Signbit(float64(x)) {
		sign = f.signBit()
	}
	a := math.Abs(float64(x))
	t := f.table
	i := sort.SearchFloat64s(t, a) // t[i-1] < a <= t[i]
	var b uint16
	switch {
	case i == len(t): // beyond the Inf entry
		b = f.infBits()
	case t[i] == a:
		b = uint16(i)
	default:
		lo, hi := t[i-1], t[i]
		switch dl, dh := a-lo, hi-a; {
		case dl < dh:
			b = uint16(i - 1)
		case dh < dl:
			b = uint16(i)
		case (i-1)%2 == 0:
			b = uint16(i - 1)
		default:
			b = uint16(i)
		}
	}
	return sign | b
}

func isNaN16(f *format, b uint16) bool {
	return b&0x7fff > f.infBits()
}

func TestWidenExact(t *testing.T) {
	for _, f := range formats {
		for i := 0; i < 1<<16; i++ {
			b := uint16(i)
			got := f.toF32(b)
			if isNaN16(f, b) {
				if !math.IsNaN(float64(got)) || math.Signbit(float64(got)) != (b&0x8000 != 0) {
					t.Fatalf("%s: %#04x widened to %v, want NaN with the same sign", f.name, b, got)
				}
				continue
			}
			want := f.value(b & 0x7fff)
			if b&0x7fff == f.infBits() {
				want = math.Inf(1)
			}
			if b&0x8000 != 0 {
				want = -want
			}
			if float64(got) != want || math.Signbit(float64(got)) != math.Signbit(want) {
				t.Fatalf("%s: %#04x widened to %v, want %v", f.name, b, got, want)
			}
		}
	}
}

func TestRoundTripAllPatterns(t *testing.T) {
	for _, f := range formats {
		for i := 0; i < 1<<16; i++ {
			b := uint16(i)
			got := f.fromF32(f.toF32(b))
			if isNaN16(f, b) {
				if !isNaN16(f, got) || got&0x8000 != b&0x8000 {
					t.Fatalf("%s: NaN %#04x came back as %#04x", f.name, b, got)
				}
				if f.name == "bf16" && got != b {
					t.Fatalf("bf16: NaN %#04x came back as %#04x, want it bit for bit", b, got)
				}
				continue
			}
			if got != b {
				t.Fatalf("%s: %#04x -> %v -> %#04x", f.name, b, f.toF32(b), got)
			}
		}
	}
}

func checkNarrow(t *testing.T, f *format, x float32) {
	t.Helper()
	got := f.fromF32(x)
	if math.IsNaN(float64(x)) {
		if !isNaN16(f, got) || (got&0x8000 != 0) != math.Signbit(float64(x)) {
			t.Fatalf("%s: NaN %#08x narrowed to %#04x", f.name, math.Float32bits(x), got)
		}
		return
	}
	var want uint16
	if math.IsInf(float64(x), 0) {
		want = f.infBits()
		if x < 0 {
			want |= 0x8000
		}
	} else {
		want = f.reference(x)
	}
	if got != want {
		t.Fatalf("%s: %g (%#08x) narrowed to %#04x (%g), want %#04x (%g)",
			f.name, x, math.Float32bits(x), got, f.toF32(got), want, f.toF32(want))
	}
}

// TestNarrowTies checks every exact midpoint between two adjacent values of
// each format (all of them are float32 values), and the float32 values just
// beside each midpoint.
func TestNarrowTies(t *testing.T) {
	for _, f := range formats {
		for i := 1; i < len(f.table); i++ {
			mid := (f.table[i-1] + f.table[i]) / 2
			m := float32(mid)
			if float64(m) != mid {
				t.Fatalf("%s: midpoint %g is not a float32", f.name, mid)
			}
			for _, x := range []float32{m, math.Nextafter32(m, 0), math.Nextafter32(m, float32(math.Inf(1)))} {
				checkNarrow(t, f, x)
				checkNarrow(t, f, -x)
			}
		}
	}
}

func TestNarrowEdgeCases(t *testing.T) {
	inf := float32(math.Inf(1))
	cases := []float32{
		0, float32(math.Copysign(0, -1)), 1, -1, inf, -inf,
		float32(math.NaN()), -float32(math.NaN()),
		math.Float32frombits(0x7f800001), math.Float32frombits(0xff800001), // signalling NaNs
		math.Float32frombits(0x7fc00000), math.Float32frombits(0x7fffffff),
		math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32,
		65504, 65519, 65519.996, 65520, 65536, 1e5, -65520, // f16 max finite and overflow
		0x1p-24, 0x1p-25, 0x1.000002p-25, 0x1.8p-24, 0x1p-14, 0x1.ff8p-15, // f16 subnormals
		0x1p-26, -0x1p-25,
		3.3895314e38, 3.3961776e38, 0x1.fep127, // bf16 max finite and overflow
		0x1p-133, 0x1p-126, 0x1p-149, // bf16 subnormals
		1.00390625, 1.01171875, 1.0009765625, 1.0029296875, // ties at 1 for both
	}
	for _, f := range formats {
		for _, x := range cases {
			checkNarrow(t, f, x)
		}
	}
	// Spot values worked out by hand.
	hand := []struct {
		f    func(float32) uint16
		x    float32
		want uint16
	}{
		{F32ToF16, 65504, 0x7bff},
		{F32ToF16, 65520, 0x7c00},     // tie between 65504 (odd) and 2^16: Inf
		{F32ToF16, 65519.996, 0x7bff}, // just below the tie
		{F32ToF16, 0x1p-24, 0x0001},   // smallest subnormal
		{F32ToF16, 0x1p-25, 0x0000},   // tie between 0 and 2^-24: 0
		{F32ToF16, 0x1.8p-24, 0x0002}, // tie between 1 and 2 ulps: 2
		{F32ToF16, -0x1p-26, 0x8000},
		{F32ToF16, 1.0009765625, 0x3c01},
		{F32ToBF16, 1.00390625, 0x3f80}, // tie: 1 + 2^-8 -> 1 (even)
		{F32ToBF16, 1.01171875, 0x3f82}, // tie: 1 + 3·2^-8 -> 1 + 2^-6 (even)
		{F32ToBF16, math.MaxFloat32, 0x7f80},
		{F32ToBF16, 3.3895314e38, 0x7f7f},
		{F32ToBF16, 0x1p-133, 0x0001},
	}
	for _, h := range hand {
		if got := h.f(h.x); got != h.want {
			t.Errorf("%g -> %#04x, want %#04x", h.x, got, h.want)
		}
	}
}

func TestNarrowRandom(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 50_000
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, f := range formats {
		for i := 0; i < n; i++ {
			var x float32
			if i%2 == 0 {
				x = math.Float32frombits(r.Uint32()) // any pattern, NaNs and huge values included
			} else {
				// Values around the format's range, subnormals included.
				e := r.IntN(50) - 30
				if f.name == "bf16" {
					e = r.IntN(280) - 145
				}
				x = float32(math.Ldexp(1+r.Float64(), e))
				if r.IntN(2) == 0 {
					x = -x
				}
			}
			checkNarrow(t, f, x)
		}
	}
}

func TestSliceHelpers(t *testing.T) {
	src := []float32{0, 1, -2.5, 65504, 1e-7, float32(math.Inf(-1)), 3.14159, -0.0001}
	buf := make([]byte, 4*len(src))
	dst := make([]float32, len(src))

	EncodeF32(buf, src)
	for i, v := range src {
		b := buf[4*i:]
		if got := math.Float32frombits(uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24); got != v {
			t.Fatalf("EncodeF32[%d] = %v, want %v", i, got, v)
		}
	}
	DecodeF32(dst, buf)
	for i := range src {
		if dst[i] != src[i] {
			t.Fatalf("DecodeF32[%d] = %v, want %v", i, dst[i], src[i])
		}
	}

	for _, c := range []struct {
		name   string
		enc    func([]byte, []float32)
		dec    func([]float32, []byte)
		narrow func(float32) uint16
		widen  func(uint16) float32
	}{
		{"BF16", EncodeBF16, DecodeBF16, F32ToBF16, BF16ToF32},
		{"F16", EncodeF16, DecodeF16, F32ToF16, F16ToF32},
	} {
		c.enc(buf, src)
		for i, v := range src {
			if got := uint16(buf[2*i]) | uint16(buf[2*i+1])<<8; got != c.narrow(v) {
				t.Fatalf("Encode%s[%d] = %#04x, want %#04x", c.name, i, got, c.narrow(v))
			}
		}
		c.dec(dst, buf)
		for i, v := range src {
			if want := c.widen(c.narrow(v)); dst[i] != want {
				t.Fatalf("Decode%s[%d] = %v, want %v", c.name, i, dst[i], want)
			}
		}
	}

	defer func() {
		if recover() == nil {
			t.Fatal("DecodeBF16 with a short source did not panic")
		}
	}()
	DecodeBF16(make([]float32, 3), make([]byte, 5))
}
