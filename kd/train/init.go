package train

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/gguf"
	"github.com/kdnative/kdnative/model/tokenizer"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// InitModel writes a new model folder: the architecture of configPath with
// random weights from seed (model.InitRandom), and the tokenizer files of
// tokenizerDir (chat template and generation config included), ready to be a
// recipe's student. A folder out that holds anything is refused unless
// overwrite is set; then the model and tokenizer files in it are replaced
// (other files are left), once the new model is ready to be written.
func InitModel(be kdrt.Backend, configPath, tokenizerDir string, seed uint64, out string, overwrite bool) error {
	if !overwrite {
		if err := refuseUsed(out, "init-model", "add --overwrite to replace the model in it, or choose another folder"); err != nil {
			return err
		}
	}
	cfg, err := model.LoadConfig(configPath)
	if err != nil {
		return err
	}
	m, err := model.New(cfg, be)
	if err != nil {
		return err
	}
	if err := m.InitRandom(seed); err != nil {
		return err
	}
	if n := countTokenizerFiles(tokenizerDir); n == 0 && !gguf.IsGGUFPath(tokenizerDir) {
		return fmt.Errorf("no tokenizer files (tokenizer.json, …) in %s", tokenizerDir)
	}
	if overwrite {
		if err := removeModelFiles(out); err != nil {
			return err
		}
	}
	if err := m.SaveDir(out, 0); err != nil {
		return err
	}
	return CopyTokenizer(tokenizerDir, out)
}

// CopyTokenizer copies the tokenizer files and folders (tokenizerFiles,
// tokenizerDirs) that exist in src into dst, each file atomically. A GGUF file
// as src gets the tokenizer files its metadata describes.
func CopyTokenizer(src, dst string) error {
	if gguf.IsGGUFPath(src) {
		return tokenizer.WriteGGUFFiles(src, dst)
	}
	if n := countTokenizerFiles(src); n == 0 {
		return fmt.Errorf("no tokenizer files (tokenizer.json, …) in %s", src)
	}
	for _, name := range tokenizerFiles {
		err := copyFile(filepath.Join(src, name), filepath.Join(dst, name))
		if err != nil && !isNotExist(err) {
			return fmt.Errorf("copying %s: %w", name, err)
		}
	}
	for _, name := range tokenizerDirs {
		entries, err := os.ReadDir(filepath.Join(src, name))
		if isNotExist(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("copying %s: %w", name, err)
		}
		if err := os.MkdirAll(filepath.Join(dst, name), 0o755); err != nil {
			return err
		}
		for _, e := range entries {
			if e.Type().IsRegular() {
				if err := copyFile(filepath.Join(src, name, e.Name()), filepath.Join(dst, name, e.Name())); err != nil {
					return fmt.Errorf("copying %s/%s: %w", name, e.Name(), err)
				}
			}
		}
	}
	return nil
}

// countTokenizerFiles counts the tokenizer files src holds.
func countTokenizerFiles(src string) int {
	n := 0
	for _, name := range tokenizerFiles {
		if fi, err := os.Stat(filepath.Join(src, name)); err == nil && fi.Mode().IsRegular() {
			n++
		}
	}
	return n
}
