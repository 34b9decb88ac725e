package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// tinyPath is one of the GGUF files make_gguf_fixtures.py wrote with the
// gguf package's GGUFWriter (llama.cpp's own writer).
var tinyPath = filepath.Join("testdata", "tiny_llama_gqa.gguf")

func parseBytes(b []byte) (*Header, error) {
	return Parse(bytes.NewReader(b), int64(len(b)), "test.gguf")
}

// The header GGUFWriter wrote reads back as the script wrote it (the values
// are those of model/testdata/fixtures/llama_gqa/config.json).
func TestParseGGUFWriterFile(t *testing.T) {
	f, err := Open(tinyPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Version != 3 || f.Alignment != 32 || f.DataOffset%32 != 0 {
		t.Errorf("version %d, alignment %d, data at %d", f.Version, f.Alignment, f.DataOffset)
	}
	md := f.Metadata
	for key, want := range map[string]int64{
		"llama.block_count": 2, "llama.embedding_length": 48, "llama.feed_forward_length": 80,
		"llama.attention.head_count": 6, "llama.attention.head_count_kv": 2, "llama.context_length": 64,
		"llama.vocab_size": 97, "llama.rope.dimension_count": 8,
	} {
		if got, err := md.Int(key); err != nil || got != want {
			t.Errorf("%s = %d (%v), want %d", key, got, err, want)
		}
	}
	if s, err := md.String("general.architecture"); err != nil || s != "llama" {
		t.Errorf("general.architecture = %q (%v)", s, err)
	}
	if x, err := md.Float("llama.attention.layer_norm_rms_epsilon"); err != nil || float32(x) != 1e-5 {
		t.Errorf("rms eps = %v (%v)", x, err)
	}
	emb, ok := f.Tensor("token_embd.weight")
	if !ok || !reflect.DeepEqual(emb.Dims, []int64{48, 97}) || emb.Type != F32 || emb.Size != 48*97*4 {
		t.Errorf("token_embd.weight: %+v", emb)
	}
	if !reflect.DeepEqual(emb.Shape(), []int{97, 48}) {
		t.Errorf("Shape %v, want [97 48]", emb.Shape())
	}
	if len(f.Tensors) != 2*9+3 {
		t.Errorf("%d tensors, want 21", len(f.Tensors))
	}
	if _, err := f.Float32("blk.0.attn_q.weight"); err != nil {
		t.Error(err)
	}
}

// Metadata of every type, arrays of arrays included, comes back as written.
func TestEncodeParseRoundTrip(t *testing.T) {
	md := []KV{
		{"general.architecture", StringValue("llama")},
		{"u8", Value{Type: TypeUint8, v: int64(200)}},
		{"i8", Value{Type: TypeInt8, v: int64(-100)}},
		{"u16", Value{Type: TypeUint16, v: int64(60000)}},
		{"i16", Value{Type: TypeInt16, v: int64(-30000)}},
		{"u32", Uint32Value(4000000000)},
		{"i32", Int32Value(-2000000000)},
		{"u64", Uint64Value(1 << 60)},
		{"u64big", Uint64Value(1<<63 + 5)},
		{"i64", Value{Type: TypeInt64, v: int64(-1 << 60)}},
		{"f32", Float32Value(1.5)},
		{"f64", Value{Type: TypeFloat64, v: 2.25}},
		{"b", BoolValue(true)},
		{"strs", StringsValue([]string{"a", "", "ünï"})},
		{"ints", IntsValue(TypeInt32, []int64{1, -2, 3})},
		{"floats", FloatsValue(TypeFloat32, []float64{0.5, -1})},
		{"nested", ArraysValue([]Value{IntsValue(TypeUint8, []int64{1, 2}), StringsValue([]string{"x"})})},
	}
	data := make([]byte, 32*18)
	file, err := Encode(md, []WriteTensor{
		{Name: "a", Dims: []int64{32, 2}, Type: Q4_0, Data: data[:2*18]},
		{Name: "b", Dims: []int64{5}, Type: F32, Data: data[:20]},
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseBytes(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, kv := range h.Metadata.KVs() {
		if kv.Key != md[i].Key || !reflect.DeepEqual(kv.Value, md[i].Value) {
			t.Errorf("entry %d: %s = %#v, want %s = %#v", i, kv.Key, kv.Value, md[i].Key, md[i].Value)
		}
	}
	if _, err := h.Metadata.Int("u64big"); err == nil {
		t.Error("a uint64 above MaxInt64 read as an int")
	}
	if a, ok := h.Tensor("a"); !ok || a.Size != 36 || a.Offset != 0 {
		t.Errorf("tensor a: %+v", a)
	}
	if b, ok := h.Tensor("b"); !ok || b.Size != 20 || b.Offset != 64 {
		t.Errorf("tensor b: %+v", b)
	}
	// Accessors refuse other types with an error naming the key.
	if _, err := h.Metadata.String("u32"); err == nil || !strings.Contains(err.Error(), "u32 is a uint32") {
		t.Errorf("String on a uint32: %v", err)
	}
	if _, err := h.Metadata.Strings("ints"); err == nil || !strings.Contains(err.Error(), "array of int32") {
		t.Errorf("Strings on ints: %v", err)
	}
	if _, err := h.Metadata.Int("missing"); !errors.Is(err, ErrMetadata) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing key: %v", err)
	}
}

// Every prefix of a real file is an error that says where the file ends,
// never a panic.
func TestParseTruncated(t *testing.T) {
	file, err := os.ReadFile(tinyPath)
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseBytes(file)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(file); n++ {
		if n > int(h.DataOffset)+64 && n%97 != 0 {
			continue // past the header, a sample of cut points suffices
		}
		_, err := parseBytes(file[:n])
		if err == nil {
			t.Fatalf("a %d-byte prefix of %d parsed", n, len(file))
		}
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("prefix %d: %v does not wrap ErrTruncated", n, err)
		}
		if !strings.Contains(err.Error(), "offset") {
			t.Fatalf("prefix %d: %q names no offset", n, err)
		}
	}
	_, err = parseBytes(file[:len(file)-1])
	if err == nil || !strings.Contains(err.Error(), "tensor ") {
		t.Errorf("cut in the data: %v, want the tensor named", err)
	}
}

// header assembles a file by hand for the malformed cases Encode cannot make.
type header struct{ bytes.Buffer }

func (h *header) u32(x uint32) *header { h.Write(binary.LittleEndian.AppendUint32(nil, x)); return h }
func (h *header) u64(x uint64) *header { h.Write(binary.LittleEndian.AppendUint64(nil, x)); return h }
func (h *header) str(s string) *header { h.u64(uint64(len(s))); h.WriteString(s); return h }

func start(version uint32, tensors, kvs uint64) *header {
	h := &header{}
	h.WriteString("GGUF")
	return h.u32(version).u64(tensors).u64(kvs)
}

func TestParseRejects(t *testing.T) {
	q := make([]byte, 18*4)
	enc := func(md []KV, ts ...WriteTensor) []byte {
		b, err := Encode(md, ts)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	arch := KV{"general.architecture", StringValue("llama")}
	cases := []struct {
		name string
		file []byte
		is   error
		want string
	}{
		{"magic", []byte("GGML\x03\x00\x00\x00" + strings.Repeat("\x00", 16)), ErrInvalid, "not a GGUF file"},
		{"version 1", start(1, 0, 0).Bytes(), ErrInvalid, "version 1"},
		{"version 9", start(9, 0, 0).Bytes(), ErrInvalid, "version 9"},
		{"big-endian", start(3<<24, 0, 0).Bytes(), ErrInvalid, "big-endian"},
		{"huge kv count", start(3, 0, 1<<40).Bytes(), ErrTruncated, "metadata entries"},
		{"huge tensor count", start(3, 1<<40, 0).Bytes(), ErrTruncated, "tensors"},
		{"huge string", append(start(3, 0, 1).u64(1<<62).Bytes(), make([]byte, 32)...), ErrTruncated, "key"},
		{"value type", start(3, 0, 1).str("k").u32(77).u64(0).Bytes(), ErrInvalid, "value type 77"},
		{"huge array", start(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeUint32)).u64(1 << 61).Bytes(), ErrTruncated, "array of"},
		{"deep arrays", func() []byte {
			h := start(3, 0, 1).str("k").u32(uint32(TypeArray))
			for range 6 {
				h.u32(uint32(TypeArray)).u64(1)
			}
			return h.Bytes()
		}(), ErrInvalid, "nests arrays"},
		{"duplicate key", enc([]KV{arch, arch}), ErrInvalid, "appears twice"},
		{"alignment type", enc([]KV{{"general.alignment", StringValue("32")}}), ErrInvalid, "general.alignment"},
		{"alignment 24", enc([]KV{{"general.alignment", Uint32Value(24)}}), ErrInvalid, "power of two"},
		{"unknown ggml type", enc(nil, WriteTensor{Name: "w", Dims: []int64{4}, Type: 99, Data: q[:16]}), ErrUnsupported, "ggml type 99"},
		{"dims", enc(nil, WriteTensor{Name: "w", Dims: []int64{1, 1, 1, 1, 1}, Type: F32, Data: q[:4]}), ErrInvalid, "5 dimensions"},
		{"block", enc(nil, WriteTensor{Name: "w", Dims: []int64{48}, Type: Q4_0, Data: q}), ErrInvalid, "blocks hold 32"},
		{"huge dims", enc(nil, WriteTensor{Name: "w", Dims: []int64{1 << 40, 1 << 40}, Type: F32, Data: q}), ErrInvalid, "too large"},
		{"duplicate tensor", enc(nil, WriteTensor{Name: "w", Dims: []int64{4}, Type: F32, Data: q[:16]},
			WriteTensor{Name: "w", Dims: []int64{4}, Type: F32, Data: q[:16]}), ErrInvalid, "appears twice"},
		{"past the end", enc(nil, WriteTensor{Name: "w", Dims: []int64{1024}, Type: F32, Data: q[:16]}), ErrTruncated, "tensor w"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseBytes(c.file)
			if err == nil {
				t.Fatal("parsed")
			}
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "test.gguf") {
				t.Errorf("%v; want an error wrapping %v that names the file and says %q", err, c.is, c.want)
			}
		})
	}
}

// Offsets that overlap or are not aligned are refused.
func TestParseOffsets(t *testing.T) {
	build := func(offA, offB uint64) []byte {
		h := start(3, 2, 0)
		h.str("a").u32(1).u64(8).u32(uint32(F32)).u64(offA)
		h.str("b").u32(1).u64(8).u32(uint32(F32)).u64(offB)
		for h.Len()%32 != 0 {
			h.WriteByte(0)
		}
		h.Write(make([]byte, 128))
		return h.Bytes()
	}
	if _, err := parseBytes(build(0, 32)); err != nil {
		t.Fatalf("a valid file: %v", err)
	}
	if _, err := parseBytes(build(0, 0)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "overlaps") {
		t.Errorf("overlap: %v", err)
	}
	if _, err := parseBytes(build(0, 40)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "alignment") {
		t.Errorf("misaligned: %v", err)
	}
}
