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

func loadTemplateFixtures(t *testing.T) (templateMeta, map[string]map[string]templateRender) {
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
	baseTokJSON map[string]json.RawMessage
	baseTokErr  error
)

// familyTokenizer writes a tokenizer folder: the committed Qwen3 tokenizer
// with the families' special tokens added (as the fixture script adds them),
// and a tokenizer_config.json with the family's BOS, EOS and chat template.
func familyTokenizer(t *testing.T, meta templateMeta, family string) *tokenizer.Tokenizer {
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
		baseTokErr = json.Unmarshal(js, &baseTokJSON)
	})
	if baseTokErr != nil {
		t.Fatal(baseTokErr)
	}
	var added []json.RawMessage
	if err := json.Unmarshal(baseTokJSON["added_tokens"], &added); err != nil {
		t.Fatal(err)
	}
	doc := map[string]any{}
	for k, v := range baseTokJSON {
		doc[k] = v
	}
	doc["added_tokens"] = append(added, meta.Specials...)
	dir := t.TempDir()
	js, _ := json.Marshal(doc)
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	fam := meta.Families[family]
	text, err := os.ReadFile(filepath.Join("testdata", "templates", fam.Template))
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{"chat_template": string(text), "bos_token": fam.BOS, "eos_token": fam.EOS}
	cj, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), cj, 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tok
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
					if r != nil && !slices.Equal(got[k], r) {
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
