package data

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
)

// errNeedsTemplate marks chat data met without a chat template: a
// configuration problem, so it stops the run whatever OnBadLine says.
var errNeedsTemplate = errors.New("chat data needs a chat template")

// errNoEOS marks a text line met when no EOS token is known: a configuration
// problem too.
var errNoEOS = errors.New("text lines end with an EOS token, and the tokenizer names none: set the EOS token")

// Template renders text examples into tokens and labels (see the package
// documentation for the formats and the loss mask).
type Template struct {
	kind   string // TemplateJinja, TemplateChatML, TemplateQwen3 or TemplateNone
	asked  bool   // kind was named in Options, not resolved by auto
	tok    Tokenizer
	system string // inserted when a conversation has no system message first

	chat     *chatTemplate // the compiled chat template (TemplateJinja)
	fallback string        // why the hand-written template stands in for the model's

	imStart, imEnd int32
	thinkOpen      []int32 // "<think>" and "</think>" (qwen3)
	thinkClose     []int32

	eos, bos         int32
	eosName, bosName string
	hasEOS, hasBOS   bool
}

// NewTemplate resolves opt.Template ("auto" or "" included) against the
// tokenizer and returns the renderer. It reads Template, SystemPrompt,
// NoDefaultSystem, EOS, BOS and TemplateDate from opt.
//
// Under auto a tokenizer with a chat template renders it (TemplateJinja);
// the hand-written chatml or qwen3 stands in only for a ChatML template the
// Jinja engine cannot compile, and Note says so.
func NewTemplate(tok Tokenizer, opt Options) (*Template, error) {
	if tok == nil {
		return nil, errors.New("data: text data needs a tokenizer")
	}
	chat := tok.ChatTemplate()
	start, hasStart := tok.TokenID("<|im_start|>")
	end, hasEnd := tok.TokenID("<|im_end|>")
	t := &Template{tok: tok, imStart: start, imEnd: end}
	eosName := opt.EOS
	if eosName == "" {
		if et, ok := tok.(EOSTokenizer); ok {
			eosName = et.EOSToken()
		}
	}
	date := opt.TemplateDate
	if date.IsZero() {
		date = DefaultTemplateDate
	}
	switch {
	case opt.Template == "" || opt.Template == TemplateAuto:
		if chat == "" {
			t.kind = TemplateNone
			break
		}
		c, err := compileChatTemplate(chat, templateSourceOf(tok), tok, eosName, date)
		if err == nil {
			t.kind, t.chat = TemplateJinja, c
			break
		}
		if t.kind = autoKind(chat); t.kind == "" {
			return nil, fmt.Errorf("data: %v", err)
		}
		t.fallback = err.Error()
	case opt.Template == TemplateJinja:
		if chat == "" {
			return nil, errors.New("data: template jinja: the tokenizer has no chat template (no chat_template.jinja, no chat_template in tokenizer_config.json)")
		}
		c, err := compileChatTemplate(chat, templateSourceOf(tok), tok, eosName, date)
		if err != nil {
			return nil, fmt.Errorf("data: %v", err)
		}
		t.kind, t.chat, t.asked = TemplateJinja, c, true
	case strings.HasSuffix(opt.Template, ".jinja"):
		text, err := os.ReadFile(opt.Template)
		if err != nil {
			return nil, fmt.Errorf("data: chat template: %w", err)
		}
		c, err := compileChatTemplate(string(text), opt.Template, tok, eosName, date)
		if err != nil {
			return nil, fmt.Errorf("data: %v", err)
		}
		t.kind, t.chat, t.asked = TemplateJinja, c, true
	case opt.Template == TemplateChatML || opt.Template == TemplateQwen3 || opt.Template == TemplateNone:
		t.kind, t.asked = opt.Template, true
	default:
		return nil, fmt.Errorf("data: template %q: want auto, jinja, a .jinja file, chatml, qwen3 or none", opt.Template)
	}
	switch t.kind {
	case TemplateJinja:
		switch {
		case opt.NoDefaultSystem && opt.SystemPrompt != "":
			return nil, errors.New("data: both a system prompt and no default system prompt: choose one")
		case opt.NoDefaultSystem && DefaultSystemPrompt(chat) != "":
			return nil, errors.New("data: no default system prompt: the chat template writes its own default system message when a conversation has none; give the conversations a system message, or use template chatml")
		case opt.SystemPrompt != "":
			t.system = opt.SystemPrompt
		}
	case TemplateChatML, TemplateQwen3:
		if !hasStart || !hasEnd {
			return nil, fmt.Errorf("data: template %s needs the tokens <|im_start|> and <|im_end|>, which the tokenizer lacks", t.kind)
		}
		switch {
		case opt.NoDefaultSystem:
			if opt.SystemPrompt != "" {
				return nil, errors.New("data: both a system prompt and no default system prompt: choose one")
			}
		case opt.SystemPrompt != "":
			t.system = opt.SystemPrompt
		case t.kind == TemplateChatML:
			t.system = DefaultSystemPrompt(chat)
		}
		if t.kind == TemplateQwen3 {
			t.thinkOpen = t.special("<think>")
			t.thinkClose = t.special("</think>")
		}
	default:
		if opt.SystemPrompt != "" {
			return nil, errors.New("data: a system prompt needs a chat template (template is none)")
		}
	}

	if opt.BOS != "" {
		id, ok := tok.TokenID(opt.BOS)
		if !ok {
			return nil, fmt.Errorf("data: BOS token %q is not in the vocabulary", opt.BOS)
		}
		t.bos, t.bosName, t.hasBOS = id, opt.BOS, true
	}
	if eosName != "" {
		id, ok := tok.TokenID(eosName)
		if !ok {
			return nil, fmt.Errorf("data: EOS token %q is not in the vocabulary", eosName)
		}
		t.eos, t.eosName, t.hasEOS = id, eosName, true
	} else {
		for _, name := range fallbackEOS {
			if id, ok := tok.TokenID(name); ok {
				t.eos, t.eosName, t.hasEOS = id, name, true
				break
			}
		}
	}
	if t.kind == TemplateNone && !t.hasEOS {
		return nil, errors.New("data: template none appends an EOS token after each response, and the tokenizer names none: set the EOS token")
	}
	return t, nil
}

