package safetensors

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FuzzParseHeader feeds arbitrary files to ParseHeader: it must never panic,
// and every header it accepts must describe tensors that lie inside the data
// region, do not overlap, and have exactly the size their shape and dtype say.
func FuzzParseHeader(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "seed.safetensors")
	if err := Write(path, sampleTensors(), map[string]string{"format": "pt"}); err != nil {
		f.Fatal(err)
	}
	if b, err := os.ReadFile(path); err == nil {
		f.Add(b)
	}
	if err := Write(path, modelTensors(), nil); err != nil {
		f.Fatal(err)
	}
	if b, err := os.ReadFile(path); err == nil {
		f.Add(b)
	}
	if b, err := os.ReadFile(filepath.Join("testdata", "python.safetensors")); err == nil {
		f.Add(b)
	}
	for _, c := range badCases() {
		f.Add(c.file)
	}
	f.Add(rawFile(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)))

	f.Fuzz(func(t *testing.T, file []byte) {
		infos, meta, start, err := ParseHeader(file, int64(len(file)), "fuzz")
		if err != nil {
			if infos != nil || meta != nil {
				t.Fatal("results returned with an error")
			}
			return
		}
		if start < 8 || start > int64(len(file)) {
			t.Fatalf("dataStart %d outside a %d-byte file", start, len(file))
		}
		dataSize := int64(len(file)) - start
		sorted := slices.Clone(infos)
		slices.SortFunc(sorted, func(a, b TensorInfo) int { return compareInt64(a.Begin, b.Begin) })
		var end int64
		for _, in := range sorted {
			bits, ok := dtypeBits[in.DType]
			if !ok {
				t.Fatalf("%q: unknown dtype %q accepted", in.Name, in.DType)
			}
			if in.Begin < 0 || in.Begin > in.End || in.End > dataSize {
				t.Fatalf("%q: offsets [%d, %d] outside [0, %d]", in.Name, in.Begin, in.End, dataSize)
			}
			n := int64(1)
			for _, d := range in.Shape {
				if d < 0 {
					t.Fatalf("%q: negative dimension in %v", in.Name, in.Shape)
				}
				n *= int64(d) // ParseHeader rejects any product that overflows
			}
			if n*bits != 8*(in.End-in.Begin) {
				t.Fatalf("%q: %d elements of %s in %d bytes", in.Name, n, in.DType, in.End-in.Begin)
			}
			if in.Begin == in.End {
				continue
			}
			if in.Begin < end {
				t.Fatalf("%q overlaps an earlier tensor", in.Name)
			}
			end = in.End
		}
		for i := 1; i < len(infos); i++ {
			if infos[i-1].Name >= infos[i].Name {
				t.Fatalf("names not sorted and unique: %q, %q", infos[i-1].Name, infos[i].Name)
			}
		}
	})
}
