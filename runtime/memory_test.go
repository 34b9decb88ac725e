package runtime

import (
	"math"
	"strings"
	"testing"
)

func TestTensorBytes(t *testing.T) {
	if n, err := TensorBytes(F32, 3, 5); err != nil || n != 60 {
		t.Errorf("TensorBytes(F32, 3, 5) = %d, %v", n, err)
	}
	if n, err := TensorBytes(BF16); err != nil || n != 2 {
		t.Errorf("TensorBytes of a scalar = %d, %v", n, err)
	}
	for _, shape := range [][]int{{1 << 40, 1 << 40}, {math.MaxInt64 / 2}, {1 << 62, 2}} {
		if _, err := TensorBytes(F32, shape...); err == nil || !strings.Contains(err.Error(), "overflows") {
			t.Errorf("TensorBytes(F32, %v): %v, want an overflow", shape, err)
		}
	}
	if _, err := TensorBytes(F32, 2, -1); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("negative dimension: %v", err)
	}
}

func TestMulAddBytes(t *testing.T) {
	if MulBytes(1<<20, 1<<20, 4) != 1<<42 || MulBytes() != 1 || MulBytes(5, 0, math.MaxInt64) != 0 {
		t.Error("MulBytes of small factors is wrong")
	}
	if MulBytes(1<<40, 1<<40) != math.MaxInt64 || MulBytes(math.MaxInt64, 2) != math.MaxInt64 {
		t.Error("MulBytes does not saturate")
	}
	if AddBytes(math.MaxInt64-1, 2) != math.MaxInt64 || AddBytes(2, 3) != 5 {
		t.Error("AddBytes does not saturate")
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 999: "999 B", 1500: "1.5 kB", 128e9: "128.0 GB", 2.5e15: "2.5 PB", 9e18: "9.0 EB", math.MaxInt64: "more than 9.2 EB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestOutOfMemoryErrorMessage(t *testing.T) {
	e := &OutOfMemoryError{What: "the key/value cache", Need: 128e9, Free: 12e9, Total: 16e9, Backend: "cpu", Hint: "lower --max-tokens"}
	want := "the key/value cache needs 128.0 GB of memory, but the cpu backend has 12.0 GB free of 16.0 GB: lower --max-tokens"
	if e.Error() != want {
		t.Errorf("got  %q\nwant %q", e.Error(), want)
	}
}