// AutoTemplate is what template "auto" resolves to for a tokenizer's chat
// template: "none" without one, "jinja" for one the Jinja engine compiles,
// else "chatml" or "qwen3" for a ChatML template (the hand-written stand-in)
// and "" for one kdnative cannot render.
func AutoTemplate(chat string) string {
	if chat == "" {
		return TemplateNone
	}
	if _, err := compileJinja(chat); err == nil {
		return TemplateJinja
	}
	return autoKind(chat)
}

func autoKind(chat string) string {
	switch {
	case chat == "":
		return TemplateNone
	case strings.Contains(chat, "<|im_start|>"):
		if strings.Contains(chat, "reasoning_content") && strings.Contains(chat, "</think>") {
			return TemplateQwen3
		}
		return TemplateChatML
	}
	return ""
}

// Note says where the rendering may surprise: the hand-written template
// standing in for a chat template the Jinja engine cannot compile, a
// template asked for that is not the tokenizer's own, or plain text because
// the tokenizer has no chat template at all (a model folder that lost its
// chat_template.jinja looks like a base model). "" when the template is the
// tokenizer's own, rendered as transformers renders it.
func (t *Template) Note() string {
	chat := t.tok.ChatTemplate()
	own := autoKind(chat)
	switch {
	case t.fallback != "":
		return fmt.Sprintf("kdnative's hand-written %s in place of the tokenizer's chat template, which cannot be rendered: %s", t.kind, t.fallback)
	case !t.asked && own == TemplateNone:
		return "the tokenizer has no chat template — no chat_template.jinja, no chat_template in tokenizer_config.json — so the text is rendered plain"
	case !t.asked:
		return ""
	case t.kind == TemplateJinja && t.chat.source == templateSourceOf(t.tok):
		return ""
	case t.kind == TemplateJinja:
		if chat == "" {
			return fmt.Sprintf("chat template %s as asked; the tokenizer has none of its own", t.chat.source)
		}
		return fmt.Sprintf("chat template %s as asked, not the tokenizer's own", t.chat.source)
	case own == TemplateNone && t.kind != TemplateNone:
		return fmt.Sprintf("template %s as asked, but the tokenizer has no chat template — no chat_template.jinja, no chat_template in tokenizer_config.json — so the model's folder alone will not render this format", t.kind)
	case own == t.kind || own == TemplateNone:
		return ""
	case own == "":
		return fmt.Sprintf("template %s as asked, but the tokenizer's chat template is not ChatML: check that the model was trained on %s", t.kind, t.kind)
	}
	return fmt.Sprintf("template %s as asked, but the tokenizer's own chat template is %s", t.kind, own)
}

