package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"sort"
	"strings"
	"unicode/utf8"
)

// Sentinel errors. Every error about a file's contents wraps one of them and
// names the file; a structural one also names the byte offset.
var (
	// ErrTruncated: the file ends before something its header says is there.
	ErrTruncated = errors.New("gguf: truncated file")
	// ErrInvalid: the bytes are not a valid GGUF file (bad magic, unsupported
	// version, bad value type, inconsistent tensor info).
	ErrInvalid = errors.New("gguf: invalid file")
	// ErrMetadata: a metadata key that is needed is missing or holds another
	// type or an out-of-range value.
	ErrMetadata = errors.New("gguf: bad metadata")
	// ErrUnsupported: the file is valid but holds something kdnative cannot
	// use (an architecture, tensor type or tokenizer it does not have).
	ErrUnsupported = errors.New("gguf: unsupported")
	// ErrNotFound: no tensor of that name.
	ErrNotFound = errors.New("gguf: no such tensor")
)

// Magic is the four bytes a GGUF file starts with.
const Magic = "GGUF"

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// Bounds that keep a corrupt header from asking for absurd amounts of work.
const (
	maxDims       = 4 // GGML_MAX_DIMS
	maxArrayDepth = 4 // arrays of arrays, nested no deeper than this
	maxElems      = 1 << 50
)

// TensorInfo is one entry of the header's tensor table.
type TensorInfo struct {
	Name string
	// Dims is ne as stored, fastest-varying first: a PyTorch [out, in]
	// weight has Dims [in, out].
	Dims []int64
	Type Type
	// Offset is where the data starts, from the start of the data region.
	Offset int64
	// Size is the data's length in bytes.
	Size int64
}

// Elems is the number of values the tensor holds.
func (t TensorInfo) Elems() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= d // Parse bounds the product
	}
	return n
}

// Shape is the tensor's shape as PyTorch writes it (Dims reversed, slowest
// first).
func (t TensorInfo) Shape() []int {
	s := make([]int, len(t.Dims))
	for i, d := range t.Dims {
		s[len(s)-1-i] = int(d)
	}
	return s
}

// Header is everything before a GGUF file's tensor data.
type Header struct {
	Version  uint32
	Metadata *Metadata
	Tensors  []TensorInfo // in file order
	// Alignment of the data region and of each tensor's offset.
	Alignment int64
	// DataOffset is where the data region starts in the file.
	DataOffset int64
	byName     map[string]int
}

// Tensor returns the named tensor's info.
func (h *Header) Tensor(name string) (TensorInfo, bool) {
	i, ok := h.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return h.Tensors[i], true
}

// reader reads the header sequentially, checking each read against the file
// size first so that a truncation is reported where it happens.
type reader struct {
	br   *bufio.Reader
	off  int64 // bytes consumed so far
	size int64
	name string
	buf  [8]byte
}

func (r *reader) truncated(n uint64, what string) error {
	return fmt.Errorf("%w: %s: %s needs %d bytes at offset %d, but the file ends at %d",
		ErrTruncated, r.name, what, n, r.off, r.size)
}

func (r *reader) invalid(at int64, format string, args ...any) error {
	return fmt.Errorf("%w: %s: at offset %d: %s", ErrInvalid, r.name, at, fmt.Sprintf(format, args...))
}

func (r *reader) remaining() uint64 { return uint64(r.size - r.off) }

// read fills p, which the caller has checked fits.
func (r *reader) read(p []byte, what string) error {
	if uint64(len(p)) > r.remaining() {
		return r.truncated(uint64(len(p)), what)
	}
	n, err := io.ReadFull(r.br, p)
	r.off += int64(n)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			// The reader ended before the size it claimed.
			return fmt.Errorf("%w: %s: %s: the file ends at %d", ErrTruncated, r.name, what, r.off)
		}
		return fmt.Errorf("gguf: %s: reading %s at offset %d: %w", r.name, what, r.off, err)
	}
	return nil
}

func (r *reader) u32(what string) (uint32, error) {
	if err := r.read(r.buf[:4], what); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(r.buf[:4]), nil
}

