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

// Limits on what a header may declare. ParseHeader checks each while it
// reads, so a hostile or corrupted header costs at most a few hundred
// megabytes and seconds, never the gigabytes that decoding it whole would.
const (
	// MaxHeaderSize is the largest header, in bytes, that ParseHeader accepts
	// (the reference implementation's limit).
	MaxHeaderSize = 100_000_000
	// MaxRank is the most dimensions a tensor may have (NumPy's limit; model
	// weights have at most 5).
	MaxRank = 64
	// MaxTensors is the most tensors one file may hold (131,072): far more
	// than any checkpoint shard holds (a 405B-parameter Llama has about 1,100
	// tensors in all, a 235B mixture of experts about 37,000), few enough that
	// a header of tiny entries parses in about a second.
	MaxTensors = 1 << 17
)

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
		if seen[name] {
			return nil, nil, 0, bad("key %q appears twice", name)
		}
		seen[name] = true
		if name == metadataKey {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, nil, 0, bad("header is not valid JSON: %v", err)
			}
			meta, err = parseMetadata(raw)
			if err != nil {
				return nil, nil, 0, bad("%q: %v", metadataKey, err)
			}
			continue
		}
		if len(infos) == MaxTensors {
			return nil, nil, 0, bad("more than %d tensors (the limit is MaxTensors)", MaxTensors)
		}
		info, err := readEntry(dec, name)
		var syntax jsonError
		if errors.As(err, &syntax) {
			return nil, nil, 0, bad("header is not valid JSON: %v", syntax.err)
		}
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

// jsonError is a syntax error met while streaming an entry: the header as a
// whole is not JSON.
type jsonError struct{ err error }

func (e jsonError) Error() string { return e.err.Error() }

// readEntry reads one tensor entry from dec, token by token: its arrays are
// checked element by element, so a shape of millions of dimensions is refused
// at the first one past MaxRank, without reading the rest. Keys other than
// dtype, shape and data_offsets are skipped; a repeated key counts once,
// the last time (as json.Unmarshal into a map would).
func readEntry(dec *json.Decoder, name string) (TensorInfo, error) {
	info := TensorInfo{Name: name}
	tok, err := dec.Token()
	if err != nil {
		return info, jsonError{err}
	}
	if tok != json.Delim('{') {
		return info, errors.New("entry is not a JSON object")
	}
	var (
		dtype       *string
		shape, offs []int64
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return info, jsonError{err}
		}
		key, _ := tok.(string)
		switch key {
		case "dtype":
			tok, err := dec.Token()
			if err != nil {
				return info, jsonError{err}
			}
			switch v := tok.(type) {
			case nil:
				dtype = nil
			case string:
				dtype = &v
			default:
				return info, errors.New("dtype is not a string")
			}
		case "shape":
			if shape, err = readInts(dec, MaxRank, "dimensions (the limit is MaxRank)"); err != nil {
				return info, fmt.Errorf("shape: %w", err)
			}
		case "data_offsets":
			if offs, err = readInts(dec, 16, "numbers"); err != nil {
				return info, fmt.Errorf("data_offsets: %w", err)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return info, jsonError{err}
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return info, jsonError{err}
	}
	switch {
	case dtype == nil:
		return info, fmt.Errorf("entry has no %q", "dtype")
	case shape == nil:
		return info, fmt.Errorf("entry has no %q", "shape")
	case offs == nil:
		return info, fmt.Errorf("entry has no %q", "data_offsets")
	}
	info.DType = *dtype
	elemBits, ok := dtypeBits[info.DType]
	if !ok {
		return info, fmt.Errorf("unknown dtype %q", info.DType)
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

// readInts reads a JSON array of at most limit integers (no fractions, no
// exponents) from dec, stopping at the first element past the limit. null
// reads as nil (absent).
func readInts(dec *json.Decoder, limit int, what string) ([]int64, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonError{err}
	}
	if tok == nil {
		return nil, nil
	}
	if tok != json.Delim('[') {
		return nil, errors.New("not a JSON array")
	}
	out := []int64{}
	for dec.More() {
		if len(out) == limit {
			return nil, fmt.Errorf("has more than %d %s", limit, what)
		}
		tok, err := dec.Token()
		if err != nil {
			return nil, jsonError{err}
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, fmt.Errorf("element %d is not a number", len(out))
		}
		x, err := strconv.ParseInt(string(num), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("element %d (%s) is not an integer in range", len(out), num)
		}
		out = append(out, x)
	}
	if _, err := dec.Token(); err != nil { // the closing bracket
		return nil, jsonError{err}
	}
	return out, nil
}