// ChatTemplateSourcer is implemented by tokenizers that know which file
// their chat template came from, so that errors can name it.
type ChatTemplateSourcer interface {
	ChatTemplateSource() string
}

// templateSourceOf names the tokenizer's chat template in messages.
func templateSourceOf(tok Tokenizer) string {
	if s, ok := tok.(ChatTemplateSourcer); ok && s.ChatTemplateSource() != "" {
		return s.ChatTemplateSource()
	}
	return "the tokenizer's chat_template.jinja or tokenizer_config.json chat_template"
}

// Name is the resolved template: "jinja" (the model's chat template),
// "chatml", "qwen3" or "none".
func (t *Template) Name() string { return t.kind }

// SystemPrompt is the system message inserted into conversations without one.
func (t *Template) SystemPrompt() string { return t.system }

// EOS is the token appended to plain-text examples, "" when unknown.
func (t *Template) EOS() string { return t.eosName }

// special is a template token: its id when the vocabulary has it, else its
// text encoded as the tokenizer would encode it inside a template.
func (t *Template) special(s string) []int32 {
	if id, ok := t.tok.TokenID(s); ok {
		return []int32{id}
	}
	return t.tok.Encode(s)
}

// defaultSystemRE finds the default system message a ChatML template writes
// when the conversation has none: a string literal holding
// "<|im_start|>system\n…<|im_end|>" with no expression inside (Qwen2.5,
// SmolLM2). The newline is Jinja's escape or a literal newline.
var defaultSystemRE = regexp.MustCompile(`<\|im_start\|>system(?:\\n|\n)((?:[^'"\\{}]|\\.)+)<\|im_end\|>`)

