package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/runtime"
)

// modelTensors is a small model: 2 layers of a few tensors of 64 to 512 bytes.
func modelTensors() []Tensor {
	var ts []Tensor
	add := func(name string, dt runtime.DType, shape ...int) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		t := Tensor{Name: name, DType: dt, Shape: shape}
		if dt == runtime.I32 {
			t.I32 = make([]int32, n)
			for i := range t.I32 {
				t.I32[i] = int32(i*7 - 3)
			}
		} else {
			t.F32 = make([]float32, n)
			for i := range t.F32 {
				t.F32[i] = float32(len(ts)+1) + float32(i)/16
			}
		}
		ts = append(ts, t)
	}
	add("model.embed_tokens.weight", runtime.BF16, 16, 8) // 256 B
	for l := range 2 {
		p := fmt.Sprintf("model.layers.%d.", l)
		add(p+"input_layernorm.weight", runtime.F32, 8)          // 32 B
		add(p+"self_attn.q_proj.weight", runtime.BF16, 8, 8)     // 128 B
		add(p+"self_attn.k_proj.weight", runtime.F16, 4, 8)      // 64 B
		add(p+"mlp.up_proj.weight", runtime.F32, 16, 8)          // 512 B
		add(p+"mlp.down_proj.weight", runtime.BF16, 8, 16)       // 256 B
		add(p+"post_attention_layernorm.weight", runtime.F32, 8) // 32 B
	}
	add("model.norm.weight", runtime.F32, 8)
	add("extra.ids", runtime.I32, 3)
	return ts
}

