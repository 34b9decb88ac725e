package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/half"
)

var edgeValues = []float32{
	0, float32(math.Copysign(0, -1)), 1, -1, 0.1, -3.75, 65504, 65520, 1e-8, 0x1p-24, 0x1p-25,
	math.MaxFloat32, math.SmallestNonzeroFloat32, 1.00390625, 1.01171875,
	float32(math.Inf(1)), float32(math.Inf(-1)), 123456.789,
}

func sampleTensors() []Tensor {
	seq := func(n int, scale float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = scale * float32(math.Sin(float64(i)*0.7+0.3))
		}
		return v
	}
	return []Tensor{
		{Name: "b.bf16", DType: runtime.BF16, Shape: []int{len(edgeValues)}, F32: edgeValues},
		{Name: "a.f32", DType: runtime.F32, Shape: []int{2, 3, 3}, F32: append(slices.Clone(edgeValues), 0)[:18]},
		{Name: "c.f16", DType: runtime.F16, Shape: []int{3, len(edgeValues)}, F32: append(append(slices.Clone(edgeValues), seq(len(edgeValues), 3)...), seq(len(edgeValues), 1e-4)...)},
		{Name: "d.ids", DType: runtime.I32, Shape: []int{5}, I32: []int32{0, -1, math.MaxInt32, math.MinInt32, 42}},
		{Name: "e.scalar", DType: runtime.F32, Shape: []int{}, F32: []float32{2.5}},
		{Name: "f.empty", DType: runtime.BF16, Shape: []int{4, 0}, F32: []float32{}},
		{Name: "g.odd", DType: runtime.BF16, Shape: []int{3}, F32: seq(3, 7)}, // odd byte count before aligned data
		{Name: "h.f32", DType: runtime.F32, Shape: []int{1, 7}, F32: seq(7, 100)},
	}
}

// want gives the float32 values a reader must return for t, from the
// runtime/half conversions applied one value at a time.
func want(t Tensor) []float32 {
	out := make([]float32, len(t.F32))
	for i, v := range t.F32 {
		switch t.DType {
		case runtime.F32:
			out[i] = v
		case runtime.BF16:
			out[i] = half.BF16ToF32(half.F32ToBF16(v))
		case runtime.F16:
			out[i] = half.F16ToF32(half.F32ToF16(v))
		}
	}
	return out
}

func sameFloats(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	ts := sampleTensors()
	meta := map[string]string{"format": "pt", "note": `quotes " and <tags> & ünïcode`}
	if err := Write(path, ts, meta); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Path() != path {
		t.Errorf("Path() = %q", f.Path())
	}
	if got := f.Metadata(); !reflect.DeepEqual(got, meta) {
		t.Errorf("Metadata() = %v, want %v", got, meta)
	}
	var names []string
	for _, tt := range ts {
		names = append(names, tt.Name)
	}
	slices.Sort(names)
	if got := f.Names(); !reflect.DeepEqual(got, names) {
		t.Errorf("Names() = %v, want %v", got, names)
	}
	for _, tt := range ts {
		info, ok := f.Info(tt.Name)
		if !ok {
			t.Fatalf("Info(%q) missing", tt.Name)
		}
		if info.DType != tt.DType.String() || !slices.Equal(info.Shape, tt.Shape) || len(info.Shape) != len(tt.Shape) {
			t.Errorf("Info(%q) = %+v", tt.Name, info)
		}
		if tt.DType == runtime.I32 {
			got, err := f.Int32(tt.Name)
			if err != nil || !slices.Equal(got, tt.I32) {
				t.Errorf("Int32(%q) = %v, %v; want %v", tt.Name, got, err, tt.I32)
			}
			if _, err := f.Float32(tt.Name); !errors.Is(err, ErrDType) || !strings.Contains(err.Error(), tt.Name) {
				t.Errorf("Float32 of an I32 tensor: %v", err)
			}
			continue
		}
		got, err := f.Float32(tt.Name)
		if err != nil {
			t.Fatal(err)
		}
		if w := want(tt); !sameFloats(got, w) {
			t.Errorf("Float32(%q) = %v, want %v", tt.Name, got, w)
		}
		raw, err := f.Raw(tt.Name)
		if err != nil || int64(len(raw)) != info.End-info.Begin {
			t.Errorf("Raw(%q): %d bytes, %v", tt.Name, len(raw), err)
		}
		if _, err := f.Int32(tt.Name); !errors.Is(err, ErrDType) {
			t.Errorf("Int32 of a float tensor: %v", err)
		}
	}
	if _, err := f.Float32("nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("Float32 of a missing tensor: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := f.Float32("a.f32"); !errors.Is(err, ErrClosed) {
		t.Errorf("Float32 after Close: %v", err)
	}
	// The write left no temporary file behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("folder holds %d entries after Write, want 1", len(entries))
	}
}