// DefaultSystemPrompt returns the default system message of a ChatML chat
// template (tokenizer_config.json's chat_template), "" when it has none.
func DefaultSystemPrompt(chatTemplate string) string {
	m := defaultSystemRE.FindStringSubmatch(chatTemplate)
	if m == nil {
		return ""
	}
	r := strings.NewReplacer(`\n`, "\n", `\t`, "\t", `\'`, "'", `\"`, `"`, `\\`, `\`)
	return r.Replace(m[1])
}

// builder accumulates tokens and labels.
type builder struct{ ex Example }

func (b *builder) add(ids []int32, loss bool) {
	b.ex.Tokens = append(b.ex.Tokens, ids...)
	for _, id := range ids {
		if loss {
			b.ex.Labels = append(b.ex.Labels, id)
		} else {
			b.ex.Labels = append(b.ex.Labels, IgnoreIndex)
		}
	}
}

func (b *builder) one(id int32, loss bool) { b.add([]int32{id}, loss) }

func (b *builder) len() int { return len(b.ex.Tokens) }

// join encodes head+body as one piece of plain text and splits the tokens
// after head when the joint encoding starts with head's own tokens; when a
// token crosses the boundary, the halves are encoded apart.
func (t *Template) join(head, body string) (h, b []int32) {
	h = t.tok.EncodeOrdinary(head)
	whole := t.tok.EncodeOrdinary(head + body)
	if len(whole) >= len(h) && slices.Equal(whole[:len(h)], h) {
		return h, whole[len(h):]
	}
	return h, t.tok.EncodeOrdinary(body)
}

func (t *Template) begin() *builder {
	b := &builder{}
	if t.hasBOS {
		b.one(t.bos, false)
	}
	return b
}

// Conversation renders a conversation for SFT, with the loss on the
// assistant turns. It needs a chat template and at least one assistant turn,
// and no assistant turn may be empty.
func (t *Template) Conversation(msgs []Message) (Example, error) {
	return t.conversation(msgs, nil, false)
}

// conversation is Conversation with the line's tools (for the chat
// template); open leaves a final assistant turn without its end-of-turn
// text (<|im_end|> and "\n" under chatml): the answer stopped at the length
// limit, and the model must not learn that it ends there.
func (t *Template) conversation(msgs []Message, tools json.RawMessage, open bool) (Example, error) {
	seen := false
	for i, m := range msgs {
		if m.Role == "assistant" {
			seen = true
			if strings.TrimSpace(m.Content) == "" && strings.TrimSpace(m.Reasoning) == "" {
				return Example{}, fmt.Errorf("messages[%d] (assistant) is empty", i)
			}
		}
	}
	if !seen {
		return Example{}, errors.New("no assistant message: nothing to learn")
	}
	if t.kind == TemplateJinja {
		return t.jinjaConversation(msgs, tools, open)
	}
	if len(tools) > 0 {
		return Example{}, fmt.Errorf(`"tools" needs the model's own chat template (template %s has no place for them)`, t.kind)
	}
	b, _, err := t.render(msgs, false, open)
	if err != nil {
		return Example{}, err
	}
	return b.ex, nil
}

// GenerationPrompt renders a conversation followed by the assistant header
// ("<|im_start|>assistant\n" under ChatML), for sampling a reply
// (apply_chat_template with add_generation_prompt). Under template none it
// is the messages' contents concatenated, as plain text.
func (t *Template) GenerationPrompt(msgs []Message) ([]int32, error) {
	if t.kind == TemplateJinja {
		return t.jinjaGenerationPrompt(msgs, nil)
	}
	if t.kind == TemplateNone {
		b := t.begin()
		var s strings.Builder
		for _, m := range msgs {
			s.WriteString(m.Content)
		}
		b.add(t.tok.EncodeOrdinary(s.String()), false)
		return b.ex.Tokens, nil
	}
	b, _, err := t.render(msgs, true, false)
	if err != nil {
		return nil, err
	}
	return b.ex.Tokens, nil
}

// PromptResponse renders a prompt and its response: under a chat template
// the conversation [system (default), user: prompt, assistant: response];
// under none prompt + response + EOS with the loss on response and EOS.
func (t *Template) PromptResponse(prompt, response string) (Example, error) {
	return t.promptResponse(prompt, response, false)
}

// promptResponse is PromptResponse; open leaves out the end-of-turn or EOS
// token after the response (it stopped at the length limit).
func (t *Template) promptResponse(prompt, response string, open bool) (Example, error) {
	if strings.TrimSpace(response) == "" {
		return Example{}, errors.New(`"response" is empty`)
	}
	if t.kind != TemplateNone {
		return t.conversation([]Message{{Role: "user", Content: prompt}, {Role: "assistant", Content: response}}, nil, open)
	}
	b := t.begin()
	p, r := t.join(prompt, response)
	b.add(p, false)
	b.add(r, true)
	if !open {
		b.one(t.eos, true)
	}
	return b.ex, nil
}

// Text renders a plain text, special tokens in it recognized, followed by
// EOS, with the loss on every token.
func (t *Template) Text(s string) (Example, error) { return t.text(s, false) }

// text is Text; open leaves out the EOS (the text stopped at a length limit).
func (t *Template) text(s string, open bool) (Example, error) {
	if !t.hasEOS {
		return Example{}, errNoEOS
	}
	b := t.begin()
	b.add(t.tok.Encode(s), true)
	if !open {
		b.one(t.eos, true)
	}
	return b.ex, nil
}

