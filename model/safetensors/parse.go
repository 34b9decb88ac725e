package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxHeaderSize is the largest header, in bytes, that ParseHeader accepts
// (the reference implementation's limit).
const MaxHeaderSize = 100_000_000

// metadataKey is the reserved header key that holds the free-form metadata.
const metadataKey = "__metadata__"

// TensorInfo describes one tensor of a file, as its header entry declares it.
type TensorInfo struct {
	// Name is the tensor's key in the header.
	Name string
	// DType is the dtype as spelled in the file: F32, BF16, F16, F64, I64,
	// I32, I16, I8, U8, BOOL, ... (see KnownDType).
	DType string
	// Shape is the tensor's shape, outermost dimension first; empty for a
	// scalar.
	Shape []int
	// Begin and End are the byte offsets of the tensor's data, relative to
	// the start of the data region.
	Begin, End int64
}

// NumElements is the product of the shape's dimensions (1 for a scalar).
func (t TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= int64(d)
	}
	return n
}

// ParseHeader parses and validates a safetensors header. data holds the
// beginning of the file: at least the 8-byte length and the header (the whole
// file will do); fileSize is the size of the whole file; path is used only in
// error messages. It returns the tensors sorted by name, the __metadata__ map
// (nil when absent) and the file offset at which the data region starts.
//
// Every tensor entry must have a known dtype, a shape of non-negative
// integers and data_offsets [begin, end] with end−begin equal to the
// shape's element count times the dtype's size, lying inside the data region
// and overlapping no other tensor. Unused bytes between or after tensors are
// allowed (the reference implementation is stricter and rejects them).
func ParseHeader(data []byte, fileSize int64, path string) (infos []TensorInfo, meta map[string]string, dataStart int64, err error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidHeader, path, fmt.Sprintf(format, args...))
	}
	if fileSize < 8 || len(data) < 8 {
		return nil, nil, 0, bad("file is %d bytes, shorter than the 8-byte header length", min(fileSize, int64(len(data))))
	}
	if int64(len(data)) > fileSize {
		return nil, nil, 0, bad("%d bytes of data given for a file of %d bytes", len(data), fileSize)
	}
	n := binary.LittleEndian.Uint64(data)
	if n > MaxHeaderSize {
		return nil, nil, 0, bad("header length %d is over the %d-byte limit", n, MaxHeaderSize)
	}
	if int64(n) > fileSize-8 {
		return nil, nil, 0, bad("header length %d is larger than the %d bytes that follow it", n, fileSize-8)
	}
	if uint64(len(data)-8) < n {
		return nil, nil, 0, bad("only %d of the header's %d bytes given", len(data)-8, n)
	}
	header := data[8 : 8+n]
	dataStart = 8 + int64(n)
	dataSize := fileSize - dataStart

	if !utf8.Valid(header) {
		return nil, nil, 0, bad("header is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		if err != nil {
			return nil, nil, 0, bad("header is not valid JSON: %v", err)
		}
		return nil, nil, 0, bad("header is not a JSON object")
	}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, 0, bad("header is not valid JSON: %v", err)
		}
		name, ok := tok.(string)
		if !ok { // cannot happen inside an object, but never trust
			return nil, nil, 0, bad("header is not valid JSON: unexpected %v", tok)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, 0, bad("header is not valid JSON: %v", err)
		}
		if seen[name] {
			return nil, nil, 0, bad("key %q appears twice", name)
		}
		seen[name] = true
		if name == metadataKey {
			meta, err = parseMetadata(raw)
			if err != nil {
				return nil, nil, 0, bad("%q: %v", metadataKey, err)
			}
			continue
		}
		info, err := parseEntry(name, raw)
		if err != nil {
			return nil, nil, 0, bad("tensor %q: %v", name, err)
		}
		if info.End > dataSize {
			return nil, nil, 0, fmt.Errorf("%w: %s: tensor %q: data_offsets [%d, %d] end past the %d-byte data region",
				ErrTruncated, path, name, info.Begin, info.End, dataSize)
		}
		infos = append(infos, info)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, nil, 0, bad("header is not valid JSON: %v", err)
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return nil, nil, 0, bad("header is not valid JSON after the object: %v", err)
		}
		return nil, nil, 0, bad("header has %v after the JSON object", tok)
	}

	// Overlaps: sort by offsets; empty tensors occupy no bytes.
	byOffset := slices.Clone(infos)
	slices.SortFunc(byOffset, func(a, b TensorInfo) int {
		if c := compareInt64(a.Begin, b.Begin); c != 0 {
			return c
		}
		return compareInt64(a.End, b.End)
	})
	var prev *TensorInfo
	for i := range byOffset {
		t := &byOffset[i]
		if t.Begin == t.End {
			continue
		}
		if prev != nil && t.Begin < prev.End {
			return nil, nil, 0, bad("tensor %q (bytes %d to %d) overlaps tensor %q (bytes %d to %d)",
				t.Name, t.Begin, t.End, prev.Name, prev.Begin, prev.End)
		}
		prev = t
	}
	slices.SortFunc(infos, func(a, b TensorInfo) int { return strings.Compare(a.Name, b.Name) })
	return infos, meta, dataStart, nil
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func parseMetadata(raw json.RawMessage) (map[string]string, error) {
	if string(raw) == "null" {
		return nil, nil
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, errors.New("must be a JSON object of strings")
	}
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("must map strings to strings: %v", err)
	}
	return m, nil
}

