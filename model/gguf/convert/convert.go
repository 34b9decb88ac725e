// Package convert turns a GGUF file (llama.cpp's format) into a Hugging Face
// model folder that transformers loads: config.json, model.safetensors
// (float32, the GGUF's quantized weights dequantized), tokenizer.json,
// tokenizer_config.json, generation_config.json and chat_template.jinja.
// transformers itself can read a GGUF but cannot save a model it loaded from
// one; this is `kdnative convert`.
package convert

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kdnative/kdnative/internal/atomicfile"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/gguf"
	"github.com/kdnative/kdnative/model/tokenizer"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// Config is what to convert.
type Config struct {
	In  string // the .gguf file
	Out string // the folder to write; it must not exist or be empty
	// MaxShardBytes splits model.safetensors above this size (≤ 0: 5 GB,
	// transformers' default).
	MaxShardBytes int64
}

// Run converts c.In into c.Out on be (the weights pass through be once).
// Everything is checked — the architecture, every tensor type, the
// tokenizer — before anything is written, and the folder is written under a
// temporary name beside c.Out and renamed into place, so a failure leaves no
// half-written folder.
func Run(c Config, be kdrt.Backend) error {
	if !gguf.IsGGUFPath(c.In) {
		return fmt.Errorf("convert: %s is not a .gguf file", c.In)
	}
	if entries, err := os.ReadDir(c.Out); err == nil && len(entries) > 0 {
		return fmt.Errorf("convert: %s exists and is not empty", c.Out)
	} else if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("convert: %w", err)
	}
	f, err := gguf.Open(c.In)
	if err != nil {
		return err
	}
	defer f.Close()
	files, err := tokenizer.GGUFFiles(f)
	if err != nil {
		return err
	}
	if _, err := tokenizer.FromGGUFFile(f); err != nil {
		return err
	}
	m, err := model.LoadDir(c.In, be)
	if err != nil {
		return err
	}
	gen := map[string]any{"_from_model_config": true}
	for _, k := range []string{"bos_token_id", "eos_token_id", "pad_token_id"} {
		if v, ok := m.Config.Raw[k]; ok {
			gen[k] = v
		}
	}
	js, err := json.MarshalIndent(gen, "", "  ")
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	files["generation_config.json"] = append(js, '\n')

	parent := filepath.Dir(filepath.Clean(c.Out))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(c.Out)+".tmp*")
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	if err := m.SaveDir(tmp, c.MaxShardBytes); err != nil {
		return err
	}
	for name, data := range files {
		if err := writeSynced(filepath.Join(tmp, name), data); err != nil {
			return fmt.Errorf("convert: %w", err)
		}
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	os.Remove(c.Out) // an empty folder given as the destination
	if err := os.Rename(tmp, c.Out); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	if err := atomicfile.SyncDir(parent); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	return nil
}

// writeSynced writes a new file and syncs it, so that the folder renamed
// into place holds whole files.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