func (r *reader) u64(what string) (uint64, error) {
	if err := r.read(r.buf[:8], what); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(r.buf[:8]), nil
}

// str reads a string: a uint64 length, then that many bytes.
func (r *reader) str(what string) (string, error) {
	at := r.off
	n, err := r.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > r.remaining() {
		return "", fmt.Errorf("%w: %s: %s at offset %d is %d bytes long, but only %d bytes follow",
			ErrTruncated, r.name, what, at, n, r.remaining())
	}
	b := make([]byte, n)
	if err := r.read(b, what); err != nil {
		return "", err
	}
	return string(b), nil
}

// Parse reads and checks the header of a GGUF file of size bytes held by
// ra; name names it in errors. It checks that every tensor has a type ggml
// defines, at most four dimensions, a first dimension that is a whole number
// of blocks, an aligned offset, and data that lies inside the file and
// overlaps no other tensor's.
func Parse(ra io.ReaderAt, size int64, name string) (*Header, error) {
	r := &reader{br: bufio.NewReaderSize(io.NewSectionReader(ra, 0, size), 1<<16), size: size, name: name}
	var magic [4]byte
	if err := r.read(magic[:], "the magic number"); err != nil {
		return nil, err
	}
	if string(magic[:]) != Magic {
		return nil, r.invalid(0, "magic number %q, want %q: not a GGUF file", magic[:], Magic)
	}
	version, err := r.u32("the version")
	if err != nil {
		return nil, err
	}
	switch {
	case version == 2 || version == 3:
	case version == 1:
		return nil, r.invalid(4, "GGUF version 1 is not supported (convert the model again with a current llama.cpp)")
	case version > 0xffff && bits.ReverseBytes32(version) <= 3:
		return nil, r.invalid(4, "a big-endian GGUF file; only little-endian files are supported")
	default:
		return nil, r.invalid(4, "GGUF version %d is not supported (want 2 or 3)", version)
	}
	h := &Header{Version: version, Alignment: DefaultAlignment, byName: map[string]int{}}
	nTensors, err := r.u64("the tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := r.u64("the metadata count")
	if err != nil {
		return nil, err
	}
	// Each entry takes at least its minimal encoding; more than the rest of
	// the file can hold is a corrupt count, not a reason to allocate.
	const minKV, minTensor = 8 + 4 + 1, 8 + 4 + 8 + 4 + 8
	if nKV > r.remaining()/minKV {
		return nil, fmt.Errorf("%w: %s: the header says %d metadata entries, but only %d bytes follow offset %d",
			ErrTruncated, name, nKV, r.remaining(), r.off)
	}
	md := &Metadata{source: name, index: make(map[string]int, nKV)}
	for i := uint64(0); i < nKV; i++ {
		at := r.off
		key, err := r.str(fmt.Sprintf("metadata entry %d's key", i))
		if err != nil {
			return nil, err
		}
		if _, dup := md.index[key]; dup {
			return nil, r.invalid(at, "metadata key %q appears twice", key)
		}
		v, err := r.value(fmt.Sprintf("metadata %s", printable(key)), 0)
		if err != nil {
			return nil, err
		}
		md.index[key] = len(md.kvs)
		md.kvs = append(md.kvs, KV{Key: key, Value: v})
	}
	h.Metadata = md
	if v, ok := md.Get("general.alignment"); ok {
		a, isInt := v.v.(int64)
		if !isInt || v.Type != TypeUint32 || a <= 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("%w: %s: general.alignment is %s %v, want a uint32 power of two",
				ErrInvalid, name, v.Describe(), v.v)
		}
		h.Alignment = a
	}

	if nTensors > r.remaining()/minTensor {
		return nil, fmt.Errorf("%w: %s: the header says %d tensors, but only %d bytes follow offset %d",
			ErrTruncated, name, nTensors, r.remaining(), r.off)
	}
	h.Tensors = make([]TensorInfo, 0, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		t, err := r.tensorInfo(i, h.Alignment)
		if err != nil {
			return nil, err
		}
		if _, dup := h.byName[t.Name]; dup {
			return nil, r.invalid(r.off, "tensor %q appears twice", t.Name)
		}
		h.byName[t.Name] = len(h.Tensors)
		h.Tensors = append(h.Tensors, t)
	}
	h.DataOffset = (r.off + h.Alignment - 1) / h.Alignment * h.Alignment
	if err := h.checkData(name, size); err != nil {
		return nil, err
	}
	return h, nil
}

