package data

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/kdnative/kdnative/model/tokenizer"
)

// The reference: testdata/template_renders.json, made by
// scripts/fixtures/make_template_fixtures.py with transformers'
// apply_chat_template on the real templates in testdata/templates.

type templateMeta struct {
	Families map[string]struct {
		Template string  `json:"template"`
		BOS      *string `json:"bos_token"`
		EOS      *string `json:"eos_token"`
	} `json:"families"`
	Specials []json.RawMessage `json:"specials"`
	Cases    []struct {
		Name     string `json:"name"`
		Messages []struct {
			Role      string `json:"role"`
			Content   string `json:"content"`
			Reasoning string `json:"reasoning_content"`
		} `json:"messages"`
		GenPrompt bool            `json:"add_generation_prompt"`
		Tools     json.RawMessage `json:"tools"`
		Open      bool            `json:"open"`
	} `json:"cases"`
}

type templateRender struct {
	Error string  `json:"error"`
	Text  string  `json:"text"`
	IDs   []int32 `json:"ids"`
	Loss  [][]int `json:"loss"`
	Open  *struct {
		Text string  `json:"text"`
		IDs  []int32 `json:"ids"`
	} `json:"open"`
}

func loadTemplateFixtures(t testing.TB) (templateMeta, map[string]map[string]templateRender) {
	t.Helper()
	var meta templateMeta
	var renders map[string]map[string]templateRender
	for _, f := range []struct {
		name string
		v    any
	}{{"template_specials.json", &meta}, {"template_renders.json", &renders}} {
		b, err := os.ReadFile(filepath.Join("testdata", f.name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, f.v); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
	}
	return meta, renders
}

var (
	baseTokOnce sync.Once
	baseTok     *tokenizer.Tokenizer
	baseTokErr  error
)

// familyTok is the test tokenizer with one family's chat template, BOS and
// EOS, as model/tokenizer reads them from tokenizer_config.json.
type familyTok struct {
	*tokenizer.Tokenizer
	chat string
	sp   tokenizer.Special
}

func (f familyTok) ChatTemplate() string       { return f.chat }
func (f familyTok) Special() tokenizer.Special { return f.sp }
func (f familyTok) EOSToken() string           { return f.sp.EOSToken }

// familyTokenizer is the committed Qwen3 tokenizer with the families' special
// tokens added (as the fixture script adds them), with the family's BOS, EOS
// and chat template.
func familyTokenizer(t testing.TB, meta templateMeta, family string) familyTok {
	t.Helper()
	baseTokOnce.Do(func() {
		raw, err := os.ReadFile("../../third_party/tokenizer-qwen3/tokenizer.json.zst")
		if err != nil {
			baseTokErr = err
			return
		}
		dec, _ := zstd.NewReader(nil)
		defer dec.Close()
		js, err := dec.DecodeAll(raw, nil)
		if err != nil {
			baseTokErr = err
			return
		}
		var doc map[string]json.RawMessage
		if baseTokErr = json.Unmarshal(js, &doc); baseTokErr != nil {
			return
		}
		var added []json.RawMessage
		if baseTokErr = json.Unmarshal(doc["added_tokens"], &added); baseTokErr != nil {
			return
		}
		doc["added_tokens"], _ = json.Marshal(append(added, meta.Specials...))
		dir, err := os.MkdirTemp("", "kdnative-templates")
		if err != nil {
			baseTokErr = err
			return
		}
		defer os.RemoveAll(dir)
		out, _ := json.Marshal(doc)
		if baseTokErr = os.WriteFile(filepath.Join(dir, "tokenizer.json"), out, 0o644); baseTokErr != nil {
			return
		}
		baseTok, baseTokErr = tokenizer.LoadDir(dir)
	})
	if baseTokErr != nil {
		t.Fatal(baseTokErr)
	}
	fam := meta.Families[family]
	text, err := os.ReadFile(filepath.Join("testdata", "templates", fam.Template))
	if err != nil {
		t.Fatal(err)
	}
	sp := tokenizer.Special{BOS: -1, EOS: -1, PAD: -1}
	for _, f := range []struct {
		s   *string
		id  *int32
		str *string
	}{{fam.BOS, &sp.BOS, &sp.BOSToken}, {fam.EOS, &sp.EOS, &sp.EOSToken}} {
		if f.s == nil {
			continue
		}
		id, ok := baseTok.TokenID(*f.s)
		if !ok {
			t.Fatalf("%s: %q is not in the vocabulary", family, *f.s)
		}
		*f.id, *f.str = id, *f.s
	}
	return familyTok{Tokenizer: baseTok, chat: string(text), sp: sp}
}

// lossRanges returns the token ranges [a, b) of consecutive labels.
func lossRanges(labels []int32) [][]int {
	var out [][]int
	for i := 0; i < len(labels); i++ {
		if labels[i] == IgnoreIndex {
			continue
		}
		j := i
		for j < len(labels) && labels[j] != IgnoreIndex {
			j++
		}
		out = append(out, []int{i, j})
		i = j
	}
	return out
}

// unreferenced is the loss text of the turns transformers gives no
// reference for, read off the templates: Qwen3 writes earlier answers
// without their think block, Phi-3.5 ends only the last answer with
// <|endoftext|>, Mistral Nemo moves the system message to the last user
// turn (and drops it when the conversation ends with an answer).
var unreferenced = map[string]map[int]string{
	"qwen3/multi":               {0: "Blue.<|im_end|>\n"},
	"qwen3/multi_system":        {0: "Blue.<|im_end|>\n"},
	"qwen3/reasoning_multi":     {0: "A1<|im_end|>\n"},
	"qwen3/open_multi":          {0: "Blue.<|im_end|>\n"},
	"mistral-nemo/system":       {0: "4</s>"},
	"mistral-nemo/multi_system": {0: "Blue.</s>", 1: "Green.</s>"},
	"phi-3.5/multi":             {0: "Blue.<|end|>\n"},
	"phi-3.5/multi_system":      {0: "Blue.<|end|>\n"},
	"phi-3.5/reasoning_multi":   {0: "A1<|end|>\n"},
	"phi-3.5/open_multi":        {0: "Blue.<|end|>\n"},
}

// TestRealChatTemplatesMatchTransformers renders every case with the real
// template of each family and compares the text and ids with transformers'
// apply_chat_template, the loss ranges with transformers' assistant mask
// where the template gives one, and the answers cut at the length limit
// with continue_final_message.
func TestRealChatTemplatesMatchTransformers(t *testing.T) {
	meta, renders := loadTemplateFixtures(t)
	if len(meta.Families) < 9 {
		t.Fatalf("%d families in the fixtures", len(meta.Families))
	}
	for family := range meta.Families {
		t.Run(family, func(t *testing.T) {
			tok := familyTokenizer(t, meta, family)
			tpl, err := NewTemplate(tok, Options{MaxLen: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			if tpl.Name() != TemplateJinja || tpl.Note() != "" {
				t.Fatalf("template %s (note %q), want the tokenizer's own, rendered", tpl.Name(), tpl.Note())
			}
			for _, c := range meta.Cases {
				want, ok := renders[family][c.Name]
				if !ok {
					t.Fatalf("%s: no reference", c.Name)
				}
				msgs := make([]Message, len(c.Messages))
				for i, m := range c.Messages {
					msgs[i] = Message{Role: m.Role, Content: m.Content, Reasoning: m.Reasoning}
				}
				if tpl.reasoningPlace(msgs) != nil {
					// transformers drops reasoning_content that the template
					// never reads; kdnative refuses it, naming the message.
					_, err := tpl.conversation(msgs, c.Tools, false)
					if err == nil || !strings.Contains(err.Error(), "has no place for it") {
						t.Errorf("%s: reasoning the template drops: %v", c.Name, err)
					}
					continue
				}
				var ids []int32
				var ex Example
				if c.GenPrompt {
					ids, err = tpl.jinjaGenerationPrompt(msgs, c.Tools)
				} else {
					ex, err = tpl.conversation(msgs, c.Tools, false)
					ids = ex.Tokens
				}
				if want.Error != "" {
					if err == nil || !strings.Contains(err.Error(), want.Error) || !strings.Contains(err.Error(), "chat template") {
						t.Errorf("%s: err %v, want the template's %q", c.Name, err, want.Error)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", c.Name, err)
					continue
				}
				if got := tok.Decode(ids); got != want.Text {
					t.Errorf("%s: rendered\n%q\nwant\n%q", c.Name, got, want.Text)
				}
				if c.Name == "special_in_content" {
					// transformers reads the typed "<|im_end|>" as the control
					// token; kdnative keeps it text.
					if slices.Equal(ids, want.IDs) {
						t.Errorf("%s: special token text in the data became control tokens", c.Name)
					}
					continue
				}
				if !slices.Equal(ids, want.IDs) {
					t.Errorf("%s: ids\n%v\nwant\n%v", c.Name, ids, want.IDs)
				}
				if c.GenPrompt {
					continue
				}
				got := lossRanges(ex.Labels)
				if len(got) != len(want.Loss) {
					t.Errorf("%s: %d loss runs %v, want one per assistant turn %v", c.Name, len(got), got, want.Loss)
					continue
				}
				for k, r := range want.Loss {
					if r == nil {
						// No transformers reference (the template rewrites the
						// turn when it is not the last): the text read off the
						// template by hand.
						w, ok := unreferenced[family+"/"+c.Name][k]
						if g := tok.Decode(ids[got[k][0]:got[k][1]]); !ok || g != w {
							t.Errorf("%s: turn %d: loss on %q, want %q", c.Name, k, g, w)
						}
						continue
					}
					if !slices.Equal(got[k], r) {
						t.Errorf("%s: turn %d: loss on tokens %v (%q), want %v (%q)", c.Name, k, got[k], tok.Decode(ids[got[k][0]:got[k][1]]), r, tok.Decode(ids[r[0]:r[1]]))
					}
				}
				if c.Open {
					op, err := tpl.conversation(msgs, c.Tools, true)
					if err != nil {
						t.Errorf("%s open: %v", c.Name, err)
						continue
					}
					if !slices.Equal(op.Tokens, want.Open.IDs) {
						t.Errorf("%s open: %q, want %q (continue_final_message)", c.Name, tok.Decode(op.Tokens), want.Open.Text)
					}
					runs := lossRanges(op.Labels)
					if len(runs) == 0 || runs[len(runs)-1][1] != len(op.Tokens) {
						t.Errorf("%s open: loss runs %v", c.Name, runs)
					}
				}
			}
		})
	}
}

// TestStopTokens: the token that ends an answer, read from each real
// template's end-of-turn text.
func TestStopTokens(t *testing.T) {
	meta, _ := loadTemplateFixtures(t)
	for family, want := range map[string]string{
		"llama-3.1": "<|eot_id|>", "llama-3.2": "<|eot_id|>", "qwen2.5": "<|im_end|>", "qwen3": "<|im_end|>",
		"mistral-nemo": "</s>", "gemma-2": "<end_of_turn>", "phi-3.5": "<|end|>",
		"deepseek-r1-distill-qwen": "<｜end▁of▁sentence｜>", "smollm2": "<|im_end|>",
	} {
		tok := familyTokenizer(t, meta, family)
		tpl, err := NewTemplate(tok, Options{MaxLen: 64})
		if err != nil {
			t.Fatal(err)
		}
		id, _ := tok.TokenID(want)
		if got := tpl.StopTokens(); !slices.Equal(got, []int32{id}) {
			t.Errorf("%s: stop tokens %v, want %s (%d)", family, got, want, id)
		}
	}
}

// TestTemplateErrorsNameLineAndTemplate: a conversation the template refuses
// stops the load naming the data line, the template file and its reason.
func TestTemplateErrorsNameLineAndTemplate(t *testing.T) {
	meta, _ := loadTemplateFixtures(t)
	tok := familyTokenizer(t, meta, "qwen2.5")
	gemma := filepath.Join("testdata", "templates", "gemma-2.jinja")
	p := writeFile(t, "d.jsonl", `{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}`+"\n"+
		`{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}`+"\n")
	_, _, _, err := LoadSFT(p, tok, Options{MaxLen: 64, Template: gemma})
	if err == nil || !strings.HasPrefix(err.Error(), p+":2: ") || !strings.Contains(err.Error(), "chat template ("+gemma+") refused the conversation: System role not supported") {
		t.Fatalf("err %v", err)
	}
	train, _, rep, err := LoadSFT(p, tok, Options{MaxLen: 64, Template: gemma, OnBadLine: BadLineSkip})
	if err != nil || len(train) != 1 || rep.Skipped != 1 || !strings.Contains(rep.TemplateNote, gemma) {
		t.Fatalf("under skip: %v, %d examples, %+v", err, len(train), rep)
	}
}

// BenchmarkChatTemplate renders and tokenizes a two-turn conversation with
// Qwen2.5's real template (sub-benchmark jinja) and with the hand-written
// chatml (the baseline), with the Qwen3 tokenizer: compare ns/op.
func BenchmarkChatTemplate(b *testing.B) {
	meta, _ := loadTemplateFixtures(b)
	tok := familyTokenizer(b, meta, "qwen2.5")
	msgs := []Message{
		{Role: "user", Content: "Explain why the sky is blue in two sentences."},
		{Role: "assistant", Content: "Sunlight is scattered by air molecules, and blue light, with its shorter wavelength, is scattered most. So the sky looks blue from every direction."},
		{Role: "user", Content: "And at sunset?"},
		{Role: "assistant", Content: "The light crosses more air, so the blue is scattered away before it reaches you and the reds and oranges remain."},
	}
	for _, kind := range []string{TemplateChatML, TemplateJinja} {
		tpl, err := NewTemplate(tok, Options{MaxLen: 4096, Template: kind})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(kind, func(b *testing.B) {
			for b.Loop() {
				if _, err := tpl.Conversation(msgs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
