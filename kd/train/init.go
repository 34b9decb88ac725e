package train

import (
	"fmt"
	"path/filepath"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/gguf"
	"github.com/kdnative/kdnative/model/tokenizer"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// InitModel writes a new model folder: the architecture of configPath with
// random weights from seed (model.InitRandom), and the tokenizer files of
// tokenizerDir, ready to be a recipe's student.
func InitModel(be kdrt.Backend, configPath, tokenizerDir string, seed uint64, out string) error {
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
	if err := m.SaveDir(out, 0); err != nil {
		return err
	}
	return CopyTokenizer(tokenizerDir, out)
}

// CopyTokenizer copies the tokenizer files that exist in src into dst. A
// GGUF file as src gets the tokenizer files its metadata describes.
func CopyTokenizer(src, dst string) error {
	if gguf.IsGGUFPath(src) {
		return tokenizer.WriteGGUFFiles(src, dst)
	}
	n := 0
	for _, name := range tokenizerFiles {
		err := copyFile(filepath.Join(src, name), filepath.Join(dst, name))
		if err == nil {
			n++
		} else if !isNotExist(err) {
			return fmt.Errorf("copying %s: %w", name, err)
		}
	}
	if n == 0 {
		return fmt.Errorf("no tokenizer files (tokenizer.json, …) in %s", src)
	}
	return nil
}
