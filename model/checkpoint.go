package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/kdnative/kdnative/internal/atomicfile"
	"github.com/kdnative/kdnative/model/gguf"
	"github.com/kdnative/kdnative/model/safetensors"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// ckptEntry maps one checkpoint tensor to the internal parameters it holds.
// parts are concatenated along the checkpoint tensor's last dimension; with
// transposed the checkpoint stores each part as Wᵀ ([in, out], GPT-2's Conv1D).
type ckptEntry struct {
	name       string
	shape      []int
	parts      []*Param
	transposed bool
}

// checkpointEntries lists the tensors a Hugging Face checkpoint of this model
// holds, in the layout transformers uses.
func (m *Model) checkpointEntries() []ckptEntry {
	var out []ckptEntry
	if m.Config.Arch == Llama {
		for _, p := range m.params {
			out = append(out, ckptEntry{name: p.Name, shape: p.Shape, parts: []*Param{p}})
		}
		return out
	}
	pre := m.ckptPrefix
	plain := func(p *Param) {
		out = append(out, ckptEntry{name: pre + p.Name, shape: p.Shape, parts: []*Param{p}})
	}
	conv := func(name string, ps ...*Param) { // Conv1D weight [in, Σout]
		total := 0
		for _, p := range ps {
			total += p.Shape[0]
		}
		out = append(out, ckptEntry{name: pre + name + ".weight", shape: []int{ps[0].Shape[1], total}, parts: ps, transposed: true})
	}
	bias := func(name string, ps ...*Param) {
		total := 0
		for _, p := range ps {
			total += p.Shape[0]
		}
		out = append(out, ckptEntry{name: pre + name + ".bias", shape: []int{total}, parts: ps})
	}
	plain(m.embed)
	plain(m.pos)
	for i, l := range m.layers {
		h := fmt.Sprintf("h.%d.", i)
		plain(l.norm1W)
		plain(l.norm1B)
		conv(h+"attn.c_attn", l.q.W, l.k.W, l.v.W)
		bias(h+"attn.c_attn", l.q.B, l.k.B, l.v.B)
		conv(h+"attn.c_proj", l.o.W)
		bias(h+"attn.c_proj", l.o.B)
		plain(l.norm2W)
		plain(l.norm2B)
		conv(h+"mlp.c_fc", l.up.W)
		bias(h+"mlp.c_fc", l.up.B)
		conv(h+"mlp.c_proj", l.down.W)
		bias(h+"mlp.c_proj", l.down.B)
	}
	plain(m.normFW)
	plain(m.normFB)
	if !m.Config.Tied {
		out = append(out, ckptEntry{name: "lm_head.weight", shape: m.head.Shape, parts: []*Param{m.head}})
	}
	return out
}

// ignoredCheckpointName matches tensors that some checkpoints carry and that
// are not parameters: GPT-2's causal-mask buffers and old Llama checkpoints'
// rotary inverse frequencies.
var ignoredCheckpointName = regexp.MustCompile(`(^|\.)(attn\.bias|attn\.masked_bias|rotary_emb\.inv_freq)$`)

// splitInto scatters a checkpoint tensor's values into its parts' host buffers.
func (e *ckptEntry) splitInto(data []float32, dst [][]float32) {
	if !e.transposed {
		off := 0
		for i, p := range e.parts {
			n := kdrt.Numel(p.Shape)
			copy(dst[i], data[off:off+n])
			off += n
		}
		return
	}
	in, total := e.shape[0], e.shape[1]
	col := 0
	for i, p := range e.parts {
		out := p.Shape[0]
		for o := range out {
			for j := range in {
				dst[i][o*in+j] = data[j*total+col+o]
			}
		}
		col += out
	}
}

// joinFrom is splitInto's inverse.
func (e *ckptEntry) joinFrom(src [][]float32) []float32 {
	data := make([]float32, kdrt.Numel(e.shape))
	if !e.transposed {
		off := 0
		for i := range e.parts {
			off += copy(data[off:], src[i])
		}
		return data
	}
	in, total := e.shape[0], e.shape[1]
	col := 0
	for i, p := range e.parts {
		out := p.Shape[0]
		for o := range out {
			for j := range in {
				data[j*total+col+o] = src[i][o*in+j]
			}
		}
		col += out
	}
	return data
}

