package data

import (
	"fmt"
	"os"
	"path/filepath"
)

// ExampleLoadSFT loads a two-line chat file with a tokenizer that carries
// SmolLM2's chat template (rendered as transformers renders it, its default
// system message included), holds one example out for validation and serves
// a training batch.
func ExampleLoadSFT() {
	dir, _ := os.MkdirTemp("", "kdnative-data")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "train.jsonl")
	os.WriteFile(path, []byte(`{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
{"prompt": "2+2?", "response": "4"}
`), 0o644)

	tok := newFake(smolTemplate, false) // stands in for the model's tokenizer
	train, val, rep, err := LoadSFT(path, tok, Options{MaxLen: 512, ValFraction: 0.5, Seed: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rep.Template, rep.Examples, len(train), len(val))
	fmt.Printf("system prompt: %q\n", rep.SystemPrompt)

	loader, _ := NewLoader(train, LoaderConfig{Seed: 1, PadID: 256})
	b, _ := loader.Next(4)
	fmt.Println(b.B, b.T == len(train[0].Tokens))
	// Output:
	// jinja 2 1 1
	// system prompt: ""
	// 4 true
}
