package tokenizer

import (
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

const benchSize = 1 << 20

// benchTexts returns ~1 MB texts: "prose" is the test-plan samples and
// fixture corpus (many languages, emoji, white space, special tokens) in
// turn; "code" is Go source from GOROOT/src/net/http.
func benchTexts(b *testing.B) map[string]string {
	var prose strings.Builder
	var parts []string
	for _, p := range readTestPlansB(b) {
		parts = append(parts, p)
	}
	for _, f := range fixtures(b, "encode") {
		if f.Tok == "gpt2" && len(f.Text) < 400 {
			parts = append(parts, f.Text)
		}
	}
	for prose.Len() < benchSize {
		for _, p := range parts {
			prose.WriteString(p)
			prose.WriteString("\n")
		}
	}
	texts := map[string]string{"prose": prose.String()[:benchSize]}
	files, _ := filepath.Glob(filepath.Join(runtime.GOROOT(), "src", "net", "http", "*.go"))
	sort.Strings(files)
	var code strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		code.Write(data)
		if code.Len() >= benchSize {
			texts["code"] = code.String()[:benchSize]
			break
		}
	}
	return texts
}

func readTestPlansB(b *testing.B) []string {
	data, err := os.ReadFile(testPlansPath)
	if err != nil {
		b.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if s, ok := strings.CutPrefix(line, "Sample: "); ok {
			out = append(out, s)
		}
	}
	return out
}

// BenchmarkEncode reports Encode throughput (MB/s of input) on ~1 MB texts,
// with the per-word cache (steady state) and without it (every word merged).
// "llama2" is Llama 2's SentencePiece vocabulary (llama.cpp's GGUF test
// file): its text is one word between special tokens, as in llama.cpp and
// HF, so the cache never applies and the merge loop is the heap's over the
// whole text.
func BenchmarkEncode(b *testing.B) {
	texts := benchTexts(b)
	for _, name := range []string{"gpt2", "qwen3", "llama2"} {
		var tok *Tokenizer
		if name == "llama2" {
			var err error
			if tok, err = FromGGUF(filepath.Join("testdata", "llamacpp", "ggml-vocab-llama-spm.gguf")); err != nil {
				b.Fatal(err)
			}
		} else {
			tok = named(b, name)
		}
		for _, kind := range []string{"prose", "code"} {
			s, ok := texts[kind]
			if !ok {
				continue
			}
			b.Run(name+"/"+kind, func(b *testing.B) {
				b.SetBytes(int64(len(s)))
				for b.Loop() {
					tok.Encode(s)
				}
			})
			b.Run(name+"/"+kind+"/nocache", func(b *testing.B) {
				tok.model.noCache = true
				defer func() { tok.model.noCache = false }()
				b.SetBytes(int64(len(s)))
				for b.Loop() {
					tok.Encode(s)
				}
			})
		}
	}
}

// BenchmarkEncodeParallel encodes 4 KB chunks from all goroutines at once.
func BenchmarkEncodeParallel(b *testing.B) {
	s := benchTexts(b)["prose"]
	tok := named(b, "qwen3")
	const chunk = 4096
	b.SetBytes(chunk)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			off := (i * chunk) % (len(s) - chunk)
			tok.Encode(s[off : off+chunk])
			i++
		}
	})
}

// BenchmarkDecode reports Decode throughput in MB/s of output text.
func BenchmarkDecode(b *testing.B) {
	s := benchTexts(b)["prose"]
	tok := named(b, "qwen3")
	ids := tok.Encode(s)
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		tok.Decode(ids)
	}
}

// BenchmarkNormalize reports NFC throughput (MB/s of input) on the prose text
// (mostly already NFC: the quick check), on its NFD form (every accent
// composed again), and on 64 KB of alternating marks of two classes (one run
// of non-starters: the canonical-ordering sort).
func BenchmarkNormalize(b *testing.B) {
	prose := benchTexts(b)["prose"]
	marks := "x" + strings.Repeat("\u0301\u0316", 1<<14)
	for _, c := range []struct{ name, s string }{
		{"prose", prose}, {"prose-nfd", formNFD.String(prose)}, {"marks", marks},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.s)))
			for b.Loop() {
				formNFC.String(c.s)
			}
		})
	}
}