// LoadDir reads a Hugging Face model folder (config.json and model.safetensors
// or a sharded index) into a new model on be, stored as opts say (F32 by
// default; F32, BF16 and F16 checkpoints are all read). The config is checked against
// the weights' shapes before anything is allocated, so a damaged config.json
// (vocab_size 10¹⁰ beside a 259-row embedding) is a shape error, not an
// allocation of terabytes; and New refuses weights larger than the backend's
// free memory. A path ending in .gguf is read as a GGUF file instead (see
// loadGGUF).
func LoadDir(dir string, be kdrt.Backend, opts ...Option) (*Model, error) {
	if gguf.IsGGUFPath(dir) {
		return loadGGUF(dir, be, opts...)
	}
	cfg, err := LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	defer set.Close()
	if err := shapeOnly(cfg).matchCheckpoint(set, dir); err != nil {
		return nil, err
	}
	m, err := New(cfg, be, opts...)
	if err != nil {
		return nil, err
	}
	if err := m.load(set, dir); err != nil {
		return nil, err
	}
	return m, nil
}

// shapeOnly is the model cfg describes with no tensors: its parameters' names
// and shapes, for checking a checkpoint before allocating.
func shapeOnly(cfg *Config) *Model {
	m := &Model{Config: cfg, byName: map[string]*Param{}, ckptPrefix: "transformer."}
	m.params, m.embed, m.pos, m.layers, m.normFW, m.normFB, m.head = cfg.structure(func(s paramSpec) *Param {
		return &Param{Name: s.name, Shape: s.shape, kind: s.kind, NoDecay: s.kind != kindMatrix}
	})
	return m
}

