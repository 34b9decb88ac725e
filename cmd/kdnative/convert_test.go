package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `kdnative convert` is registered, checks its arguments, and refuses a GGUF
// without tokenizer metadata before writing anything (model/gguf/convert
// tests the conversion itself).
func TestConvertCommand(t *testing.T) {
	if _, _, err := runApp(t, "--device", "cpu", "convert", "only-one-arg.gguf"); err == nil ||
		!strings.Contains(err.Error(), "an input .gguf file and an output folder") {
		t.Errorf("one argument: %v", err)
	}
	out := filepath.Join(t.TempDir(), "out")
	in := filepath.Join("..", "..", "model", "gguf", "testdata", "tiny_llama_gqa.gguf")
	_, _, err := runApp(t, "--device", "cpu", "convert", in, out)
	if err == nil || !strings.Contains(err.Error(), "tiny_llama_gqa.gguf") || !strings.Contains(err.Error(), "tokenizer.ggml.model") {
		t.Errorf("a GGUF without a tokenizer: %v", err)
	}
	if _, serr := os.Stat(out); !os.IsNotExist(serr) {
		t.Errorf("the failed conversion left %s", out)
	}
	if _, _, err := runApp(t, "--device", "cpu", "convert", "model.safetensors", out); err == nil || !strings.Contains(err.Error(), "not a .gguf file") {
		t.Errorf("a non-GGUF input: %v", err)
	}
}
