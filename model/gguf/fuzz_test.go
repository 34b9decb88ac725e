package gguf

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, and a
// header it accepts must describe tensors that lie inside the file, take the
// size their dims and type say, and do not overlap; the metadata accessors
// must not panic on any key either, nor HF on the result.
func FuzzParse(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "tiny_*.gguf"))
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b[:min(len(b), 4096)]) // the header and the first tensors
		}
	}
	for _, edit := range []func([]KV, []WriteTensor) ([]KV, []WriteTensor){
		nil,
		func(md []KV, ts []WriteTensor) ([]KV, []WriteTensor) {
			md = append(md, KV{"tokenizer.ggml.tokens", StringsValue([]string{"a", "b", "ab"})},
				KV{"nested", ArraysValue([]Value{IntsValue(TypeInt8, []int64{1})})})
			ts[1] = WriteTensor{Name: "output_norm.weight", Dims: []int64{32}, Type: Q8_0, Data: make([]byte, 34)}
			return md, ts
		},
	} {
		md, ts := miniParts()
		if edit != nil {
			md, ts = edit(md, ts)
		}
		if b, err := Encode(md, ts); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, file []byte) {
		h, err := parseBytes(file)
		if err != nil {
			if h != nil {
				t.Fatal("a header returned with an error")
			}
			return
		}
		size := int64(len(file))
		type span struct{ a, b int64 }
		var spans []span
		for _, ti := range h.Tensors {
			be, bb, ok := ti.Type.BlockSize()
			if !ok {
				t.Fatalf("%q: unknown type %d accepted", ti.Name, ti.Type)
			}
			if ti.Elems()%int64(be) != 0 || ti.Size != ti.Elems()/int64(be)*int64(bb) {
				t.Fatalf("%q: %d values of %s in %d bytes", ti.Name, ti.Elems(), ti.Type, ti.Size)
			}
			start := h.DataOffset + ti.Offset
			if ti.Offset < 0 || start+ti.Size > size {
				t.Fatalf("%q: [%d, %d) outside a %d-byte file", ti.Name, start, start+ti.Size, size)
			}
			if ti.Size > 0 {
				spans = append(spans, span{start, start + ti.Size})
			}
		}
		sort.Slice(spans, func(i, j int) bool { return spans[i].a < spans[j].a })
		for i := 1; i < len(spans); i++ {
			if spans[i].a < spans[i-1].b {
				t.Fatal("overlapping tensors accepted")
			}
		}
		for _, kv := range h.Metadata.KVs() {
			md := h.Metadata
			md.String(kv.Key)
			md.Int(kv.Key)
			md.Float(kv.Key)
			md.Bool(kv.Key)
			md.Strings(kv.Key)
			md.Ints(kv.Key)
			md.Floats(kv.Key)
			md.IntIn(kv.Key, 0, 10)
		}
		(&File{Header: h, path: "fuzz"}).HF()
	})
}
