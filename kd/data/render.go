package data

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// The loss mask of a rendered conversation. transformers marks assistant
// tokens only in templates written with {% generation %} blocks; the real
// templates of Llama, Qwen, Mistral, Gemma, Phi and DeepSeek have none. So
// each assistant turn is found by rendering the conversation again with that
// turn's content swapped for a marker: what differs is the content as the
// template wrote it (trimmed, with its think block split off, …). The loss
// starts after the generation prompt the template writes for that turn (the
// text add_generation_prompt adds, "<|im_start|>assistant\n"; what the model
// writes after it, like Qwen3's "<think>\n", is learnt) and ends after the
// end-of-turn text the template writes after the content when the turn is
// the last ("<|im_end|>\n", "<|eot_id|>", "</s>", …; tokens of it shared with
// what follows, where the next turn differs, as Phi-3.5's "<|end|>\n" before
// "<|user|>"). Tokens that straddle a boundary are taken whole, as
// transformers' return_assistant_tokens_mask does.

// span is a byte range of the rendered text.
type span struct{ start, end int }

// jinjaConversation renders a conversation with the model's chat template,
// the loss on every assistant turn. open leaves the last assistant turn open:
// it ends where its text ends (content, or reasoning when the content is
// empty), without the end-of-turn text.
func (t *Template) jinjaConversation(msgs []Message, tools json.RawMessage, open bool) (Example, error) {
	if err := t.reasoningPlace(msgs); err != nil {
		return Example{}, err
	}
	msgs = t.withSystem(msgs)
	msgs, enc := t.encoder(msgs)
	full, err := t.chat.render(msgs, tools, false, nil)
	if err != nil {
		return Example{}, err
	}
	var spans []span
	lo, last := 0, -1
	for i, m := range msgs {
		if m.Role != "assistant" {
			continue
		}
		sp, cut, err := t.locate(msgs, tools, full, i, lo, enc)
		if err != nil {
			return Example{}, fmt.Errorf("message %d (assistant): %w", i, err)
		}
		if open && i == len(msgs)-1 {
			full, sp.end = full[:cut], cut
		}
		spans = append(spans, sp)
		lo, last = sp.end, i
	}
	if last < 0 {
		return Example{}, errors.New("no assistant message: nothing to learn")
	}
	ids := enc(full)
	labels := make([]int32, len(ids))
	for i := range labels {
		labels[i] = IgnoreIndex
	}
	for k, sp := range spans {
		a, _ := tokenAt(ids, enc, full, sp.start)
		b, exact := tokenAt(ids, enc, full, sp.end)
		if !exact {
			b++
		}
		if b <= a {
			return Example{}, fmt.Errorf("assistant turn %d has no token of its own in the rendering", k+1)
		}
		for j := a; j < b && j < len(ids); j++ {
			labels[j] = ids[j]
		}
	}
	return Example{Tokens: ids, Labels: labels}, nil
}

