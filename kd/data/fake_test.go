package data

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeTok is a byte-level toy tokenizer: ids 0–255 are bytes, a few special
// tokens follow, and "\n\n" merges into one token (so that tokenization at
// piece boundaries can differ from whole-string tokenization, as with BPE).
type fakeTok struct {
	specials map[string]int32
	template string
	eos      string // EOSToken when non-empty
}

const mergedNL = 300 // "\n\n"

func newFake(template string, think bool) *fakeTok {
	f := &fakeTok{template: template, specials: map[string]int32{
		"<|endoftext|>": 256, "<|im_start|>": 257, "<|im_end|>": 258,
	}}
	if think {
		f.specials["<think>"] = 259
		f.specials["</think>"] = 260
	}
	return f
}

func (f *fakeTok) EncodeOrdinary(s string) []int32 {
	// <think> and </think> are added tokens that are not special (as in
	// Qwen3's tokenizer): plain text encoding still recognizes them.
	for _, tok := range []string{"<think>", "</think>"} {
		if id, ok := f.specials[tok]; ok {
			if i := strings.Index(s, tok); i >= 0 {
				return append(append(f.EncodeOrdinary(s[:i]), id), f.EncodeOrdinary(s[i+len(tok):])...)
			}
		}
	}
	out := make([]int32, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' && i+1 < len(s) && s[i+1] == '\n' {
			out = append(out, mergedNL)
			i++
			continue
		}
		out = append(out, int32(s[i]))
	}
	return out
}

func (f *fakeTok) Encode(s string) []int32 {
	var out []int32
	for len(s) > 0 {
		at, name := -1, ""
		for tok := range f.specials {
			if i := strings.Index(s, tok); i >= 0 && (at < 0 || i < at || (i == at && len(tok) > len(name))) {
				at, name = i, tok
			}
		}
		if at < 0 {
			return append(out, f.EncodeOrdinary(s)...)
		}
		out = append(out, f.EncodeOrdinary(s[:at])...)
		out = append(out, f.specials[name])
		s = s[at+len(name):]
	}
	return out
}

func (f *fakeTok) TokenID(tok string) (int32, bool) {
	id, ok := f.specials[tok]
	return id, ok
}

func (f *fakeTok) ChatTemplate() string { return f.template }

func (f *fakeTok) decode(ids []int32) string {
	var b strings.Builder
	for _, id := range ids {
		switch {
		case id >= 0 && id < 256:
			b.WriteByte(byte(id))
		case id == mergedNL:
			b.WriteString("\n\n")
		default:
			found := false
			for s, v := range f.specials {
				if v == id {
					b.WriteString(s)
					found = true
				}
			}
			if !found {
				b.WriteString("<?>")
			}
		}
	}
	return b.String()
}

// eosFake is a fakeTok that names its EOS token.
type eosFake struct{ *fakeTok }

func (e eosFake) EOSToken() string { return e.eos }

// lossRuns decodes each run of consecutive labelled tokens.
func (f *fakeTok) lossRuns(ex Example) []string {
	var runs []string
	var cur []int32
	for i, l := range ex.Labels {
		if l != IgnoreIndex {
			if l != ex.Tokens[i] {
				return []string{"label differs from token"}
			}
			cur = append(cur, l)
			continue
		}
		if cur != nil {
			runs = append(runs, f.decode(cur))
			cur = nil
		}
	}
	if cur != nil {
		runs = append(runs, f.decode(cur))
	}
	return runs
}

// Chat templates: the real ones of Qwen2.5, SmolLM2 and Qwen3 (see
// testdata/templates/SOURCES.md), a plain ChatML one without a default system
// message, and a short Llama 3 one.
var (
	qwen25Template = readTemplate("qwen2.5.jinja")
	smolTemplate   = readTemplate("smollm2.jinja")
	qwen3Template  = readTemplate("qwen3.jinja")
)

const (
	// A plain ChatML template without a default system message.
	plainChatML = `{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`
	// Llama 3's layout, without the date preamble.
	llama3Template = `{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}`
	// A template the Jinja engine cannot compile (an unclosed block).
	brokenTemplate = `{% for message in messages %}{{ message['content'] }}`
	// A ChatML template the engine cannot compile: the hand-written chatml
	// stands in.
	brokenChatML = `{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}`
)

func readTemplate(name string) string {
	b, err := os.ReadFile(filepath.Join("testdata", "templates", name))
	if err != nil {
		panic(err)
	}
	return string(b)
}

// writeFile writes a data file in a fresh temporary folder.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func bytesOf(s string) []int32 {
	out := make([]int32, len(s))
	for i := 0; i < len(s); i++ {
		out[i] = int32(s[i])
	}
	return out
}

func ignore(n int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = IgnoreIndex
	}
	return out
}

func cat(parts ...[]int32) []int32 {
	var out []int32
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
