package safetensors

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/kdnative/kdnative/internal/atomicfile"
	"github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/half"
)

// Tensor is one tensor to write.
type Tensor struct {
	// Name is the tensor's key in the header (non-empty, valid UTF-8).
	Name string
	// DType is the stored dtype: runtime.F32, BF16, F16 or I32.
	DType runtime.DType
	// Shape is the tensor's shape; empty for a scalar.
	Shape []int
	// F32 holds the values of a float tensor, converted to DType on write
	// (rounding to nearest even for BF16 and F16).
	F32 []float32
	// I32 holds the values of an I32 tensor.
	I32 []int32
}

// checkTensors validates ts for writing and returns each tensor's data size
// in bytes.
func checkTensors(ts []Tensor) ([]int64, error) {
	sizes := make([]int64, len(ts))
	seen := make(map[string]bool, len(ts))
	for i, t := range ts {
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: tensor %q: %s", ErrInvalidTensor, t.Name, fmt.Sprintf(format, args...))
		}
		switch {
		case t.Name == "":
			return nil, fmt.Errorf("%w: tensor %d has an empty name", ErrInvalidTensor, i)
		case t.Name == metadataKey:
			return nil, bad("the name is reserved")
		case !utf8.ValidString(t.Name):
			return nil, bad("the name is not valid UTF-8")
		case seen[t.Name]:
			return nil, bad("the name appears twice")
		}
		seen[t.Name] = true
		count := uint64(1)
		for _, d := range t.Shape {
			if d < 0 {
				return nil, bad("shape %v has a negative dimension", t.Shape)
			}
			hi, lo := bits.Mul64(count, uint64(d))
			if hi != 0 || lo > math.MaxInt64/8 {
				return nil, bad("shape %v is too large", t.Shape)
			}
			count = lo
		}
		var have int
		switch t.DType {
		case runtime.F32, runtime.BF16, runtime.F16:
			if t.I32 != nil {
				return nil, bad("dtype %s takes F32 values, not I32", t.DType)
			}
			have = len(t.F32)
		case runtime.I32:
			if t.F32 != nil {
				return nil, bad("dtype I32 takes I32 values, not F32")
			}
			have = len(t.I32)
		default:
			return nil, bad("cannot write dtype %v", t.DType)
		}
		if uint64(have) != count {
			return nil, bad("shape %v has %d elements but %d values were given", t.Shape, count, have)
		}
		sizes[i] = int64(count) * int64(t.DType.Size())
	}
	return sizes, nil
}

// dtypeRank orders dtypes as the reference writer does: wider first, and
// among equal widths in the order of its Dtype enum.
func dtypeRank(d runtime.DType) int {
	switch d {
	case runtime.F32:
		return 0
	case runtime.I32:
		return 1
	case runtime.BF16:
		return 2
	}
	return 3 // F16
}

// encodeHeader lays out ts (already validated) and returns the padded header
// bytes and the tensors in data order.
func encodeHeader(ts []Tensor, metadata map[string]string) ([]byte, []Tensor, error) {
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, nil, fmt.Errorf("%w: metadata %q is not valid UTF-8", ErrInvalidTensor, k)
		}
	}
	order := slices.Clone(ts)
	slices.SortStableFunc(order, func(a, b Tensor) int {
		return cmp.Or(cmp.Compare(dtypeRank(a.DType), dtypeRank(b.DType)), cmp.Compare(a.Name, b.Name))
	})
	var h bytes.Buffer
	h.WriteByte('{')
	if len(metadata) > 0 {
		writeJSONString(&h, metadataKey)
		h.WriteString(":{")
		for i, k := range sortedKeys(metadata) {
			if i > 0 {
				h.WriteByte(',')
			}
			writeJSONString(&h, k)
			h.WriteByte(':')
			writeJSONString(&h, metadata[k])
		}
		h.WriteByte('}')
	}
	var off int64
	for i, t := range order {
		if i > 0 || len(metadata) > 0 {
			h.WriteByte(',')
		}
		writeJSONString(&h, t.Name)
		h.WriteString(`:{"dtype":"`)
		h.WriteString(t.DType.String())
		h.WriteString(`","shape":[`)
		n := int64(1)
		for j, d := range t.Shape {
			if j > 0 {
				h.WriteByte(',')
			}
			h.WriteString(strconv.Itoa(d))
			n *= int64(d)
		}
		end := off + n*int64(t.DType.Size())
		fmt.Fprintf(&h, `],"data_offsets":[%d,%d]}`, off, end)
		off = end
	}
	h.WriteByte('}')
	for h.Len()%8 != 0 {
		h.WriteByte(' ')
	}
	return h.Bytes(), order, nil
}

