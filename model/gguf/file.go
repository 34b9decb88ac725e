package gguf

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
)

// File is an open GGUF file: its parsed header, and the file for reading
// tensor data on demand. Its methods may be called from several goroutines.
type File struct {
	*Header
	path string
	size int64

	mu sync.RWMutex
	f  *os.File // nil once closed
}

// IsGGUFPath reports whether path names a GGUF file by its extension
// (".gguf", any case): how kdnative tells a GGUF model from a model folder.
func IsGGUFPath(path string) bool {
	return strings.HasSuffix(strings.ToLower(path), ".gguf")
}

// Open opens and parses the GGUF file at path. The caller must Close it.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("gguf: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("gguf: %s is not a regular file", path)
	}
	h, err := Parse(f, st.Size(), path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &File{Header: h, path: path, size: st.Size(), f: f}, nil
}

// Path returns the path the file was opened with.
func (f *File) Path() string { return f.path }

// Raw returns a copy of the named tensor's bytes as stored.
func (f *File) Raw(name string) (TensorInfo, []byte, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return TensorInfo{}, nil, fmt.Errorf("%w: %s: tensor %q", ErrNotFound, f.path, name)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.f == nil {
		return TensorInfo{}, nil, fmt.Errorf("gguf: %s: file closed", f.path)
	}
	b := make([]byte, t.Size)
	at := f.DataOffset + t.Offset
	if n, err := f.f.ReadAt(b, at); n != len(b) {
		return TensorInfo{}, nil, fmt.Errorf("%w: %s: tensor %s: read %d of %d bytes at offset %d: %v",
			ErrTruncated, f.path, name, n, len(b), at, err)
	}
	return t, b, nil
}

// Float32 returns the named tensor's values dequantized to float32, in
// storage order (ne[0] fastest, as PyTorch's row-major order of Shape). A type
// Dequantize does not read is an error wrapping ErrUnsupported that names
// the tensor and the type.
func (f *File) Float32(name string) ([]float32, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%w: %s: tensor %q", ErrNotFound, f.path, name)
	}
	if !t.Type.Dequantizable() {
		return nil, f.unsupportedType(t)
	}
	t, b, err := f.Raw(name)
	if err != nil {
		return nil, err
	}
	out := make([]float32, t.Elems())
	if err := Dequantize(t.Type, b, out); err != nil {
		return nil, fmt.Errorf("%s: tensor %s: %w", f.path, name, err)
	}
	return out, nil
}

func (f *File) unsupportedType(t TensorInfo) error {
	return fmt.Errorf("%w: %s: tensor %s is stored as %s, which kdnative cannot dequantize (it reads %s)",
		ErrUnsupported, f.path, t.Name, t.Type, SupportedTypes)
}

// CheckTypes returns an error naming every tensor whose type Dequantize does
// not read (the first few of them), so that a load stops before it starts.
func (f *File) CheckTypes() error {
	var bad []string
	seen := map[Type]bool{}
	for _, t := range f.Tensors {
		if !t.Type.Dequantizable() {
			if len(bad) < 3 {
				bad = append(bad, fmt.Sprintf("%s (%s)", t.Name, t.Type))
			}
			seen[t.Type] = true
		}
	}
	if len(bad) == 0 {
		return nil
	}
	var names []string
	for typ := range seen {
		names = append(names, typ.String())
	}
	slices.Sort(names)
	return fmt.Errorf("%w: %s: tensors stored as %s, which kdnative cannot dequantize (it reads %s): %s",
		ErrUnsupported, f.path, strings.Join(names, ", "), SupportedTypes, strings.Join(bad, ", "))
}

// Close closes the file. Closing twice is a no-op.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return nil
	}
	err := f.f.Close()
	f.f = nil
	return err
}