// locate finds assistant message i in full, the rendering of msgs: sp is
// its loss span, cut where its own text ends (for an open turn). lo is where
// the previous assistant span ended.
func (t *Template) locate(msgs []Message, tools json.RawMessage, full string, i, lo int, enc func(string) []int32) (sp span, cut int, err error) {
	mark := marker(msgs)
	mx := slices.Clone(msgs)
	mx[i].Content, mx[i].Reasoning = mark, ""
	rx, err := t.chat.render(mx, tools, false, nil)
	if err != nil {
		return span{}, 0, err
	}
	p := commonPrefix(full, rx)
	contentEnd := len(full) - commonSuffix(full[p:], rx[p:])
	if !strings.Contains(rx, mark) {
		return span{}, 0, fmt.Errorf("chat template (%s) does not write the assistant's content", t.chat.source)
	}

	// The loss starts after the generation prompt of this turn, when the
	// template writes one and it stands before the content.
	start := p
	if p1, err := t.chat.render(msgs[:i], tools, true, nil); err == nil {
		if p0, err := t.chat.render(msgs[:i], tools, false, nil); err == nil && strings.HasPrefix(p1, p0) {
			if g := p1[len(p0):]; g != "" && lo <= p {
				if k := strings.LastIndex(full[lo:p], g); k >= 0 {
					start = lo + k + len(g)
				}
			}
		}
	}

	// The end-of-turn text: what the template writes after the content when
	// this turn is the last.
	end := contentEnd
	q, err := t.chat.render(msgs[:i+1], tools, false, nil)
	if err != nil {
		return span{}, 0, err
	}
	qx, err := t.chat.render(mx[:i+1], tools, false, nil)
	if err != nil {
		return span{}, 0, err
	}
	p2 := commonPrefix(q, qx)
	eot := q[len(q)-commonSuffix(q[p2:], qx[p2:]):]
	end += sharedPrefix(eot, full[contentEnd:], enc)

	// Where the turn's own text ends: its content, or its reasoning when a
	// cut answer has no content yet.
	cut = contentEnd
	if strings.TrimSpace(msgs[i].Content) == "" && msgs[i].Reasoning != "" {
		my := slices.Clone(msgs)
		my[i].Reasoning = mark
		ry, err := t.chat.render(my, tools, false, nil)
		if err != nil {
			return span{}, 0, err
		}
		p3 := commonPrefix(full, ry)
		cut = len(full) - commonSuffix(full[p3:], ry[p3:])
	}
	if start > contentEnd {
		start = p
	}
	return span{start, end}, cut, nil
}

// sharedPrefix is how many bytes of eot begin rest, counted in whole tokens:
// all of eot when rest starts with it, else the tokens the two share (so a
// partial match never ends inside a special token's text).
func sharedPrefix(eot, rest string, enc func(string) []int32) int {
	if eot == "" {
		return 0
	}
	if strings.HasPrefix(rest, eot) {
		return len(eot)
	}
	a := enc(eot)
	b := enc(rest[:min(len(rest), len(eot)+16)])
	k := 0
	for k < len(a) && k < len(b) && a[k] == b[k] {
		k++
	}
	if k == 0 {
		return 0
	}
	for j := len(eot); j > 0; j-- {
		if utf8.RuneStart(eot[j%len(eot)]) || j == len(eot) {
			if slices.Equal(enc(eot[:j]), a[:k]) && strings.HasPrefix(rest, eot[:j]) {
				return j
			}
		}
	}
	return 0
}

// tokenAt maps byte offset b of text to a token index of ids (the encoding
// of text): the index of the first token at or after b, exact when a token
// boundary falls on b; otherwise the token that straddles b.
func tokenAt(ids []int32, enc func(string) []int32, text string, b int) (int, bool) {
	if b <= 0 {
		return 0, true
	}
	if b >= len(text) {
		return len(ids), true
	}
	pre := enc(text[:b])
	k := 0
	for k < len(pre) && k < len(ids) && pre[k] == ids[k] {
		k++
	}
	return k, k == len(pre)
}

// marker is a private-use character that no message holds, put in place of
// a turn's content to find where the template writes it.
func marker(msgs []Message) string {
	for r := rune(0xF8FF); r > 0xF000; r-- {
		m := string(r)
		used := false
		for _, msg := range msgs {
			if strings.Contains(msg.Content, m) || strings.Contains(msg.Reasoning, m) {
				used = true
				break
			}
		}
		if !used {
			return m
		}
	}
	return "\U000FFFFD"
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	for n > 0 && n < len(a) && !utf8.RuneStart(a[n]) {
		n--
	}
	return n
}

func commonSuffix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[len(a)-1-n] == b[len(b)-1-n] {
		n++
	}
	for n > 0 && n < len(a) && !utf8.RuneStart(a[len(a)-n]) {
		n--
	}
	return n
}

// withSystem puts the configured system prompt first when a conversation
// has no system message.
func (t *Template) withSystem(msgs []Message) []Message {
	if t.system == "" || (len(msgs) > 0 && msgs[0].Role == "system") {
		return msgs
	}
	return append([]Message{{Role: "system", Content: t.system}}, msgs...)
}