// writeJSONString writes s as a JSON string without HTML escaping, as
// serde_json does.
func writeJSONString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)           // cannot fail for a string
	b.Truncate(b.Len() - 1) // the newline Encode adds
}

// Write writes tensors to a safetensors file at path, with metadata as the
// header's __metadata__ (omitted when empty; transformers expects
// {"format": "pt"}). The layout is the reference writer's: header entries and
// data ordered by dtype width (F32, I32, BF16, F16) and then by name, data
// contiguous from offset 0, header padded with spaces to a multiple of 8
// bytes. The file is written atomically: to a temporary file in the same
// folder, synced, then renamed over path.
func Write(path string, tensors []Tensor, metadata map[string]string) error {
	if _, err := checkTensors(tensors); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	return write(path, tensors, metadata)
}

func write(path string, tensors []Tensor, metadata map[string]string) error {
	header, order, err := encodeHeader(tensors, metadata)
	if err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	return writeAtomic(path, func(w *bufio.Writer) error {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
		w.Write(n[:])
		w.Write(header)
		var buf []byte
		const chunk = 1 << 14 // elements per conversion
		for _, t := range order {
			for i := 0; i < max(len(t.F32), len(t.I32)); i += chunk {
				switch t.DType {
				case runtime.F32:
					src := t.F32[i:min(i+chunk, len(t.F32))]
					buf = slices.Grow(buf[:0], 4*len(src))[:4*len(src)]
					half.EncodeF32(buf, src)
				case runtime.BF16:
					src := t.F32[i:min(i+chunk, len(t.F32))]
					buf = slices.Grow(buf[:0], 2*len(src))[:2*len(src)]
					half.EncodeBF16(buf, src)
				case runtime.F16:
					src := t.F32[i:min(i+chunk, len(t.F32))]
					buf = slices.Grow(buf[:0], 2*len(src))[:2*len(src)]
					half.EncodeF16(buf, src)
				case runtime.I32:
					src := t.I32[i:min(i+chunk, len(t.I32))]
					buf = slices.Grow(buf[:0], 4*len(src))[:4*len(src)]
					for j, v := range src {
						binary.LittleEndian.PutUint32(buf[4*j:], uint32(v))
					}
				}
				if _, err := w.Write(buf); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// writeAtomic writes path through internal/atomicfile (a temporary file
// beside it, synced, renamed over it, the folder synced) with what fill
// writes into a 1 MiB buffer.
func writeAtomic(path string, fill func(*bufio.Writer) error) error {
	err := atomicfile.Write(path, func(f io.Writer) error {
		w := bufio.NewWriterSize(f, 1<<20)
		if err := fill(w); err != nil {
			return err
		}
		return w.Flush()
	})
	if err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	return nil
}

// shardRE matches the shard names transformers writes.
var shardRE = regexp.MustCompile(`^model-\d{5}-of-\d{5}\.safetensors$`)

// WriteDir saves tensors as the weights of the model folder dir (created if
// missing), each file with metadata as its __metadata__. When maxShardBytes
// <= 0 or the tensors' data fits in it, it writes one model.safetensors.
// Otherwise it splits the tensors, in the order given, into shards of at most
// maxShardBytes of data the way transformers does (a tensor larger than the
// limit gets a shard of its own), writes them as
// model-00001-of-0000N.safetensors ... and writes
// model.safetensors.index.json as transformers' save_pretrained does
// (indent 2, sorted keys, metadata total_size and total_parameters).
//
// Every file is written atomically, new weights before the index, and files
// of an earlier save in dir that a loader would pick up instead of or
// alongside the new ones (model.safetensors, the index, other
// model-XXXXX-of-YYYYY.safetensors shards) are removed once the new files are
// in place.
func WriteDir(dir string, tensors []Tensor, metadata map[string]string, maxShardBytes int64) error {
	sizes, err := checkTensors(tensors)
	if err != nil {
		return fmt.Errorf("safetensors: write %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	shards := splitShards(tensors, sizes, maxShardBytes)
	keep := make(map[string]bool)
	if len(shards) <= 1 {
		if err := write(filepath.Join(dir, SingleFileName), tensors, metadata); err != nil {
			return err
		}
		keep[SingleFileName] = true
	} else {
		weightMap := make(map[string]string, len(tensors))
		var totalSize, totalParams int64
		for i, shard := range shards {
			name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
			if err := write(filepath.Join(dir, name), shard, metadata); err != nil {
				return err
			}
			keep[name] = true
			for _, t := range shard {
				weightMap[t.Name] = name
				n := int64(1)
				for _, d := range t.Shape {
					n *= int64(d)
				}
				totalParams += n
				totalSize += n * int64(t.DType.Size())
			}
		}
		idx := encodeIndex(totalParams, totalSize, weightMap)
		if err := writeAtomic(filepath.Join(dir, IndexFileName), func(w *bufio.Writer) error {
			_, err := w.Write(idx)
			return err
		}); err != nil {
			return err
		}
		keep[IndexFileName] = true
	}
	return removeStale(dir, keep)
}

// splitShards groups tensors into shards as huggingface_hub's
// split_torch_state_dict_into_shards does.
func splitShards(ts []Tensor, sizes []int64, max int64) [][]Tensor {
	if max <= 0 {
		return [][]Tensor{ts}
	}
	var shards [][]Tensor
	var cur []Tensor
	var curSize int64
	for i, t := range ts {
		if sizes[i] > max {
			shards = append(shards, []Tensor{t})
			continue
		}
		if curSize+sizes[i] > max {
			shards = append(shards, cur)
			cur, curSize = nil, 0
		}
		cur = append(cur, t)
		curSize += sizes[i]
	}
	if len(cur) > 0 || len(shards) == 0 {
		shards = append(shards, cur)
	}
	return shards
}

// encodeIndex renders the index as Python's json.dumps(index, indent=2,
// sort_keys=True) + "\n" does.
func encodeIndex(totalParams, totalSize int64, weightMap map[string]string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "{\n  \"metadata\": {\n    \"total_parameters\": %d,\n    \"total_size\": %d\n  },\n  \"weight_map\": {", totalParams, totalSize)
	for i, name := range sortedKeys(weightMap) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n    ")
		writePythonString(&b, name)
		b.WriteString(": ")
		writePythonString(&b, weightMap[name])
	}
	if len(weightMap) > 0 {
		b.WriteString("\n  ")
	}
	b.WriteString("}\n}\n")
	return b.Bytes()
}

// writePythonString writes s as Python's json.dumps does with the default
// ensure_ascii=True.
func writePythonString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r < 0x20 || (r > 0x7f && r < 0x10000):
			fmt.Fprintf(b, `\u%04x`, r)
		case r >= 0x10000:
			r -= 0x10000
			fmt.Fprintf(b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

// removeStale deletes the weight files of an earlier save that are not in
// keep.
func removeStale(dir string, keep map[string]bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		stale := name == SingleFileName || name == IndexFileName || shardRE.MatchString(name)
		if !stale || keep[name] || e.IsDir() {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			errs = append(errs, fmt.Errorf("safetensors: remove stale %w", err))
		}
	}
	if len(errs) == 0 {
		if err := atomicfile.SyncDir(dir); err != nil {
			errs = append(errs, fmt.Errorf("safetensors: %w", err))
		}
	}
	return errors.Join(errs...)
}