// Pair renders a preference pair. Prompt, chosen and rejected are each a
// string or a conversation (chosen and rejected: assistant turns only).
func (t *Template) Pair(prompt, chosen, rejected []Message) (Pair, error) {
	if t.kind == TemplateNone {
		return Pair{}, fmt.Errorf("%w (template is none)", errNeedsTemplate)
	}
	if t.kind == TemplateJinja {
		for _, side := range []struct {
			name string
			msgs []Message
		}{{"chosen", chosen}, {"rejected", rejected}} {
			if len(side.msgs) == 0 {
				return Pair{}, fmt.Errorf("%s: no response", side.name)
			}
			for i, m := range side.msgs {
				if m.Role != "assistant" {
					return Pair{}, fmt.Errorf("%s: message %d is %q, want assistant turns only", side.name, i, m.Role)
				}
				if strings.TrimSpace(m.Content) == "" && strings.TrimSpace(m.Reasoning) == "" {
					return Pair{}, fmt.Errorf("%s: message %d (assistant) is empty", side.name, i)
				}
			}
		}
		return t.jinjaPair(prompt, chosen, rejected)
	}
	p, c, err := t.completion(prompt, chosen)
	if err != nil {
		return Pair{}, fmt.Errorf("chosen: %w", err)
	}
	p2, r, err := t.completion(prompt, rejected)
	if err != nil {
		return Pair{}, fmt.Errorf("rejected: %w", err)
	}
	if !slices.Equal(p, p2) {
		return Pair{}, errors.New("the prompt renders differently before chosen and before rejected")
	}
	return Pair{Prompt: p, Chosen: c, Rejected: r}, nil
}

// PairText renders a plain-text preference pair under template none: prompt,
// then each response + EOS.
func (t *Template) PairText(prompt, chosen, rejected string) (Pair, error) {
	if t.kind != TemplateNone {
		u := []Message{{Role: "user", Content: prompt}}
		return t.Pair(u, []Message{{Role: "assistant", Content: chosen}}, []Message{{Role: "assistant", Content: rejected}})
	}
	if strings.TrimSpace(chosen) == "" || strings.TrimSpace(rejected) == "" {
		return Pair{}, errors.New("an empty response")
	}
	b := t.begin()
	pre := b.ex.Tokens
	p, c := t.join(prompt, chosen)
	_, r := t.join(prompt, rejected)
	pr := append(append([]int32{}, pre...), p...)
	return Pair{Prompt: pr, Chosen: append(c, t.eos), Rejected: append(r, t.eos)}, nil
}

// completion renders prompt + resp and splits it after the header of the
// first response turn.
func (t *Template) completion(prompt, resp []Message) (p, r []int32, err error) {
	for i, m := range resp {
		if m.Role != "assistant" {
			return nil, nil, fmt.Errorf("message %d is %q, want assistant turns only", i, m.Role)
		}
		if strings.TrimSpace(m.Content) == "" && strings.TrimSpace(m.Reasoning) == "" {
			return nil, nil, fmt.Errorf("message %d (assistant) is empty", i)
		}
	}
	if len(resp) == 0 {
		return nil, nil, errors.New("no response")
	}
	all := append(append([]Message{}, prompt...), resp...)
	b, starts, err := t.render(all, false, false)
	if err != nil {
		return nil, nil, err
	}
	cut := starts[len(starts)-len(resp)]
	return b.ex.Tokens[:cut], b.ex.Tokens[cut:], nil
}