// matchCheckpoint checks that the checkpoint holds every parameter with its
// shape and nothing unknown; it reads only the headers. It also sets GPT-2's
// name prefix from the checkpoint.
func (m *Model) matchCheckpoint(set *safetensors.Set, dir string) error {
	if m.Config.Arch == GPT2 {
		m.ckptPrefix = ""
		if _, ok := set.Info("transformer.wte.weight"); ok {
			m.ckptPrefix = "transformer."
		}
	}
	known := map[string]bool{}
	var missing []string
	for _, e := range m.checkpointEntries() {
		known[e.name] = true
		info, ok := set.Info(e.name)
		if !ok {
			missing = append(missing, fmt.Sprintf("%s %s", e.name, kdrt.ShapeString(e.shape)))
			continue
		}
		if !kdrt.SameShape(info.Shape, e.shape) {
			return fmt.Errorf("model folder %s: tensor %s in %s has shape %s, config.json implies %s",
				dir, e.name, set.FileOf(e.name), kdrt.ShapeString(info.Shape), kdrt.ShapeString(e.shape))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("model folder %s: missing %d weight(s) the config requires: %s", dir, len(missing), listSome(missing))
	}
	var extra []string
	for _, name := range set.Names() {
		if known[name] || ignoredCheckpointName.MatchString(name) {
			continue
		}
		if m.Config.Tied && name == "lm_head.weight" {
			continue // some tied checkpoints also store the shared matrix
		}
		extra = append(extra, name+" (in "+set.FileOf(name)+")")
	}
	if len(extra) > 0 {
		return fmt.Errorf("model folder %s: %d weight(s) that a %s model with this config.json does not have: %s",
			dir, len(extra), m.Config.ModelType, listSome(extra))
	}
	return nil
}

// load copies the weights of a checkpoint into the model, checking first
// that every parameter is present with its shape and that nothing unknown is
// left over.
func (m *Model) load(set *safetensors.Set, dir string) error {
	if err := m.matchCheckpoint(set, dir); err != nil {
		return err
	}
	err := m.importTensors(false, func(e ckptEntry) ([]float32, error) {
		return set.Float32(e.name)
	})
	if err != nil {
		return err
	}
	return m.be.Sync()
}

func listSome(names []string) string {
	sort.Strings(names)
	if len(names) > 5 {
		return strings.Join(names[:5], ", ") + fmt.Sprintf(", … (%d more)", len(names)-5)
	}
	return strings.Join(names, ", ")
}

// importTensors fills the parameters' values (grads=false) or gradients from
// checkpoint-layout tensors that get returns; a nil slice from get skips the
// entry.
func (m *Model) importTensors(grads bool, get func(ckptEntry) ([]float32, error)) error {
	if grads {
		if err := m.ensureGrads(); err != nil {
			return err
		}
	}
	for _, e := range m.checkpointEntries() {
		data, err := get(e)
		if err != nil {
			return err
		}
		if data == nil {
			continue
		}
		if len(data) != kdrt.Numel(e.shape) {
			return fmt.Errorf("model: %s has %d values, want %d for shape %s", e.name, len(data), kdrt.Numel(e.shape), kdrt.ShapeString(e.shape))
		}
		bufs := make([][]float32, len(e.parts))
		for i, p := range e.parts {
			bufs[i] = make([]float32, kdrt.Numel(p.Shape))
		}
		e.splitInto(data, bufs)
		for i, p := range e.parts {
			var err error
			if grads {
				err = m.be.Upload(p.G, bufs[i])
			} else {
				err = m.setValue(p, bufs[i])
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// SetGrads replaces every parameter's gradient with tensors given under their
// checkpoint names and in the checkpoint layout (ExportTensors' inverse), for
// example gradients computed elsewhere. Every parameter must be present.
func (m *Model) SetGrads(vals map[string][]float32) error {
	return m.importTensors(true, func(e ckptEntry) ([]float32, error) {
		v, ok := vals[e.name]
		if !ok {
			return nil, fmt.Errorf("model: SetGrads: no gradient for %s", e.name)
		}
		return v, nil
	})
}

// ExportTensors returns the model's weights (grads=false) or gradients
// (grads=true) under their checkpoint names, in the checkpoint's layout: what
// transformers' state_dict (or named_parameters' .grad) would hold. The
// weights are the F32 master copies where the model keeps them (so a
// checkpoint of a mixed-precision run resumes exactly), else W widened to
// float32.
func (m *Model) ExportTensors(grads bool) (map[string][]float32, map[string][]int, error) {
	vals, shapes := map[string][]float32{}, map[string][]int{}
	for _, e := range m.checkpointEntries() {
		bufs := make([][]float32, len(e.parts))
		for i, p := range e.parts {
			t := p.W
			if p.Master != nil {
				t = p.Master
			}
			if grads {
				if p.G == nil {
					return nil, nil, fmt.Errorf("model: no gradient for %s: run a backward first", p.Name)
				}
				t = p.G
			}
			bufs[i] = make([]float32, kdrt.Numel(p.Shape))
			if err := m.be.Download(t, bufs[i]); err != nil {
				return nil, nil, err
			}
		}
		vals[e.name], shapes[e.name] = e.joinFrom(bufs), e.shape
	}
	return vals, shapes, nil
}

// DefaultMaxShardBytes is the shard size transformers uses by default (5 GB).
const DefaultMaxShardBytes = 5_000_000_000

// SaveDir writes the model as a Hugging Face folder that transformers loads
// unchanged: config.json (the source's, every field kept) and safetensors in
// float32, sharded above maxShardBytes (≤ 0: DefaultMaxShardBytes). Every file
// is written to a temporary name and renamed.
func (m *Model) SaveDir(dir string, maxShardBytes int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("model: %w", err)
	}
	if maxShardBytes <= 0 {
		maxShardBytes = DefaultMaxShardBytes
	}
	vals, shapes, err := m.ExportTensors(false)
	if err != nil {
		return err
	}
	var tensors []safetensors.Tensor
	for name, v := range vals {
		tensors = append(tensors, safetensors.Tensor{Name: name, DType: kdrt.F32, Shape: shapes[name], F32: v})
	}
	sort.Slice(tensors, func(i, j int) bool { return tensors[i].Name < tensors[j].Name })
	if err := safetensors.WriteDir(dir, tensors, map[string]string{"format": "pt"}, maxShardBytes); err != nil {
		return err
	}
	return m.writeConfig(filepath.Join(dir, "config.json"))
}

func (m *Model) writeConfig(path string) error {
	raw := map[string]any{}
	for k, v := range m.Config.Raw {
		raw[k] = v
	}
	// The weights are written in float32; say so in whichever key the source used.
	if _, ok := raw["torch_dtype"]; ok {
		raw["torch_dtype"] = "float32"
	} else {
		raw["dtype"] = "float32"
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(raw); err != nil {
		return fmt.Errorf("model: encoding %s: %w", path, err)
	}
	// Atomically: a crash leaves the old config.json or the new one.
	if err := atomicfile.WriteFile(path, buf.Bytes()); err != nil {
		return fmt.Errorf("model: writing %s: %w", path, err)
	}
	return nil
}