// tensorInfo reads the i-th tensor info.
func (r *reader) tensorInfo(i uint64, align int64) (TensorInfo, error) {
	at := r.off
	name, err := r.str(fmt.Sprintf("tensor %d's name", i))
	if err != nil {
		return TensorInfo{}, err
	}
	what := "tensor " + printable(name)
	nd, err := r.u32(what + "'s dimension count")
	if err != nil {
		return TensorInfo{}, err
	}
	if nd < 1 || nd > maxDims {
		return TensorInfo{}, r.invalid(at, "%s has %d dimensions, want 1 to %d", what, nd, maxDims)
	}
	t := TensorInfo{Name: name, Dims: make([]int64, nd)}
	n := uint64(1)
	for d := range t.Dims {
		v, err := r.u64(what + "'s dimensions")
		if err != nil {
			return TensorInfo{}, err
		}
		hi, lo := bits.Mul64(n, v)
		if v > maxElems || hi != 0 || lo > maxElems {
			return TensorInfo{}, r.invalid(at, "%s has dimensions too large (ne[%d] = %d)", what, d, v)
		}
		t.Dims[d], n = int64(v), lo
	}
	typ, err := r.u32(what + "'s type")
	if err != nil {
		return TensorInfo{}, err
	}
	t.Type = Type(typ)
	be, bb, ok := t.Type.BlockSize()
	if !ok {
		return TensorInfo{}, fmt.Errorf("%w: %s: %s has ggml type %d, which kdnative does not know (it reads %s)",
			ErrUnsupported, r.name, what, typ, SupportedTypes)
	}
	if t.Dims[0]%int64(be) != 0 {
		return TensorInfo{}, r.invalid(at, "%s is %s, whose blocks hold %d values, but its first dimension is %d",
			what, t.Type, be, t.Dims[0])
	}
	t.Size = int64(n/uint64(be)) * int64(bb) // n ≤ 2^50, bb < 2^9: no overflow
	off, err := r.u64(what + "'s offset")
	if err != nil {
		return TensorInfo{}, err
	}
	if off > math.MaxInt64/2 || int64(off)%align != 0 {
		return TensorInfo{}, r.invalid(at, "%s has offset %d, which is not a multiple of the alignment %d", what, off, align)
	}
	t.Offset = int64(off)
	return t, nil
}

// checkData checks that every tensor lies inside the file and that no two
// overlap.
func (h *Header) checkData(name string, size int64) error {
	if h.DataOffset > size && len(h.Tensors) > 0 {
		return fmt.Errorf("%w: %s: the tensor data should start at offset %d, but the file ends at %d",
			ErrTruncated, name, h.DataOffset, size)
	}
	order := make([]int, len(h.Tensors))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return h.Tensors[order[a]].Offset < h.Tensors[order[b]].Offset })
	var end int64
	prev := ""
	for _, i := range order {
		t := h.Tensors[i]
		start := h.DataOffset + t.Offset
		if t.Size > size || start > size-t.Size {
			return fmt.Errorf("%w: %s: tensor %s (%s %v, %d bytes) lies at offsets [%d, %d), but the file ends at %d",
				ErrTruncated, name, printable(t.Name), t.Type, t.Dims, t.Size, start, start+t.Size, size)
		}
		if t.Size == 0 {
			continue
		}
		if t.Offset < end {
			return fmt.Errorf("%w: %s: tensor %s at data offset %d overlaps tensor %s, which ends at %d",
				ErrInvalid, name, printable(t.Name), t.Offset, printable(prev), end)
		}
		end, prev = t.Offset+t.Size, t.Name
	}
	return nil
}

