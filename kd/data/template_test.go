package data

import (
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

type chatCase struct {
	Name      string    `json:"name"`
	Qwen3Only bool      `json:"qwen3_only"`
	Messages  []Message `json:"messages"`
}

type chatRender struct {
	Full   string `json:"full"`
	Prompt string `json:"prompt"`
}

func loadChatFixtures(t *testing.T) ([]chatCase, map[string]map[string]chatRender) {
	t.Helper()
	var cases []chatCase
	b, err := os.ReadFile("testdata/chat_cases.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	renders := map[string]map[string]chatRender{}
	b, err = os.ReadFile("testdata/chat_renders.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &renders); err != nil {
		t.Fatal(err)
	}
	return cases, renders
}

// expectedLoss derives the loss runs from a rendering: what follows each
// "<|im_start|>assistant\n", up to and including its "<|im_end|>\n".
func expectedLoss(full string) []string {
	var runs []string
	const head = "<|im_start|>assistant\n"
	for {
		i := strings.Index(full, head)
		if i < 0 {
			return runs
		}
		full = full[i+len(head):]
		j := strings.Index(full, "<|im_end|>\n")
		runs = append(runs, full[:j+len("<|im_end|>\n")])
		full = full[j+len("<|im_end|>\n"):]
	}
}

// TestChatTemplatesMatchReference renders the cases in
// testdata/chat_cases.json and compares them with what the real Qwen2.5,
// Qwen3 and SmolLM2 chat templates produce (testdata/chat_renders.json, made
// by testdata/render_chat.py with jinja2 as transformers sets it up).
func TestChatTemplatesMatchReference(t *testing.T) {
	cases, renders := loadChatFixtures(t)
	models := []struct {
		name, template string
		think          bool
		kind, system   string
	}{
		// The model's own template, rendered by the Jinja engine.
		{"qwen2.5", qwen25Template, false, TemplateAuto, ""},
		{"smollm2", smolTemplate, false, TemplateAuto, ""},
		{"qwen3", qwen3Template, true, TemplateAuto, ""},
		// The hand-written stand-ins, asked for by name.
		{"qwen2.5", qwen25Template, false, TemplateChatML, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."},
		{"smollm2", smolTemplate, false, TemplateChatML, "You are a helpful AI assistant named SmolLM, trained by Hugging Face"},
		{"qwen3", qwen3Template, true, TemplateQwen3, ""},
	}
	for _, m := range models {
		t.Run(m.name+"/"+m.kind, func(t *testing.T) {
			tok := newFake(m.template, m.think)
			tpl, err := NewTemplate(tok, Options{Template: m.kind})
			if err != nil {
				t.Fatal(err)
			}
			wantKind := m.kind
			if wantKind == TemplateAuto {
				wantKind = TemplateJinja
			}
			if tpl.Name() != wantKind || tpl.SystemPrompt() != m.system {
				t.Fatalf("resolved to %q with system %q, want %q with %q", tpl.Name(), tpl.SystemPrompt(), wantKind, m.system)
			}
			ref := renders[m.name]
			if len(ref) == 0 {
				t.Fatalf("no reference renders for %s", m.name)
			}
			for _, c := range cases {
				want, ok := ref[c.Name]
				if c.Qwen3Only && m.template != qwen3Template {
					// chatml has no place for reasoning_content: refused, not dropped.
					if _, err := tpl.Conversation(c.Messages); err == nil || !strings.Contains(err.Error(), "qwen3") {
						t.Errorf("%s: reasoning_content under chatml: err %v, want a refusal naming qwen3", c.Name, err)
					}
					continue
				}
				if !ok {
					t.Fatalf("%s: no reference render", c.Name)
				}
				ex, err := tpl.Conversation(c.Messages)
				if err != nil {
					t.Fatalf("%s: %v", c.Name, err)
				}
				if got := tok.decode(ex.Tokens); got != want.Full {
					t.Errorf("%s: rendered\n%q\nwant\n%q", c.Name, got, want.Full)
				}
				// Where no data text looks like a special token and no
				// merge crosses the header boundary, the tokens are exactly
				// those of the whole rendered string.
				if c.Name != "special_in_content" && c.Name != "newline_start" {
					if whole := tok.Encode(want.Full); !slices.Equal(ex.Tokens, whole) {
						t.Errorf("%s: tokens differ from the whole string's:\n%v\n%v", c.Name, ex.Tokens, whole)
					}
				}
				// Under the model's template the text is tokenized whole, so a
				// token may straddle the header and the answer (newline_start:
				// "\n\n" across "assistant\n" + "\n…"); it is taken whole, as
				// transformers does (TestRealChatTemplatesMatchTransformers).
				if c.Name != "special_in_content" && !(wantKind == TemplateJinja && c.Name == "newline_start") {
					if got, want := tok.lossRuns(ex), expectedLoss(want.Full); !slices.Equal(got, want) {
						t.Errorf("%s: loss on %q, want %q", c.Name, got, want)
					}
				}
				last := len(c.Messages) - 1
				if want.Prompt != "" {
					ids, err := tpl.GenerationPrompt(c.Messages[:last])
					if err != nil {
						t.Fatal(err)
					}
					if got := tok.decode(ids); got != want.Prompt {
						t.Errorf("%s: generation prompt\n%q\nwant\n%q", c.Name, got, want.Prompt)
					}
					other := Message{Role: "assistant", Content: "something else"}
					p, err := tpl.Pair(c.Messages[:last], c.Messages[last:], []Message{other})
					if err != nil {
						t.Fatal(err)
					}
					if got := tok.decode(cat(p.Prompt, p.Chosen)); got != want.Full {
						t.Errorf("%s: pair prompt+chosen\n%q\nwant\n%q", c.Name, got, want.Full)
					}
					if !strings.HasPrefix(want.Full, tok.decode(p.Prompt)) || !strings.HasSuffix(tok.decode(p.Prompt), "<|im_start|>assistant\n") {
						t.Errorf("%s: pair prompt %q", c.Name, tok.decode(p.Prompt))
					}
				}
			}
		})
	}
}

// TestSpecialTokensInContentStayText checks that a control token typed in
// the data is encoded as ordinary text, so it cannot end a turn.
func TestSpecialTokensInContentStayText(t *testing.T) {
	tok := newFake(plainChatML, false)
	tpl, err := NewTemplate(tok, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := tpl.Conversation([]Message{
		{Role: "user", Content: "x<|im_end|>"},
		{Role: "assistant", Content: "<|im_start|>y"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := cat([]int32{257}, bytesOf("user\nx<|im_end|>"), []int32{258}, bytesOf("\n"),
		[]int32{257}, bytesOf("assistant\n<|im_start|>y"), []int32{258}, bytesOf("\n"))
	if !slices.Equal(ex.Tokens, want) {
		t.Fatalf("tokens\n%v\nwant\n%v", ex.Tokens, want)
	}
	n := 0
	for _, id := range ex.Tokens {
		if id == 257 || id == 258 {
			n++
		}
	}
	if n != 4 {
		t.Fatalf("%d control tokens, want the template's 4", n)
	}
	if got := tok.lossRuns(ex); !slices.Equal(got, []string{"<|im_start|>y<|im_end|>\n"}) {
		t.Fatalf("loss on %q", got)
	}
}

func TestTemplateResolution(t *testing.T) {
	for _, c := range []struct {
		name, template, opt string
		think               bool
		want, errHas        string
	}{
		{"base model", "", TemplateAuto, false, TemplateNone, ""},
		{"chatml", plainChatML, TemplateAuto, false, TemplateJinja, ""},
		{"qwen3", qwen3Template, "", true, TemplateJinja, ""},
		{"llama3", llama3Template, TemplateAuto, false, TemplateJinja, ""},
		{"chatml that does not compile", brokenChatML, TemplateAuto, false, TemplateChatML, ""},
		{"other that does not compile", brokenTemplate, TemplateAuto, false, "", "does not compile"},
		{"forced none", llama3Template, TemplateNone, false, TemplateNone, ""},
		{"forced chatml", "", TemplateChatML, false, TemplateChatML, ""},
		{"forced qwen3", qwen3Template, TemplateQwen3, true, TemplateQwen3, ""},
		{"jinja without a template", "", TemplateJinja, false, "", "has no chat template"},
		{"bad name", "", "jinja2", false, "", "want auto"},
		{"missing file", "", "nope/x.jinja", false, "", "nope/x.jinja"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tpl, err := NewTemplate(newFake(c.template, c.think), Options{Template: c.opt})
			if c.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), c.errHas) {
					t.Fatalf("err %v, want one containing %q", err, c.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tpl.Name() != c.want {
				t.Fatalf("template %s, want %s", tpl.Name(), c.want)
			}
		})
	}
	// ChatML forced on a tokenizer without its tokens.
	tok := newFake("", false)
	delete(tok.specials, "<|im_start|>")
	if _, err := NewTemplate(tok, Options{Template: TemplateChatML}); err == nil || !strings.Contains(err.Error(), "<|im_start|>") {
		t.Fatalf("err %v", err)
	}
	// auto: the hand-written stand-in needs the ChatML tokens too.
	tok.template = brokenChatML
	if _, err := NewTemplate(tok, Options{}); err == nil || !strings.Contains(err.Error(), "<|im_start|>") {
		t.Fatal("auto fell back to chatml without the ChatML tokens")
	}
}

func TestSystemPromptOptions(t *testing.T) {
	msgs := []Message{{Role: "user", Content: "u"}, {Role: "assistant", Content: "a"}}
	for _, kind := range []string{TemplateAuto, TemplateChatML} {
		for _, c := range []struct {
			name string
			opt  Options
			want string
		}{
			{"default", Options{}, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"},
			{"override", Options{SystemPrompt: "Be terse."}, "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"},
			{"none", Options{NoDefaultSystem: true}, "<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"},
		} {
			tok := newFake(qwen25Template, false)
			c.opt.Template = kind
			tpl, err := NewTemplate(tok, c.opt)
			if kind == TemplateAuto && c.opt.NoDefaultSystem {
				// The model's template writes its default: it cannot be left out.
				if err == nil || !strings.Contains(err.Error(), "default system message") {
					t.Errorf("%s/%s: %v", kind, c.name, err)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			ex, err := tpl.Conversation(msgs)
			if err != nil {
				t.Fatal(err)
			}
			if got := tok.decode(ex.Tokens); got != c.want {
				t.Errorf("%s/%s: %q, want %q", kind, c.name, got, c.want)
			}
		}
	}
	if _, err := NewTemplate(newFake("", false), Options{SystemPrompt: "x"}); err == nil {
		t.Error("a system prompt without a chat template was accepted")
	}
}

func TestDefaultSystemPrompt(t *testing.T) {
	for _, c := range []struct{ template, want string }{
		{qwen25Template, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."},
		{smolTemplate, "You are a helpful AI assistant named SmolLM, trained by Hugging Face"},
		{qwen3Template, ""},
		{plainChatML, ""},
		{`{{ '<|im_start|>system\nSay \'hi\'\tplease<|im_end|>\n' }}`, "Say 'hi'\tplease"},
	} {
		if got := DefaultSystemPrompt(c.template); got != c.want {
			t.Errorf("DefaultSystemPrompt = %q, want %q", got, c.want)
		}
	}
}

func TestPlainRendering(t *testing.T) {
	tok := newFake("", false)
	tpl, err := NewTemplate(tok, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := tpl.PromptResponse("Q: 1+1?\nA:", " 2")
	if err != nil {
		t.Fatal(err)
	}
	p, r := bytesOf("Q: 1+1?\nA:"), bytesOf(" 2")
	if want := cat(p, r, []int32{256}); !slices.Equal(ex.Tokens, want) {
		t.Fatalf("tokens %v, want %v", ex.Tokens, want)
	}
	if want := cat(ignore(len(p)), r, []int32{256}); !slices.Equal(ex.Labels, want) {
		t.Fatalf("labels %v, want %v", ex.Labels, want)
	}
	// A merge across the prompt/response boundary: halves encoded apart.
	ex, err = tpl.PromptResponse("a\n", "\nb")
	if err != nil {
		t.Fatal(err)
	}
	if want := cat(bytesOf("a\n"), bytesOf("\nb"), []int32{256}); !slices.Equal(ex.Tokens, want) {
		t.Fatalf("tokens %v, want %v", ex.Tokens, want)
	}
	if _, err := tpl.Conversation([]Message{{Role: "user", Content: "x"}, {Role: "assistant", Content: "y"}}); !errors.Is(err, errNeedsTemplate) {
		t.Fatalf("messages without a template: %v", err)
	}
	// EOS from the tokenizer, and BOS.
	named := eosFake{newFake("", false)}
	named.eos = "<|im_end|>"
	tpl, err = NewTemplate(named, Options{BOS: "<|im_start|>"})
	if err != nil {
		t.Fatal(err)
	}
	ex, _ = tpl.PromptResponse("p", "r")
	if want := []int32{257, 'p', 'r', 258}; !slices.Equal(ex.Tokens, want) {
		t.Fatalf("tokens %v, want %v", ex.Tokens, want)
	}
	if _, err := NewTemplate(tok, Options{EOS: "<nope>"}); err == nil {
		t.Fatal("an unknown EOS was accepted")
	}
	bare := newFake("", false)
	delete(bare.specials, "<|endoftext|>")
	if _, err := NewTemplate(bare, Options{}); err == nil || !strings.Contains(err.Error(), "EOS") {
		t.Fatalf("template none without any EOS: %v", err)
	}
}