func checkSet(t *testing.T, s *Set, ts []Tensor) {
	t.Helper()
	var names []string
	for _, tt := range ts {
		names = append(names, tt.Name)
	}
	slices.Sort(names)
	if got := s.Names(); !slices.Equal(got, names) {
		t.Fatalf("Names() = %v, want %v", got, names)
	}
	for _, tt := range ts {
		info, ok := s.Info(tt.Name)
		if !ok || info.DType != tt.DType.String() || !slices.Equal(info.Shape, tt.Shape) {
			t.Errorf("Info(%q) = %+v, %v", tt.Name, info, ok)
		}
		if tt.DType == runtime.I32 {
			got, err := s.Int32(tt.Name)
			if err != nil || !slices.Equal(got, tt.I32) {
				t.Errorf("Int32(%q) = %v, %v", tt.Name, got, err)
			}
			continue
		}
		got, err := s.Float32(tt.Name)
		if err != nil || !sameFloats(got, want(tt)) {
			t.Errorf("Float32(%q) = %v, %v; want %v", tt.Name, got, err, want(tt))
		}
	}
	if _, err := s.Float32("nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Float32(nope) = %v", err)
	}
	if s.FileOf("nope") != "" {
		t.Error("FileOf(nope) is not empty")
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteDirSharded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ckpt") // WriteDir creates it
	ts := modelTensors()
	meta := map[string]string{"format": "pt"}
	// Data sizes in order: 256, then per layer 32 128 64 512 256 32, then 32
	// and 12 bytes: a 600-byte limit gives 5 shards.
	const limit = 600
	if err := WriteDir(dir, ts, meta, limit); err != nil {
		t.Fatal(err)
	}
	files := listDir(t, dir)
	var shards []string
	for _, f := range files {
		if strings.HasSuffix(f, ".safetensors") {
			shards = append(shards, f)
		}
	}
	if len(shards) < 3 {
		t.Fatalf("%d shards (%v), want at least 3", len(shards), files)
	}
	for i, name := range shards {
		if want := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards)); name != want {
			t.Errorf("shard %d is %s, want %s", i, name, want)
		}
	}
	if !slices.Contains(files, IndexFileName) || len(files) != len(shards)+1 {
		t.Errorf("folder holds %v", files)
	}

	// The index, read independently.
	raw, err := os.ReadFile(filepath.Join(dir, IndexFileName))
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		Metadata  map[string]int64  `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(raw, &idx); err != nil {
		t.Fatal(err)
	}
	var total, params int64
	for _, tt := range ts {
		n := int64(len(tt.F32) + len(tt.I32))
		params += n
		total += n * int64(tt.DType.Size())
	}
	if idx.Metadata["total_size"] != total || idx.Metadata["total_parameters"] != params {
		t.Errorf("index metadata %v, want total_size %d, total_parameters %d", idx.Metadata, total, params)
	}
	if len(idx.WeightMap) != len(ts) {
		t.Errorf("weight_map has %d entries, want %d", len(idx.WeightMap), len(ts))
	}

	// Each shard holds at most the limit of data, unless it is a single tensor.
	for _, name := range shards {
		f, err := Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		var size int64
		for _, n := range f.Names() {
			info, _ := f.Info(n)
			size += info.End - info.Begin
			if idx.WeightMap[n] != name {
				t.Errorf("index maps %s to %s, but it is in %s", n, idx.WeightMap[n], name)
			}
		}
		if size > limit && len(f.Names()) > 1 {
			t.Errorf("%s holds %d bytes in %d tensors", name, size, len(f.Names()))
		}
		if !reflect.DeepEqual(f.Metadata(), meta) {
			t.Errorf("%s metadata %v", name, f.Metadata())
		}
		f.Close()
	}

	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkSet(t, s, ts)
	for _, tt := range ts {
		if got, want := s.FileOf(tt.Name), filepath.Join(dir, idx.WeightMap[tt.Name]); got != want {
			t.Errorf("FileOf(%q) = %s, want %s", tt.Name, got, want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Saving again unsharded removes the index and the shards.
	if err := WriteDir(dir, ts, meta, 0); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{SingleFileName}) {
		t.Errorf("after an unsharded save the folder holds %v", got)
	}
	s, err = OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkSet(t, s, ts)
	if got := s.FileOf(ts[0].Name); got != filepath.Join(dir, SingleFileName) {
		t.Errorf("FileOf = %s", got)
	}
	s.Close()

	// Sharded again, with fewer shards: model.safetensors goes; so do
	// shards of an earlier save with another count. Unrelated files stay.
	os.WriteFile(filepath.Join(dir, "config.json"), []byte("{}"), 0o644)
	os.WriteFile(filepath.Join(dir, "model-00007-of-00009.safetensors"), []byte("stale"), 0o644)
	if err := WriteDir(dir, ts, meta, 1200); err != nil {
		t.Fatal(err)
	}
	got := listDir(t, dir)
	if slices.Contains(got, SingleFileName) || slices.Contains(got, "model-00007-of-00009.safetensors") || !slices.Contains(got, "config.json") {
		t.Errorf("after a second sharded save the folder holds %v", got)
	}
	s, err = OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkSet(t, s, ts)
	s.Close()
}

func TestWriteDirFitsOneFile(t *testing.T) {
	dir := t.TempDir()
	ts := modelTensors()
	if err := WriteDir(dir, ts, nil, 1<<20); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{SingleFileName}) {
		t.Errorf("folder holds %v", got)
	}
	if err := WriteDir(dir, append(ts, ts[0]), nil, 0); !errors.Is(err, ErrInvalidTensor) {
		t.Errorf("duplicate tensor: %v", err)
	}
}

func TestSplitShards(t *testing.T) {
	// As huggingface_hub splits: a tensor over the limit gets its own shard
	// (placed before the shard being filled), the rest fill shards in order.
	ts := make([]Tensor, 6)
	for i := range ts {
		ts[i].Name = string(rune('a' + i))
	}
	sizes := []int64{40, 50, 300, 30, 20, 90}
	var got [][]string
	for _, shard := range splitShards(ts, sizes, 100) {
		var names []string
		for _, t := range shard {
			names = append(names, t.Name)
		}
		got = append(got, names)
	}
	want := [][]string{{"c"}, {"a", "b"}, {"d", "e"}, {"f"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("splitShards = %v, want %v", got, want)
	}
	if n := len(splitShards(nil, nil, 100)); n != 1 {
		t.Errorf("no tensors gave %d shards", n)
	}
}

func TestEncodeIndex(t *testing.T) {
	// What Python's json.dumps(index, indent=2, sort_keys=True) + "\n" gives.
	got := string(encodeIndex(10, 40, map[string]string{
		"b.weight":   "model-00002-of-00002.safetensors",
		"a.weight":   "model-00001-of-00002.safetensors",
		"é \"q\"\t😀": "model-00001-of-00002.safetensors",
	}))
	want := `{
  "metadata": {
    "total_parameters": 10,
    "total_size": 40
  },
  "weight_map": {
    "a.weight": "model-00001-of-00002.safetensors",
    "b.weight": "model-00002-of-00002.safetensors",
    "\u00e9 \"q\"\t\ud83d\ude00": "model-00001-of-00002.safetensors"
  }
}
`
	if got != want {
		t.Errorf("index:\n%s\nwant:\n%s", got, want)
	}
}

func TestOpenDirErrors(t *testing.T) {
	root := t.TempDir()
	good := func(name string) string {
		d := filepath.Join(root, name)
		os.MkdirAll(d, 0o755)
		return d
	}
	one := func(name string) Tensor {
		return Tensor{Name: name, DType: runtime.F32, Shape: []int{1}, F32: []float32{1}}
	}
	index := func(dir string, weightMap map[string]string) string {
		b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 4}, "weight_map": weightMap})
		p := filepath.Join(dir, IndexFileName)
		os.WriteFile(p, b, 0o644)
		return p
	}

	type dirCase struct {
		name  string
		dir   string
		err   error
		names []string // strings the message must hold
	}
	var cases []dirCase

	missing := filepath.Join(root, "missing")
	cases = append(cases, dirCase{"missing folder", missing, os.ErrNotExist, []string{missing}})

	notDir := filepath.Join(root, "file")
	os.WriteFile(notDir, nil, 0o644)
	cases = append(cases, dirCase{"not a folder", notDir, ErrInvalidIndex, []string{notDir}})

	empty := good("empty")
	os.WriteFile(filepath.Join(empty, "config.json"), []byte("{}"), 0o644)
	cases = append(cases, dirCase{"no weights", empty, ErrInvalidIndex, []string{empty, SingleFileName, IndexFileName}})

	notJSON := good("notjson")
	os.WriteFile(filepath.Join(notJSON, IndexFileName), []byte("{oops"), 0o644)
	cases = append(cases, dirCase{"index not JSON", notJSON, ErrInvalidIndex, []string{filepath.Join(notJSON, IndexFileName)}})

	noMap := good("nomap")
	os.WriteFile(filepath.Join(noMap, IndexFileName), []byte(`{"metadata":{}}`), 0o644)
	cases = append(cases, dirCase{"index without weight_map", noMap, ErrInvalidIndex, []string{"weight_map"}})

	noShard := good("noshard")
	Write(filepath.Join(noShard, "model-00001-of-00002.safetensors"), []Tensor{one("a")}, nil)
	idx := index(noShard, map[string]string{"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"})
	cases = append(cases, dirCase{"missing shard", noShard, ErrInvalidIndex, []string{idx, filepath.Join(noShard, "model-00002-of-00002.safetensors")}})

	escape := good("escape")
	index(escape, map[string]string{"a": "../noshard/model-00001-of-00002.safetensors"})
	cases = append(cases, dirCase{"shard outside the folder", escape, ErrInvalidIndex, []string{"outside"}})

	notIn := good("notin")
	Write(filepath.Join(notIn, "model-00001-of-00002.safetensors"), []Tensor{one("a")}, nil)
	Write(filepath.Join(notIn, "model-00002-of-00002.safetensors"), []Tensor{one("b")}, nil)
	idx = index(notIn, map[string]string{"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors"})
	cases = append(cases, dirCase{"tensor not in its shard", notIn, ErrInvalidIndex, []string{idx, `"b"`, "model-00001-of-00002.safetensors"}})

	twice := good("twice")
	Write(filepath.Join(twice, "model-00001-of-00002.safetensors"), []Tensor{one("a"), one("b")}, nil)
	Write(filepath.Join(twice, "model-00002-of-00002.safetensors"), []Tensor{one("b")}, nil)
	index(twice, map[string]string{"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"})
	cases = append(cases, dirCase{"tensor in two shards", twice, ErrInvalidIndex, []string{`"b"`, "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}})

	badShard := good("badshard")
	os.WriteFile(filepath.Join(badShard, "model-00001-of-00001.safetensors"), rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 4)), 0o644)
	index(badShard, map[string]string{"a": "model-00001-of-00001.safetensors"})
	cases = append(cases, dirCase{"truncated shard", badShard, ErrTruncated, []string{"model-00001-of-00001.safetensors", `"a"`}})

	hugeIndex := good("hugeindex")
	os.WriteFile(filepath.Join(hugeIndex, IndexFileName), nil, 0o644)
	os.Truncate(filepath.Join(hugeIndex, IndexFileName), MaxIndexSize+1) // sparse: no disk used
	cases = append(cases, dirCase{"index over the size limit", hugeIndex, ErrInvalidIndex, []string{filepath.Join(hugeIndex, IndexFileName), "limit"}})

	badSingle := good("badsingle")
	os.WriteFile(filepath.Join(badSingle, SingleFileName), []byte("short"), 0o644)
	cases = append(cases, dirCase{"bad model.safetensors", badSingle, ErrInvalidHeader, []string{filepath.Join(badSingle, SingleFileName)}})

	for _, c := range cases {
		s, err := OpenDir(c.dir)
		if err == nil {
			s.Close()
			t.Errorf("%s: OpenDir succeeded", c.name)
			continue
		}
		if !errors.Is(err, c.err) {
			t.Errorf("%s: %v does not wrap %v", c.name, err, c.err)
		}
		for _, n := range c.names {
			if !strings.Contains(err.Error(), n) {
				t.Errorf("%s: %q does not mention %q", c.name, err, n)
			}
		}
	}

	// A shard may hold tensors that the index does not list; they load too.
	extra := good("extra")
	Write(filepath.Join(extra, "model-00001-of-00001.safetensors"), []Tensor{one("a"), one("b")}, nil)
	index(extra, map[string]string{"a": "model-00001-of-00001.safetensors"})
	s, err := OpenDir(extra)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Names(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Names() = %v", got)
	}
	s.Close()
}
