package safetensors

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/kdnative/kdnative/runtime/half"
)

// TestPythonFile reads testdata/python.safetensors, written by the reference
// implementation (testdata/make_testdata.py), and compares every tensor with
// the values numpy worked out (testdata/python.json).
func TestPythonFile(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "python.json"))
	if err != nil {
		t.Fatal(err)
	}
	var expected struct {
		Metadata map[string]string `json:"metadata"`
		Tensors  map[string]struct {
			DType  string    `json:"dtype"`
			Shape  []int     `json:"shape"`
			Values []float64 `json:"values"`
			Source []float64 `json:"source"`
			Bits   []uint16  `json:"bits"`
			Ints   []int64   `json:"ints"`
		} `json:"tensors"`
	}
	if err := json.Unmarshal(raw, &expected); err != nil {
		t.Fatal(err)
	}
	f, err := Open(filepath.Join("testdata", "python.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := f.Metadata(); !reflect.DeepEqual(got, expected.Metadata) {
		t.Errorf("Metadata() = %v, want %v", got, expected.Metadata)
	}
	var names []string
	for name := range expected.Tensors {
		names = append(names, name)
	}
	slices.Sort(names)
	if got := f.Names(); !slices.Equal(got, names) {
		t.Fatalf("Names() = %v, want %v", got, names)
	}
	for _, name := range names {
		e := expected.Tensors[name]
		info, _ := f.Info(name)
		if info.DType != e.DType || !slices.Equal(info.Shape, e.Shape) || len(info.Shape) != len(e.Shape) {
			t.Errorf("%s: Info %+v, want %s %v", name, info, e.DType, e.Shape)
		}
		if e.DType == "I64" {
			got, err := f.Int32(name)
			fits := true
			for _, v := range e.Ints {
				fits = fits && v >= math.MinInt32 && v <= math.MaxInt32
			}
			if !fits {
				if !errors.Is(err, ErrDType) {
					t.Errorf("%s: Int32 of values beyond int32 gave %v, %v", name, got, err)
				}
				continue
			}
			if err != nil || len(got) != len(e.Ints) {
				t.Fatalf("%s: Int32 = %v, %v", name, got, err)
			}
			for i, v := range e.Ints {
				if int64(got[i]) != v {
					t.Errorf("%s[%d] = %d, want %d", name, i, got[i], v)
				}
			}
			continue
		}
		got, err := f.Float32(name)
		if err != nil || len(got) != len(e.Values) {
			t.Fatalf("%s: Float32 = %v, %v", name, got, err)
		}
		for i, v := range e.Values {
			if float64(got[i]) != v || math.Signbit(float64(got[i])) != math.Signbit(v) {
				t.Errorf("%s[%d] = %v, want %v", name, i, got[i], v)
			}
		}
		// The Go encoders round the float32 source values as numpy did.
		for i, src := range e.Source {
			var b uint16
			switch e.DType {
			case "BF16":
				b = half.F32ToBF16(float32(src))
			case "F16":
				b = half.F32ToF16(float32(src))
			}
			if b != e.Bits[i] {
				t.Errorf("%s: %v rounds to %#04x in Go, %#04x in numpy", name, src, b, e.Bits[i])
			}
		}
	}
}