func parseEntry(name string, raw json.RawMessage) (TensorInfo, error) {
	info := TensorInfo{Name: name}
	if len(raw) == 0 || raw[0] != '{' {
		return info, errors.New("entry is not a JSON object")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return info, fmt.Errorf("entry: %v", err)
	}
	for _, k := range []string{"dtype", "shape", "data_offsets"} {
		if v, ok := fields[k]; !ok || string(v) == "null" {
			return info, fmt.Errorf("entry has no %q", k)
		}
	}
	if err := json.Unmarshal(fields["dtype"], &info.DType); err != nil {
		return info, fmt.Errorf("dtype is not a string")
	}
	elemBits, ok := dtypeBits[info.DType]
	if !ok {
		return info, fmt.Errorf("unknown dtype %q", info.DType)
	}
	shape, err := parseInts(fields["shape"])
	if err != nil {
		return info, fmt.Errorf("shape: %v", err)
	}
	count := uint64(1)
	info.Shape = make([]int, len(shape))
	for i, d := range shape {
		if d < 0 {
			return info, fmt.Errorf("shape %v has a negative dimension", shape)
		}
		if d > math.MaxInt {
			return info, fmt.Errorf("shape %v: dimension %d is too large", shape, d)
		}
		info.Shape[i] = int(d)
		hi, lo := bits.Mul64(count, uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return info, fmt.Errorf("shape %v: element count overflows", shape)
		}
		count = lo
	}
	hi, totalBits := bits.Mul64(count, uint64(elemBits))
	if hi != 0 || totalBits/8 > math.MaxInt64 {
		return info, fmt.Errorf("shape %v of %s: byte size overflows", shape, info.DType)
	}
	if totalBits%8 != 0 {
		return info, fmt.Errorf("shape %v of %s is not a whole number of bytes", shape, info.DType)
	}
	nbytes := int64(totalBits / 8)

	offs, err := parseInts(fields["data_offsets"])
	if err != nil {
		return info, fmt.Errorf("data_offsets: %v", err)
	}
	if len(offs) != 2 {
		return info, fmt.Errorf("data_offsets has %d numbers, want 2", len(offs))
	}
	info.Begin, info.End = offs[0], offs[1]
	if info.Begin < 0 || info.End < 0 {
		return info, fmt.Errorf("data_offsets [%d, %d] are negative", info.Begin, info.End)
	}
	if info.Begin > info.End {
		return info, fmt.Errorf("data_offsets [%d, %d] begin after they end", info.Begin, info.End)
	}
	if info.End-info.Begin != nbytes {
		return info, fmt.Errorf("shape %v of %s needs %d bytes but data_offsets [%d, %d] span %d",
			shape, info.DType, nbytes, info.Begin, info.End, info.End-info.Begin)
	}
	return info, nil
}

// parseInts decodes a JSON array of integers (no fractions, no exponents).
func parseInts(raw json.RawMessage) ([]int64, error) {
	if len(raw) == 0 || raw[0] != '[' {
		return nil, errors.New("not a JSON array")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var nums []any
	if err := dec.Decode(&nums); err != nil {
		return nil, err
	}
	out := make([]int64, len(nums))
	for i, v := range nums {
		num, ok := v.(json.Number)
		if !ok {
			return nil, fmt.Errorf("element %d is not a number", i)
		}
		x, err := strconv.ParseInt(string(num), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("element %d (%s) is not an integer in range", i, num)
		}
		out[i] = x
	}
	return out, nil
}