// jinjaGenerationPrompt renders msgs followed by the template's generation
// prompt.
func (t *Template) jinjaGenerationPrompt(msgs []Message, tools json.RawMessage) ([]int32, error) {
	msgs, enc := t.encoder(t.withSystem(msgs))
	s, err := t.chat.render(msgs, tools, true, nil)
	if err != nil {
		return nil, err
	}
	return enc(s), nil
}

// jinjaPair renders a preference pair as TRL does: the prompt is what the
// prompt's rendering with the generation prompt shares with the rendering of
// prompt + chosen; each response is the rest of its rendering. Prompt and
// responses are tokenized apart.
func (t *Template) jinjaPair(prompt, chosen, rejected []Message) (Pair, error) {
	all := append(append(append([]Message{}, prompt...), chosen...), rejected...)
	safe, enc := t.encoder(t.withSystem(all))
	sys := len(safe) - len(all)
	np, nc := sys+len(prompt), len(chosen)
	pm, cm, rm := safe[:np], safe[np:np+nc], safe[np+nc:]
	p, err := t.chat.render(pm, nil, true, nil)
	if err != nil {
		return Pair{}, err
	}
	pc, err := t.chat.render(append(slices.Clone(pm), cm...), nil, false, nil)
	if err != nil {
		return Pair{}, fmt.Errorf("chosen: %w", err)
	}
	pr, err := t.chat.render(append(slices.Clone(pm), rm...), nil, false, nil)
	if err != nil {
		return Pair{}, fmt.Errorf("rejected: %w", err)
	}
	n := commonPrefix(p, pc)
	if !strings.HasPrefix(pr, pc[:n]) {
		return Pair{}, errors.New("the prompt renders differently before chosen and before rejected")
	}
	if n == len(pc) || n == len(pr) {
		return Pair{}, errors.New("a response renders to nothing after the prompt")
	}
	return Pair{Prompt: enc(pc[:n]), Chosen: enc(pc[n:]), Rejected: enc(pr[n:])}, nil
}

// encoder returns msgs ready to render and the encoding of a rendering. The
// rendered text is encoded whole, as transformers does — unless a message
// holds the text of a special token ("<|im_end|>" typed in a prompt): such
// text must stay text, not become a control token, so it is swapped for a
// private-use stand-in before rendering, and the rendering is encoded piece
// by piece between the template's own special tokens, each piece as plain
// text with the stand-ins put back.
func (t *Template) encoder(msgs []Message) ([]Message, func(string) []int32) {
	risky := false
	for _, m := range msgs {
		if t.hasSpecial(m.Content) || t.hasSpecial(m.Reasoning) {
			risky = true
			break
		}
	}
	if !risky {
		return msgs, t.tok.Encode
	}
	stand := map[string]string{} // special text → stand-in
	back := map[rune]string{}    // stand-in → special text
	swap := func(s string) string {
		if !t.hasSpecial(s) {
			return s
		}
		var b strings.Builder
		last := 0
		for _, sp := range t.specialSpans(s) {
			b.WriteString(s[last:sp.start])
			txt := s[sp.start:sp.end]
			st, ok := stand[txt]
			if !ok {
				r := rune(0xE000 + len(stand))
				st = string(r)
				stand[txt], back[r] = st, txt
			}
			b.WriteString(st)
			last = sp.end
		}
		b.WriteString(s[last:])
		return b.String()
	}
	out := slices.Clone(msgs)
	for i := range out {
		out[i].Content, out[i].Reasoning = swap(out[i].Content), swap(out[i].Reasoning)
	}
	restore := strings.NewReplacer(replacerPairs(back)...).Replace
	enc := func(s string) []int32 {
		var ids []int32
		last := 0
		for _, sp := range t.specialSpans(s) {
			ids = append(ids, t.tok.EncodeOrdinary(restore(s[last:sp.start]))...)
			id, _ := t.tok.TokenID(s[sp.start:sp.end])
			ids = append(ids, id)
			last = sp.end
		}
		return append(ids, t.tok.EncodeOrdinary(restore(s[last:]))...)
	}
	return out, enc
}