// value reads a metadata value of a type read first (depth > 0: an array
// element's type is given by the array, see arrayValue).
func (r *reader) value(what string, depth int) (Value, error) {
	at := r.off
	typ, err := r.u32(what + "'s type")
	if err != nil {
		return Value{}, err
	}
	return r.typedValue(ValueType(typ), what, at, depth)
}

func (r *reader) typedValue(t ValueType, what string, at int64, depth int) (Value, error) {
	switch t {
	case TypeString:
		s, err := r.str(what)
		return Value{Type: t, v: s}, err
	case TypeArray:
		return r.arrayValue(what, depth)
	}
	if int(t) >= len(valueSize) {
		return Value{}, r.invalid(at, "%s has value type %d, which GGUF does not define", what, uint32(t))
	}
	var b [8]byte
	if err := r.read(b[:valueSize[t]], what); err != nil {
		return Value{}, err
	}
	return Value{Type: t, v: scalar(t, b[:])}, nil
}

// scalar decodes a fixed-size scalar.
func scalar(t ValueType, b []byte) any {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return int64(b[0])
	case TypeInt8:
		return int64(int8(b[0]))
	case TypeUint16:
		return int64(le.Uint16(b))
	case TypeInt16:
		return int64(int16(le.Uint16(b)))
	case TypeUint32:
		return int64(le.Uint32(b))
	case TypeInt32:
		return int64(int32(le.Uint32(b)))
	case TypeFloat32:
		return float64(math.Float32frombits(le.Uint32(b)))
	case TypeBool:
		return b[0] != 0
	case TypeUint64:
		if u := le.Uint64(b); u > math.MaxInt64 {
			return u
		}
		return int64(le.Uint64(b))
	case TypeInt64:
		return int64(le.Uint64(b))
	case TypeFloat64:
		return math.Float64frombits(le.Uint64(b))
	}
	return nil
}

func (r *reader) arrayValue(what string, depth int) (Value, error) {
	at := r.off
	if depth >= maxArrayDepth {
		return Value{}, r.invalid(at, "%s nests arrays deeper than %d", what, maxArrayDepth)
	}
	et, err := r.u32(what + "'s element type")
	if err != nil {
		return Value{}, err
	}
	elem := ValueType(et)
	if int(elem) >= len(valueSize) {
		return Value{}, r.invalid(at, "%s is an array of value type %d, which GGUF does not define", what, et)
	}
	n, err := r.u64(what + "'s length")
	if err != nil {
		return Value{}, err
	}
	if n > r.remaining()/valueSize[elem] {
		return Value{}, fmt.Errorf("%w: %s: %s at offset %d is an array of %d %s values, but only %d bytes follow",
			ErrTruncated, r.name, what, at, n, elem, r.remaining())
	}
	v := Value{Type: TypeArray, Elem: elem}
	switch {
	case elem == TypeString:
		a := make([]string, n)
		for i := range a {
			if a[i], err = r.str(what); err != nil {
				return Value{}, err
			}
		}
		v.v = a
	case elem == TypeArray:
		a := make([]Value, n)
		for i := range a {
			if a[i], err = r.arrayValue(what, depth+1); err != nil {
				return Value{}, err
			}
		}
		v.v = a
	default:
		size := int(valueSize[elem])
		raw := make([]byte, int(n)*size)
		if err := r.read(raw, what); err != nil {
			return Value{}, err
		}
		switch elem {
		case TypeFloat32, TypeFloat64:
			a := make([]float64, n)
			for i := range a {
				a[i] = scalar(elem, raw[i*size:]).(float64)
			}
			v.v = a
		case TypeBool:
			a := make([]bool, n)
			for i := range a {
				a[i] = raw[i] != 0
			}
			v.v = a
		default:
			a := make([]int64, n)
			for i := range a {
				switch x := scalar(elem, raw[i*size:]).(type) {
				case int64:
					a[i] = x
				case uint64:
					a[i] = int64(x) // out of range: Metadata.Ints reports it
				}
			}
			v.v = a
		}
	}
	return v, nil
}

// printable quotes a name from the file for an error message, shortened.
func printable(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	if !utf8.ValidString(s) || strings.ContainsAny(s, "\x00\n\r\t\"") {
		return fmt.Sprintf("%q", s)
	}
	return s
}
