package model

import (
	"encoding/json"
	"fmt"

	"github.com/kdnative/kdnative/model/gguf"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// loadGGUF reads a llama.cpp GGUF file (architecture llama, qwen2 or
// mistral) into a new model on be: the config.json transformers would build
// from its metadata, and its tensors dequantized to float32 under
// transformers' names, with llama.cpp's Q/K permutation undone. Every
// tensor must be of a type gguf.Dequantize reads; that is checked before any
// is read.
func loadGGUF(path string, be kdrt.Backend, opts ...Option) (*Model, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	hf, err := f.HF()
	if err != nil {
		return nil, err
	}
	if err := f.CheckTypes(); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(hf.Config)
	if err != nil {
		return nil, fmt.Errorf("model: %s: %w", path, err)
	}
	cfg, err := ParseConfig(raw, path+" (config from its metadata)")
	if err != nil {
		return nil, err
	}
	m, err := New(cfg, be, opts...)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]gguf.HFTensor, len(hf.Tensors))
	for _, t := range hf.Tensors {
		byName[t.Name] = t
	}
	used := map[string]bool{}
	var missing []string
	err = m.importTensors(false, func(e ckptEntry) ([]float32, error) {
		t, ok := byName[e.name]
		if !ok {
			missing = append(missing, fmt.Sprintf("%s %s", e.name, kdrt.ShapeString(e.shape)))
			return nil, nil
		}
		used[e.name] = true
		if !kdrt.SameShape(t.Shape, e.shape) {
			return nil, fmt.Errorf("model: GGUF file %s: tensor %s (%s) has shape %s, its metadata implies %s",
				path, t.Source, e.name, kdrt.ShapeString(t.Shape), kdrt.ShapeString(e.shape))
		}
		return f.ReadHF(t)
	})
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("model: GGUF file %s: missing %d weight(s) its metadata requires: %s", path, len(missing), listSome(missing))
	}
	var extra []string
	for _, t := range hf.Tensors {
		if !used[t.Name] && !(cfg.Tied && t.Name == "lm_head.weight") {
			extra = append(extra, t.Source+" ("+t.Name+")")
		}
	}
	if len(extra) > 0 {
		return nil, fmt.Errorf("model: GGUF file %s: %d tensor(s) that a %s model with its metadata does not have: %s",
			path, len(extra), cfg.ModelType, listSome(extra))
	}
	return m, be.Sync()
}