// TestLayout parses a written file by hand.
func TestLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	ts := sampleTensors()
	if err := Write(path, ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	if n%8 != 0 {
		t.Errorf("header length %d is not a multiple of 8", n)
	}
	header := b[8 : 8+n]
	trimmed := bytes.TrimRight(header, " ")
	if len(header)-len(trimmed) >= 8 || trimmed[len(trimmed)-1] != '}' {
		t.Errorf("header padding is wrong: %q", header[len(trimmed)-1:])
	}
	if !bytes.HasPrefix(header, []byte(`{"__metadata__":{"format":"pt"},`)) {
		t.Errorf("header does not start with the metadata: %.60s", header)
	}
	var entries map[string]struct {
		DType       string  `json:"dtype"`
		Shape       []int   `json:"shape"`
		DataOffsets []int64 `json:"data_offsets"`
	}
	var whole map[string]json.RawMessage
	if err := json.Unmarshal(header, &whole); err != nil {
		t.Fatal(err)
	}
	delete(whole, "__metadata__")
	rest, _ := json.Marshal(whole)
	if err := json.Unmarshal(rest, &entries); err != nil {
		t.Fatal(err)
	}
	// Data order: F32, I32, BF16, F16, then by name; contiguous from 0.
	order := []string{"a.f32", "e.scalar", "h.f32", "d.ids", "b.bf16", "f.empty", "g.odd", "c.f16"}
	var off int64
	for _, name := range order {
		e := entries[name]
		if len(e.DataOffsets) != 2 || e.DataOffsets[0] != off {
			t.Fatalf("%s: data_offsets %v, want to start at %d", name, e.DataOffsets, off)
		}
		off = e.DataOffsets[1]
	}
	if int64(len(b)) != 8+int64(n)+off {
		t.Errorf("file is %d bytes, want 8+%d+%d", len(b), n, off)
	}
	// The header lists the entries in data order too, as the reference does.
	pos := -1
	for _, name := range order {
		p := bytes.Index(header, []byte(`"`+name+`"`))
		if p < pos {
			t.Errorf("header entry %q is out of order", name)
		}
		pos = p
	}
	// F32 data is the little-endian bits; I32 likewise.
	data := b[8+n:]
	a := entries["a.f32"]
	for i := 0; i < 18; i++ {
		got := binary.LittleEndian.Uint32(data[a.DataOffsets[0]+4*int64(i):])
		if w := math.Float32bits(ts[1].F32[i]); got != w {
			t.Fatalf("a.f32[%d] stored as %#x, want %#x", i, got, w)
		}
	}
	d := entries["d.ids"]
	for i, v := range ts[3].I32 {
		if got := int32(binary.LittleEndian.Uint32(data[d.DataOffsets[0]+4*int64(i):])); got != v {
			t.Fatalf("d.ids[%d] stored as %d, want %d", i, got, v)
		}
	}
	c := entries["c.f16"]
	for i, v := range ts[2].F32 {
		if got := binary.LittleEndian.Uint16(data[c.DataOffsets[0]+2*int64(i):]); got != half.F32ToF16(v) {
			t.Fatalf("c.f16[%d] stored as %#x, want %#x", i, got, half.F32ToF16(v))
		}
	}
}