func replacerPairs(back map[rune]string) []string {
	var kv []string
	for r, s := range back {
		kv = append(kv, string(r), s)
	}
	return kv
}

// hasSpecial says whether s holds the text of a special token: Encode, which
// recognizes them, and EncodeOrdinary, which does not, then differ.
func (t *Template) hasSpecial(s string) bool {
	if s == "" {
		return false
	}
	return !slices.Equal(t.tok.Encode(s), t.tok.EncodeOrdinary(s))
}

// maxSpecialLen bounds the length of a special token's text.
const maxSpecialLen = 64

// specialSpans finds the special tokens written in s, left to right, longest
// first: a piece of s that Encode reads as one token and EncodeOrdinary does
// not. (Used only for text that holds one, so its cost does not matter.)
func (t *Template) specialSpans(s string) []span {
	var out []span
	for i := 0; i < len(s); {
		if !utf8.RuneStart(s[i]) {
			i++
			continue
		}
		// A special token starting at i changes the first token.
		w := s[i:min(len(s), i+maxSpecialLen)]
		if a, b := t.tok.Encode(w), t.tok.EncodeOrdinary(w); len(a) > 0 && len(b) > 0 && a[0] == b[0] {
			i++
			continue
		}
		found := 0
		for l := min(maxSpecialLen, len(s)-i); l > 0; l-- {
			if i+l < len(s) && !utf8.RuneStart(s[i+l]) {
				continue
			}
			piece := s[i : i+l]
			ids := t.tok.Encode(piece)
			if len(ids) != 1 {
				continue
			}
			if o := t.tok.EncodeOrdinary(piece); len(o) == 1 && o[0] == ids[0] {
				continue
			}
			found = l
			break
		}
		if found > 0 {
			out = append(out, span{i, i + found})
			i += found
			continue
		}
		i++
	}
	return out
}

// reasoningPlace refuses reasoning_content that the chat template would drop
// without a word: a template that never reads reasoning (Qwen2.5, Llama)
// has no place for it. (Templates that read it may still leave it out of
// earlier turns, as Qwen3's does: that is the template's format.)
func (t *Template) reasoningPlace(msgs []Message) error {
	for i, m := range msgs {
		if m.Reasoning == "" {
			continue
		}
		if !strings.Contains(t.chat.text, "reasoning") && !strings.Contains(t.chat.text, "thinking") {
			return fmt.Errorf("messages[%d] has reasoning_content, and the chat template (%s) has no place for it (it reads neither reasoning_content nor thinking): put it in the content, or use a template that has one (qwen3)", i, t.chat.source)
		}
	}
	return nil
}

// StopTokens are the tokens that end an assistant turn, for sampling: under
// a rendered chat template the first token of the end-of-turn text it
// writes after an answer (<|im_end|>, <|eot_id|>, <end_of_turn>, <|end|>,
// </s>, …) when that is a special token; <|im_end|> under chatml and qwen3;
// none under none (the EOS token is the caller's).
func (t *Template) StopTokens() []int32 {
	switch t.kind {
	case TemplateNone:
		return nil
	case TemplateChatML, TemplateQwen3:
		return []int32{t.imEnd}
	}
	render := func(content string) (string, error) {
		return t.chat.render(t.withSystem([]Message{{Role: "user", Content: "Hi"}, {Role: "assistant", Content: content}}), nil, false, nil)
	}
	a, err := render("\uF8FF")
	if err != nil {
		return nil
	}
	b, err := render("\uF8FE")
	if err != nil {
		return nil
	}
	eot := a[len(a)-commonSuffix(a, b):]
	ids, plain := t.tok.Encode(eot), t.tok.EncodeOrdinary(eot)
	if len(ids) == 0 || (len(plain) > 0 && plain[0] == ids[0]) {
		return nil
	}
	return ids[:1]
}
