package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
)

// The file names transformers uses in a model folder.
const (
	SingleFileName = "model.safetensors"
	IndexFileName  = "model.safetensors.index.json"
)

// Set is the weights of one model folder: a single model.safetensors, or the
// shards that model.safetensors.index.json lists. Tensor names are unique
// across the set.
type Set struct {
	dir   string
	files []*File
	owner map[string]*File
	names []string
}

// MaxIndexSize bounds model.safetensors.index.json (64 MiB), which is read
// whole: a real index lists each tensor once, about 100 bytes each.
const MaxIndexSize = 64 << 20

// index is the part of model.safetensors.index.json that loading needs.
type index struct {
	Metadata  map[string]any    `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

// OpenDir opens the weights in the model folder dir. Like transformers, it
// prefers model.safetensors and otherwise reads model.safetensors.index.json:
// every shard the index names must exist and hold every tensor the index maps
// to it, and no tensor may be stored in two shards. Tensors that a shard holds
// but the index does not list are included too, as transformers loads them.
func OpenDir(dir string) (*Set, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("safetensors: model folder: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a folder", ErrInvalidIndex, dir)
	}
	single := filepath.Join(dir, SingleFileName)
	if _, err := os.Stat(single); err == nil {
		f, err := Open(single)
		if err != nil {
			return nil, err
		}
		return newSet(dir, []*File{f})
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("safetensors: %w", err)
	}

	indexPath := filepath.Join(dir, IndexFileName)
	ist, err := os.Stat(indexPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has neither %s nor %s", ErrInvalidIndex, dir, SingleFileName, IndexFileName)
	}
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if ist.Size() > MaxIndexSize {
		return nil, fmt.Errorf("%w: %s is %d bytes, over the %d-byte limit for an index", ErrInvalidIndex, indexPath, ist.Size(), MaxIndexSize)
	}
	raw, err := os.ReadFile(indexPath)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	var idx index
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, fmt.Errorf("%w: %s is not a valid index: %v", ErrInvalidIndex, indexPath, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%w: %s has no weight_map entries", ErrInvalidIndex, indexPath)
	}

	var shardNames []string
	for _, shard := range idx.WeightMap {
		shardNames = append(shardNames, shard)
	}
	slices.Sort(shardNames)
	shardNames = slices.Compact(shardNames)
	files := make([]*File, 0, len(shardNames))
	byShard := make(map[string]*File, len(shardNames))
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	for _, shard := range shardNames {
		local := filepath.FromSlash(shard)
		if !filepath.IsLocal(local) {
			closeAll()
			return nil, fmt.Errorf("%w: %s names shard %q, which is outside the folder", ErrInvalidIndex, indexPath, shard)
		}
		p := filepath.Join(dir, local)
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			closeAll()
			return nil, fmt.Errorf("%w: %s names shard %s, which does not exist", ErrInvalidIndex, indexPath, p)
		}
		f, err := Open(p)
		if err != nil {
			closeAll()
			return nil, err
		}
		files = append(files, f)
		byShard[shard] = f
	}
	for _, name := range sortedKeys(idx.WeightMap) {
		f := byShard[idx.WeightMap[name]]
		if _, ok := f.infos[name]; !ok {
			closeAll()
			return nil, fmt.Errorf("%w: %s maps tensor %q to %s, which does not contain it",
				ErrInvalidIndex, indexPath, name, f.path)
		}
	}
	s, err := newSet(dir, files)
	if err != nil {
		closeAll()
		return nil, err
	}
	return s, nil
}

func newSet(dir string, files []*File) (*Set, error) {
	s := &Set{dir: dir, files: files, owner: make(map[string]*File)}
	for _, f := range files {
		for _, name := range f.names {
			if other, dup := s.owner[name]; dup {
				return nil, fmt.Errorf("%w: tensor %q is in both %s and %s", ErrInvalidIndex, name, other.path, f.path)
			}
			s.owner[name] = f
			s.names = append(s.names, name)
		}
	}
	sort.Strings(s.names)
	return s, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Dir returns the folder the set was opened from.
func (s *Set) Dir() string { return s.dir }

// Names returns the names of all tensors in the set, sorted.
func (s *Set) Names() []string { return append([]string(nil), s.names...) }

// Info returns the header entry of the named tensor; its offsets are relative
// to the data region of the file FileOf names.
func (s *Set) Info(name string) (TensorInfo, bool) {
	f, ok := s.owner[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Info(name)
}

// FileOf returns the path of the file that holds the named tensor, or "" if
// the set has no such tensor.
func (s *Set) FileOf(name string) string {
	if f, ok := s.owner[name]; ok {
		return f.path
	}
	return ""
}

func (s *Set) file(name string) (*File, error) {
	f, ok := s.owner[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s: tensor %q", ErrNotFound, s.dir, name)
	}
	return f, nil
}

// Float32 is File.Float32 on the file that holds the named tensor.
func (s *Set) Float32(name string) ([]float32, error) {
	f, err := s.file(name)
	if err != nil {
		return nil, err
	}
	return f.Float32(name)
}

// Int32 is File.Int32 on the file that holds the named tensor.
func (s *Set) Int32(name string) ([]int32, error) {
	f, err := s.file(name)
	if err != nil {
		return nil, err
	}
	return f.Int32(name)
}

// Raw is File.Raw on the file that holds the named tensor.
func (s *Set) Raw(name string) ([]byte, error) {
	f, err := s.file(name)
	if err != nil {
		return nil, err
	}
	return f.Raw(name)
}

// Close closes every file of the set and returns the first error.
func (s *Set) Close() error {
	var first error
	for _, f := range s.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
