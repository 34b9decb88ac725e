package safetensors

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"os"
	"sync"

	"github.com/kdnative/kdnative/runtime/half"
)

// File is one open safetensors file, memory-mapped read-only (read into
// memory on platforms without mmap). Its methods may be called from several
// goroutines at once; Close waits for reads in progress.
type File struct {
	path    string
	names   []string
	infos   map[string]TensorInfo
	meta    map[string]string
	dataOff int64

	mu      sync.RWMutex
	data    []byte // the whole file; nil once closed
	release func() error
}

// Open opens the safetensors file at path, maps it and validates its header
// (see ParseHeader). The caller must Close it.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("safetensors: %s is not a regular file", path)
	}
	size := st.Size()
	if size < 8 {
		_, _, _, err := ParseHeader(nil, size, path)
		return nil, err
	}
	if size > math.MaxInt {
		return nil, fmt.Errorf("safetensors: %s: %d bytes is too large to map on this platform", path, size)
	}
	data, release, err := mapFile(f, int(size))
	if err != nil {
		return nil, fmt.Errorf("safetensors: map %s: %w", path, err)
	}
	infos, meta, dataOff, err := ParseHeader(data, size, path)
	if err != nil {
		release()
		return nil, err
	}
	file := &File{
		path:    path,
		names:   make([]string, len(infos)),
		infos:   make(map[string]TensorInfo, len(infos)),
		meta:    meta,
		dataOff: dataOff,
		data:    data,
		release: release,
	}
	for i, t := range infos {
		file.names[i] = t.Name
		file.infos[t.Name] = t
	}
	return file, nil
}

// Path returns the path the file was opened with.
func (f *File) Path() string { return f.path }

// Names returns the names of the file's tensors, sorted.
func (f *File) Names() []string { return append([]string(nil), f.names...) }

// Info returns the header entry of the named tensor.
func (f *File) Info(name string) (TensorInfo, bool) {
	t, ok := f.infos[name]
	if ok {
		t.Shape = append([]int(nil), t.Shape...)
	}
	return t, ok
}

// Metadata returns a copy of the header's __metadata__ map (empty when the
// file has none).
func (f *File) Metadata() map[string]string {
	m := make(map[string]string, len(f.meta))
	maps.Copy(m, f.meta)
	return m
}

// read calls fn with the named tensor's info and bytes while holding the read
// lock.
func (f *File) read(name string, fn func(TensorInfo, []byte) error) error {
	t, ok := f.infos[name]
	if !ok {
		return fmt.Errorf("%w: %s: tensor %q", ErrNotFound, f.path, name)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.data == nil {
		return fmt.Errorf("%w: %s", ErrClosed, f.path)
	}
	return fn(t, f.data[f.dataOff+t.Begin:f.dataOff+t.End])
}

// Raw returns the named tensor's bytes as stored (little-endian, in the
// file's dtype), without copying: the slice aliases the read-only mapping,
// must not be written to and must not be used after Close.
func (f *File) Raw(name string) ([]byte, error) {
	var out []byte
	err := f.read(name, func(_ TensorInfo, b []byte) error {
		out = b[:len(b):len(b)]
		return nil
	})
	return out, err
}

// Float32 returns a copy of the named tensor's values, converted to float32
// from F32, BF16, F16 or F64 (F64 rounds to nearest). Other dtypes are an
// error wrapping ErrDType; an unknown name wraps ErrNotFound.
func (f *File) Float32(name string) ([]float32, error) {
	var out []float32
	err := f.read(name, func(t TensorInfo, b []byte) error {
		switch t.DType {
		case "F32":
			out = make([]float32, len(b)/4)
			half.DecodeF32(out, b)
		case "BF16":
			out = make([]float32, len(b)/2)
			half.DecodeBF16(out, b)
		case "F16":
			out = make([]float32, len(b)/2)
			half.DecodeF16(out, b)
		case "F64":
			out = make([]float32, len(b)/8)
			for i := range out {
				out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])))
			}
		default:
			return fmt.Errorf("%w: %s: tensor %q has dtype %s; Float32 reads F32, BF16, F16 and F64",
				ErrDType, f.path, name, t.DType)
		}
		return nil
	})
	return out, err
}

// Int32 returns a copy of the named tensor's values as int32, from I32, I64,
// I16, I8, U16 or U8. An I64 value outside the int32 range is an error
// wrapping ErrDType, as is any other dtype.
func (f *File) Int32(name string) ([]int32, error) {
	var out []int32
	err := f.read(name, func(t TensorInfo, b []byte) error {
		switch t.DType {
		case "I32":
			out = make([]int32, len(b)/4)
			for i := range out {
				out[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
			}
		case "I64":
			out = make([]int32, len(b)/8)
			for i := range out {
				v := int64(binary.LittleEndian.Uint64(b[8*i:]))
				if v < math.MinInt32 || v > math.MaxInt32 {
					return fmt.Errorf("%w: %s: tensor %q: I64 value %d at index %d does not fit in int32",
						ErrDType, f.path, name, v, i)
				}
				out[i] = int32(v)
			}
		case "I16":
			out = make([]int32, len(b)/2)
			for i := range out {
				out[i] = int32(int16(binary.LittleEndian.Uint16(b[2*i:])))
			}
		case "U16":
			out = make([]int32, len(b)/2)
			for i := range out {
				out[i] = int32(binary.LittleEndian.Uint16(b[2*i:]))
			}
		case "I8":
			out = make([]int32, len(b))
			for i := range out {
				out[i] = int32(int8(b[i]))
			}
		case "U8":
			out = make([]int32, len(b))
			for i := range out {
				out[i] = int32(b[i])
			}
		default:
			return fmt.Errorf("%w: %s: tensor %q has dtype %s; Int32 reads I32, I64, I16, I8, U16 and U8",
				ErrDType, f.path, name, t.DType)
		}
		return nil
	})
	return out, err
}

// Close unmaps the file. Slices returned by Raw must not be used afterwards;
// other methods return an error wrapping ErrClosed. Closing twice is a no-op.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.data == nil {
		return nil
	}
	f.data = nil
	if err := f.release(); err != nil {
		return fmt.Errorf("safetensors: unmap %s: %w", f.path, err)
	}
	return nil
}