// render writes a conversation in the chat template. For an assistant
// message, starts[i] is the token offset where its generated part begins
// (after "<|im_start|>assistant\n"); for others, where its turn begins. open
// leaves a final assistant turn unclosed (see conversation).
func (t *Template) render(msgs []Message, genPrompt, open bool) (*builder, []int, error) {
	if t.kind == TemplateNone {
		return nil, nil, fmt.Errorf("%w (template is none)", errNeedsTemplate)
	}
	b := t.begin()
	if t.system != "" && (len(msgs) == 0 || msgs[0].Role != "system") {
		t.plainTurn(b, "system", t.system)
	}
	lastQuery := len(msgs) - 1
	for i := len(msgs) - 1; i >= 0; i-- {
		c := msgs[i].Content
		if msgs[i].Role == "user" && !(strings.HasPrefix(c, "<tool_response>") && strings.HasSuffix(c, "</tool_response>")) {
			lastQuery = i
			break
		}
	}
	starts := make([]int, len(msgs))
	for i, m := range msgs {
		switch m.Role {
		case "system", "user":
			starts[i] = b.len()
			t.plainTurn(b, m.Role, m.Content)
		case "assistant":
			last := i == len(msgs)-1
			if err := t.assistantTurn(b, m, i, lastQuery, last, open && last, &starts[i]); err != nil {
				return nil, nil, fmt.Errorf("message %d: %w", i, err)
			}
		default:
			return nil, nil, fmt.Errorf("message %d has unknown role %q (want system, user or assistant)", i, m.Role)
		}
	}
	if genPrompt {
		b.one(t.imStart, false)
		b.add(t.tok.EncodeOrdinary("assistant\n"), false)
	}
	return b, starts, nil
}

// plainTurn writes a turn without loss: "<|im_start|>role\ncontent<|im_end|>\n".
func (t *Template) plainTurn(b *builder, role, content string) {
	b.one(t.imStart, false)
	b.add(t.tok.EncodeOrdinary(role+"\n"+content), false)
	b.one(t.imEnd, false)
	b.add(t.tok.EncodeOrdinary("\n"), false)
}

// assistantTurn writes an assistant turn with the loss on everything after
// its header; an open turn ends where the answer was cut, without
// <|im_end|> and "\n" (and, cut inside its reasoning, without </think>).
func (t *Template) assistantTurn(b *builder, m Message, i, lastQuery int, last, open bool, start *int) error {
	content, reasoning := m.Content, m.Reasoning
	b.one(t.imStart, false)
	if t.kind == TemplateQwen3 {
		if reasoning == "" && strings.Contains(content, "</think>") {
			before, _, _ := strings.Cut(content, "</think>")
			before = strings.TrimRight(before, "\n")
			if k := strings.LastIndex(before, "<think>"); k >= 0 {
				before = before[k+len("<think>"):]
			}
			reasoning = strings.TrimLeft(before, "\n")
			content = strings.TrimLeft(content[strings.LastIndex(content, "</think>")+len("</think>"):], "\n")
		}
		if i > lastQuery && (last || reasoning != "") {
			b.add(t.tok.EncodeOrdinary("assistant\n"), false)
			*start = b.len()
			b.add(t.thinkOpen, true)
			if open && strings.TrimSpace(content) == "" { // cut while reasoning
				b.add(t.tok.EncodeOrdinary("\n"+strings.TrimLeft(reasoning, "\n")), true)
				return nil
			}
			b.add(t.tok.EncodeOrdinary("\n"+strings.Trim(reasoning, "\n")+"\n"), true)
			b.add(t.thinkClose, true)
			b.add(t.tok.EncodeOrdinary("\n\n"+strings.TrimLeft(content, "\n")), true)
			if !open {
				b.one(t.imEnd, true)
				b.add(t.tok.EncodeOrdinary("\n"), true)
			}
			return nil
		}
		// Earlier turns lose their reasoning, as in Qwen3's template.
	} else if reasoning != "" {
		return errors.New("reasoning_content needs template qwen3 (chatml has no place for it; put it in the content)")
	}
	h, body := t.join("assistant\n", content)
	b.add(h, false)
	*start = b.len()
	b.add(body, true)
	if !open {
		b.one(t.imEnd, true)
		b.add(t.tok.EncodeOrdinary("\n"), true)
	}
	return nil
}