func TestWriteNoMetadata(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := Write(path, []Tensor{{Name: "x", DType: runtime.F32, Shape: []int{1}, F32: []float32{1}}}, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	want := `{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}  `
	if got := string(b[8 : 8+binary.LittleEndian.Uint64(b)]); got != want {
		t.Errorf("header = %q, want %q", got, want)
	}
	// An empty file set is valid too.
	if err := Write(path, nil, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Names()) != 0 || len(f.Metadata()) != 0 {
		t.Errorf("empty file has %v, %v", f.Names(), f.Metadata())
	}
	f.Close()
}

func TestWriteRejects(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	ok := Tensor{Name: "ok", DType: runtime.F32, Shape: []int{2}, F32: []float32{1, 2}}
	cases := []struct {
		name string
		t    Tensor
		want string
	}{
		{"empty name", Tensor{DType: runtime.F32, Shape: []int{1}, F32: []float32{1}}, "empty name"},
		{"reserved", Tensor{Name: "__metadata__", DType: runtime.F32, Shape: []int{1}, F32: []float32{1}}, "reserved"},
		{"duplicate", ok, "twice"},
		{"count", Tensor{Name: "w", DType: runtime.BF16, Shape: []int{2, 2}, F32: []float32{1, 2, 3}}, "4 elements but 3"},
		{"negative", Tensor{Name: "w", DType: runtime.F32, Shape: []int{-1}}, "negative"},
		{"wrong slice", Tensor{Name: "w", DType: runtime.I32, Shape: []int{1}, F32: []float32{1}}, "not F32"},
		{"wrong slice float", Tensor{Name: "w", DType: runtime.F16, Shape: []int{1}, I32: []int32{1}}, "not I32"},
		{"dtype", Tensor{Name: "w", DType: runtime.DType(99), Shape: []int{1}, F32: []float32{1}}, "cannot write dtype"},
		{"overflow", Tensor{Name: "w", DType: runtime.F32, Shape: []int{1 << 40, 1 << 40}}, "too large"},
		{"utf8", Tensor{Name: "w\xff", DType: runtime.F32, Shape: []int{1}, F32: []float32{1}}, "UTF-8"},
	}
	for _, c := range cases {
		err := Write(path, []Tensor{ok, c.t}, nil)
		if !errors.Is(err, ErrInvalidTensor) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: got %v, want an ErrInvalidTensor mentioning %q", c.name, err, c.want)
		}
		if c.t.Name != "" && c.name != "utf8" && !strings.Contains(err.Error(), c.t.Name) {
			t.Errorf("%s: %v does not name the tensor", c.name, err)
		}
	}
	if err := Write(path, []Tensor{ok}, map[string]string{"k": "\xff"}); !errors.Is(err, ErrInvalidTensor) {
		t.Errorf("bad metadata: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("failed writes left %d files", len(entries))
	}
	if err := Write(filepath.Join(dir, "no", "such", "dir.safetensors"), []Tensor{ok}, nil); err == nil {
		t.Error("Write into a missing folder succeeded")
	}
}

func TestInt32FromI64(t *testing.T) {
	dir := t.TempDir()
	vals := []int64{0, -5, math.MaxInt32, math.MinInt32}
	data := make([]byte, 8*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint64(data[8*i:], uint64(v))
	}
	big := make([]byte, 8)
	binary.LittleEndian.PutUint64(big, 1<<31)
	i8 := []byte{0x80, 0x7f, 0xff}
	path := writeRaw(t, dir, "ids.safetensors",
		`{"ids":{"dtype":"I64","shape":[4],"data_offsets":[0,32]},"big":{"dtype":"I64","shape":[1],"data_offsets":[32,40]},`+
			`"i8":{"dtype":"I8","shape":[3],"data_offsets":[40,43]},"u8":{"dtype":"U8","shape":[3],"data_offsets":[43,46]},`+
			`"f64":{"dtype":"F64","shape":[4],"data_offsets":[46,78]}}`,
		slices.Concat(data, big, i8, i8, data))
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := f.Int32("ids")
	if err != nil || !slices.Equal(got, []int32{0, -5, math.MaxInt32, math.MinInt32}) {
		t.Errorf("Int32(ids) = %v, %v", got, err)
	}
	if _, err := f.Int32("big"); !errors.Is(err, ErrDType) || !strings.Contains(err.Error(), `"big"`) || !strings.Contains(err.Error(), path) {
		t.Errorf("Int32(big) = %v", err)
	}
	if got, err := f.Int32("i8"); err != nil || !slices.Equal(got, []int32{-128, 127, -1}) {
		t.Errorf("Int32(i8) = %v, %v", got, err)
	}
	if got, err := f.Int32("u8"); err != nil || !slices.Equal(got, []int32{128, 127, 255}) {
		t.Errorf("Int32(u8) = %v, %v", got, err)
	}
	// The I64 bytes read as F64 (both 8 bytes) are tiny subnormals or zero.
	if _, err := f.Float32("f64"); err != nil {
		t.Errorf("Float32(f64): %v", err)
	}
}

func TestFloat32FromF64(t *testing.T) {
	vals := []float64{0, 1.5, -2.25, 1e300, 0.1, math.Inf(-1)}
	data := make([]byte, 8*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint64(data[8*i:], math.Float64bits(v))
	}
	path := writeRaw(t, t.TempDir(), "f64.safetensors", `{"x":{"dtype":"F64","shape":[2,3],"data_offsets":[0,48]}}`, data)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := f.Float32("x")
	want := []float32{0, 1.5, -2.25, float32(math.Inf(1)), 0.1, float32(math.Inf(-1))}
	if err != nil || !sameFloats(got, want) {
		t.Errorf("Float32(x) = %v, %v; want %v", got, err, want)
	}
}

// writeRaw writes a safetensors file from a header string and a data region.
func writeRaw(t testing.TB, dir, name, header string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, rawFile(header, data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func rawFile(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

type badCase struct {
	name   string
	file   []byte
	err    error  // sentinel
	tensor string // must appear in the message, when set
	want   string // must appear in the message
}

func badCases() []badCase {
	entry := func(name, body string) string { return `{"` + name + `":` + body + `}` }
	z := func(n int) []byte { return make([]byte, n) }
	hugeLen := binary.LittleEndian.AppendUint64(nil, 200_000_000)
	return []badCase{
		{"empty file", nil, ErrInvalidHeader, "", "shorter than the 8-byte"},
		{"seven bytes", []byte{1, 2, 3, 4, 5, 6, 7}, ErrInvalidHeader, "", "shorter than the 8-byte"},
		{"header past file", append(binary.LittleEndian.AppendUint64(nil, 100), "{}"...), ErrInvalidHeader, "", "larger than"},
		{"header over limit", append(hugeLen, "{}"...), ErrInvalidHeader, "", "over the"},
		{"header length max uint64", append(binary.LittleEndian.AppendUint64(nil, math.MaxUint64), "{}"...), ErrInvalidHeader, "", "over the"},
		{"not json", rawFile(`{"a":`, nil), ErrInvalidHeader, "", "not valid JSON"},
		{"not an object", rawFile(`[1,2]`, nil), ErrInvalidHeader, "", "not a JSON object"},
		{"trailing garbage", rawFile(`{} x`, nil), ErrInvalidHeader, "", "JSON"},
		{"second object", rawFile(`{}{}`, nil), ErrInvalidHeader, "", "after the JSON object"},
		{"nul padding", rawFile("{}\x00\x00", nil), ErrInvalidHeader, "", "JSON"},
		{"bad utf8", rawFile("{\"\xff\":1}", nil), ErrInvalidHeader, "", "UTF-8"},
		{"entry not object", rawFile(entry("w", `[1]`), nil), ErrInvalidHeader, "w", "not a JSON object"},
		{"missing dtype", rawFile(entry("w", `{"shape":[1],"data_offsets":[0,4]}`), z(4)), ErrInvalidHeader, "w", `no "dtype"`},
		{"missing shape", rawFile(entry("w", `{"dtype":"F32","data_offsets":[0,4]}`), z(4)), ErrInvalidHeader, "w", `no "shape"`},
		{"missing offsets", rawFile(entry("w", `{"dtype":"F32","shape":[1]}`), z(4)), ErrInvalidHeader, "w", `no "data_offsets"`},
		{"null shape", rawFile(entry("w", `{"dtype":"F32","shape":null,"data_offsets":[0,4]}`), z(4)), ErrInvalidHeader, "w", `no "shape"`},
		{"unknown dtype", rawFile(entry("w", `{"dtype":"F128","shape":[1],"data_offsets":[0,16]}`), z(16)), ErrInvalidHeader, "w", `unknown dtype "F128"`},
		{"dtype not string", rawFile(entry("w", `{"dtype":32,"shape":[1],"data_offsets":[0,4]}`), z(4)), ErrInvalidHeader, "w", "dtype"},
		{"negative dim", rawFile(entry("w", `{"dtype":"F32","shape":[-1,2],"data_offsets":[0,4]}`), z(4)), ErrInvalidHeader, "w", "negative dimension"},
		{"fractional dim", rawFile(entry("w", `{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}`), z(4)), ErrInvalidHeader, "w", "not an integer"},
		{"string dim", rawFile(entry("w", `{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}`), z(8)), ErrInvalidHeader, "w", "not a number"},
		{"shape not array", rawFile(entry("w", `{"dtype":"F32","shape":2,"data_offsets":[0,8]}`), z(8)), ErrInvalidHeader, "w", "not a JSON array"},
		{"count overflow", rawFile(entry("w", `{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}`), z(4)), ErrInvalidHeader, "w", "overflow"},
		{"bytes overflow", rawFile(entry("w", `{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,4]}`), z(4)), ErrInvalidHeader, "w", "overflow"},
		{"huge dim", rawFile(entry("w", `{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}`), z(4)), ErrInvalidHeader, "w", "not an integer"},
		{"size mismatch", rawFile(entry("w", `{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}`), z(24)), ErrInvalidHeader, "w", "needs 24 bytes but data_offsets [0, 20] span 20"},
		{"sub-byte", rawFile(entry("w", `{"dtype":"F4","shape":[3],"data_offsets":[0,2]}`), z(2)), ErrInvalidHeader, "w", "whole number of bytes"},
		{"begin after end", rawFile(entry("w", `{"dtype":"F32","shape":[0],"data_offsets":[8,4]}`), z(8)), ErrInvalidHeader, "w", "begin after"},
		{"negative offset", rawFile(entry("w", `{"dtype":"U8","shape":[4],"data_offsets":[-4,0]}`), z(8)), ErrInvalidHeader, "w", "negative"},
		{"rank over limit", rawFile(entry("w", `{"dtype":"F32","shape":[`+strings.Repeat("1,", MaxRank)+`1],"data_offsets":[0,4]}`), z(4)), ErrInvalidHeader, "w", "more than 64 dimensions"},
		{"null entry", rawFile(entry("w", `null`), nil), ErrInvalidHeader, "w", "not a JSON object"},
		{"three offsets", rawFile(entry("w", `{"dtype":"U8","shape":[4],"data_offsets":[0,4,8]}`), z(8)), ErrInvalidHeader, "w", "3 numbers"},
		{"truncated", rawFile(entry("w", `{"dtype":"F32","shape":[4],"data_offsets":[0,16]}`), z(15)), ErrTruncated, "w", "past the 15-byte data region"},
		{"truncated second", rawFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}`, z(6)), ErrTruncated, "b", "past"},
		{"overlap", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, z(12)), ErrInvalidHeader, "b", `overlaps tensor "a"`},
		{"same range", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}`, z(8)), ErrInvalidHeader, "a", "overlaps"},
		{"contained", rawFile(`{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}`, z(8)), ErrInvalidHeader, "b", "overlaps"},
		{"duplicate name", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, z(2)), ErrInvalidHeader, "a", "appears twice"},
		{"duplicate metadata", rawFile(`{"__metadata__":{},"__metadata__":{}}`, nil), ErrInvalidHeader, "__metadata__", "appears twice"},
		{"metadata not strings", rawFile(`{"__metadata__":{"epoch":3}}`, nil), ErrInvalidHeader, "__metadata__", "strings"},
		{"metadata not object", rawFile(`{"__metadata__":"pt"}`, nil), ErrInvalidHeader, "__metadata__", "object"},
		{"metadata nested", rawFile(`{"__metadata__":{"a":{"b":"c"}}}`, nil), ErrInvalidHeader, "__metadata__", "strings"},
	}
}

func TestOpenBadFiles(t *testing.T) {
	dir := t.TempDir()
	for i, c := range badCases() {
		path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".safetensors")
		if err := os.WriteFile(path, c.file, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := Open(path)
		if err == nil {
			f.Close()
			t.Errorf("%d %s: Open succeeded", i, c.name)
			continue
		}
		msg := err.Error()
		if !errors.Is(err, c.err) {
			t.Errorf("%s: error %q does not wrap %v", c.name, msg, c.err)
		}
		if !strings.Contains(msg, path) {
			t.Errorf("%s: error %q does not name the file", c.name, msg)
		}
		if c.tensor != "" && !strings.Contains(msg, `"`+c.tensor+`"`) {
			t.Errorf("%s: error %q does not name tensor %q", c.name, msg, c.tensor)
		}
		if !strings.Contains(msg, c.want) {
			t.Errorf("%s: error %q does not say %q", c.name, msg, c.want)
		}
	}
	if _, err := Open(filepath.Join(dir, "missing.safetensors")); err == nil || !strings.Contains(err.Error(), "missing.safetensors") {
		t.Errorf("Open of a missing file: %v", err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("Open of a folder: %v", err)
	}
}

func TestParseHeaderAccepts(t *testing.T) {
	// What the reference implementation writes or accepts, and what this
	// reader accepts beyond it (holes, trailing bytes).
	cases := []struct {
		name   string
		file   []byte
		shapes map[string][]int
	}{
		{"empty", rawFile(`{}`, nil), map[string][]int{}},
		{"padded", rawFile(`{}      `, nil), map[string][]int{}},
		{"leading space", rawFile(` {"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{1}), map[string][]int{"a": {1}}},
		{"scalar", rawFile(`{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}`, make([]byte, 4)), map[string][]int{"s": {}}},
		{"empty tensors share an offset", rawFile(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"c":{"dtype":"BF16","shape":[3,0],"data_offsets":[2,2]}}`, make([]byte, 4)),
			map[string][]int{"a": {0}, "b": {1}, "c": {3, 0}}},
		{"hole and trailing bytes", rawFile(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}`, make([]byte, 9)), map[string][]int{"a": {2}}},
		{"metadata null", rawFile(`{"__metadata__":null,"a":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}}`, []byte{1}), map[string][]int{"a": {1}}},
		{"extra field", rawFile(`{"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2],"extra":true}}`, []byte{1, 2}), map[string][]int{"a": {2}}},
		{"F4 pairs", rawFile(`{"a":{"dtype":"F4","shape":[2,3],"data_offsets":[0,3]}}`, []byte{1, 2, 3}), map[string][]int{"a": {2, 3}}},
		{"rank at limit", rawFile(`{"r":{"dtype":"F32","shape":[`+strings.Repeat("1,", MaxRank-1)+`1],"data_offsets":[0,4]}}`, make([]byte, 4)),
			map[string][]int{"r": slices.Repeat([]int{1}, MaxRank)}},
		{"repeated key in an entry", rawFile(`{"a":{"dtype":"F32","shape":[9],"shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), map[string][]int{"a": {1}}},
		{"escaped name", rawFile(`{"a\u00e9\"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{1}), map[string][]int{"aé\"b": {1}}},
	}
	for _, c := range cases {
		infos, _, start, err := ParseHeader(c.file, int64(len(c.file)), c.name)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if want := 8 + int64(binary.LittleEndian.Uint64(c.file)); start != want {
			t.Errorf("%s: dataStart %d, want %d", c.name, start, want)
		}
		got := map[string][]int{}
		for _, in := range infos {
			got[in.Name] = in.Shape
		}
		if !reflect.DeepEqual(got, c.shapes) {
			t.Errorf("%s: shapes %v, want %v", c.name, got, c.shapes)
		}
	}
	// ParseHeader needs the header bytes, not the whole file.
	file := rawFile(`{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}`, []byte{1, 2, 3})
	if _, _, _, err := ParseHeader(file[:len(file)-3], int64(len(file)), "p"); err != nil {
		t.Errorf("header only: %v", err)
	}
	if _, _, _, err := ParseHeader(file[:len(file)-5], int64(len(file)), "p"); err == nil {
		t.Error("a cut header was accepted")
	}
}

// TestParseHeaderHugeRank is the header: one tensor with 49 million
// dimensions (a 98 MB header). It was decoded whole — 3.9 GB and 23 s — and
// then accepted, to fail later as "missing weights". It must be refused as
// over MaxRank, naming the tensor, after reading only the first dimensions:
// the parse allocates next to nothing.
func TestParseHeaderHugeRank(t *testing.T) {
	const dims = 49_000_000
	file := rawFile(`{"model.embed_tokens.weight":{"dtype":"F32","shape":[`+strings.Repeat("1,", dims-1)+`1],"data_offsets":[0,4]}}`, make([]byte, 4))
	var before, after goruntime.MemStats
	goruntime.GC()
	goruntime.ReadMemStats(&before)
	_, _, _, err := ParseHeader(file, int64(len(file)), "huge.safetensors")
	goruntime.ReadMemStats(&after)
	if err == nil || !errors.Is(err, ErrInvalidHeader) || !strings.Contains(err.Error(), `"model.embed_tokens.weight"`) ||
		!strings.Contains(err.Error(), "more than 64 dimensions") {
		t.Fatalf("ParseHeader: %v, want an invalid header over the rank limit naming the tensor", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("refusing the header allocated %d MB; it should stop at dimension %d", alloc>>20, MaxRank+1)
	}
}

// TestParseHeaderTooManyTensors: a header of more than MaxTensors tiny
// entries is refused with the limit named.
func TestParseHeaderTooManyTensors(t *testing.T) {
	var b strings.Builder
	b.WriteString("{")
	for i := range MaxTensors + 1 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"t%d":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}`, i)
	}
	b.WriteString("}")
	file := rawFile(b.String(), nil)
	_, _, _, err := ParseHeader(file, int64(len(file)), "many.safetensors")
	if err == nil || !errors.Is(err, ErrInvalidHeader) || !strings.Contains(err.Error(), "more than 131072 tensors") {
		t.Fatalf("ParseHeader of %d tensors: %v", MaxTensors+1, err)
	}
	// One fewer is a valid file.
	cut := strings.LastIndex(b.String(), `,"t`)
	file = rawFile(b.String()[:cut]+"}", nil)
	if infos, _, _, err := ParseHeader(file, int64(len(file)), "many.safetensors"); err != nil || len(infos) != MaxTensors {
		t.Fatalf("ParseHeader of %d tensors: %d tensors, %v", MaxTensors, len(infos), err)
	}
}

// TestWriteFailsMidway: a write that fails after more than its buffer has
// reached the disk leaves the file written before as it was, no temporary
// file beside it, and an error naming the file and wrapping the cause.
func TestWriteFailsMidway(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	ok := Tensor{Name: "ok", DType: runtime.F32, Shape: []int{2}, F32: []float32{1, 2}}
	if err := Write(path, []Tensor{ok}, nil); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err = writeAtomic(path, func(w *bufio.Writer) error {
		w.Write(make([]byte, 3<<20)) // past the 1 MiB buffer: on disk
		return boom
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v, want an error naming %s and wrapping the cause", err, path)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Fatalf("a failed write changed %s (%d bytes, was %d)", path, len(after), len(before))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("folder holds %v after a failed write, want the file alone", entries)
	}
}
