package data

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	// Reasoning is an assistant turn's "reasoning_content" (qwen3 only).
	Reasoning string `json:"reasoning_content,omitempty"`
}

// shape is the kind of a parsed line.
type shape uint8

const (
	shapeTokens         shape = iota + 1 // input_ids/labels
	shapeChat                            // messages
	shapePromptResponse                  // prompt/response
	shapeText                            // text
	shapePair                            // prompt/chosen/rejected
	shapePairTokens                      // prompt_input_ids/chosen_input_ids/rejected_input_ids
)

func (s shape) pretokenized() bool { return s == shapeTokens || s == shapePairTokens }

// textField is a field that holds either a string or a list of messages.
type textField struct {
	present bool
	isMsgs  bool
	text    string
	msgs    []Message
}

// record is one parsed line, before tokenization.
type record struct {
	shape            shape
	messages         []Message
	prompt, response textField
	chosen, rejected textField
	text             string
	ids, labels      []int32 // shapeTokens (labels nil: loss on every token)
	topK             *TopK   // shapeTokens: a sparse teacher, when given
	promptIDs        []int32 // shapePairTokens
	chosenIDs        []int32
	rejectedIDs      []int32
	// open: the response stopped at the length limit (finish_reason
	// "length"), so it is rendered without its end-of-turn or EOS token.
	open bool
	// tools is the line's "tools" (a list of function schemas), handed to
	// the chat template; nil when absent.
	tools json.RawMessage
	// label is the teacher of an `elicit label` record (teacher_tokens and
	// teacher_top_logprobs with student ids); labelNoIDs: the record has
	// them without ids.
	label      *labelTeacher
	labelNoIDs bool
}

// emptyAnswer is an SFT line whose assistant answer is empty (a teacher that
// said nothing, or stopped before its first token): data, not a mistake, so
// the loader skips it and counts it in Report.Empty whatever OnBadLine says.
type emptyAnswer struct{ reason string }

func (e *emptyAnswer) Error() string { return e.reason }

// parseLine decodes one JSONL line. pairs selects the preference shapes
// (LoadPairs) instead of the SFT ones. vocab > 0 bounds pre-tokenized ids.
// The error is the reason, without file and line.
func parseLine(line []byte, pairs bool, vocab int) (record, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return record{}, fmt.Errorf("line is a JSON %s, want an object", ute.Value)
		}
		return record{}, fmt.Errorf("not valid JSON: %v", err)
	}
	if obj == nil { // the line was "null"
		return record{}, errors.New("line is JSON null, want an object")
	}
	has := func(k string) bool { _, ok := obj[k]; return ok }
	if pairs {
		return parsePair(obj, has, vocab)
	}
	if has("input_ids") {
		return parseTokens(obj, vocab)
	}
	r, err := parseText(obj, has)
	if err != nil {
		return record{}, err
	}
	if raw, ok := obj["tools"]; ok && !isNull(raw) && (r.shape == shapeChat || r.shape == shapePromptResponse) {
		if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '[' {
			return record{}, fmt.Errorf(`"tools" is %s, want a list of function schemas`, jsonKind(t))
		}
		r.tools = raw
	}
	finish, err := finishReason(obj)
	if err != nil {
		return record{}, err
	}
	r.open = finish == "length"
	if r.shape == shapeChat || r.shape == shapePromptResponse {
		if r.label, r.labelNoIDs, err = parseLabelTeacher(obj, vocab); err != nil {
			return record{}, err
		}
	}
	return r, nil
}

// parseText reads the text shapes of an SFT line: messages, prompt/response,
// text.
func parseText(obj map[string]json.RawMessage, has func(string) bool) (record, error) {
	switch {
	case has("messages") || has("conversations"):
		key := "messages"
		if !has(key) {
			key = "conversations"
		}
		msgs, err := messagesField(obj[key], key)
		if err != nil {
			return record{}, err
		}
		if len(msgs) == 0 {
			return record{}, fmt.Errorf("%q is empty", key)
		}
		if err := answered(msgs, key); err != nil {
			return record{}, err
		}
		return record{shape: shapeChat, messages: msgs}, nil
	case has("prompt") && (has("response") || has("completion")):
		r := record{shape: shapePromptResponse}
		var err error
		if r.prompt, err = textOrMessages(obj, "prompt", false); err != nil {
			return record{}, err
		}
		rk := "response"
		if !has(rk) {
			rk = "completion"
		}
		if r.response, err = textOrMessages(obj, rk, false); err != nil {
			return record{}, err
		}
		if r.response.isMsgs {
			if err := assistantOnly(r.response.msgs, rk); err != nil {
				return record{}, err
			}
			if err := answered(r.response.msgs, rk); err != nil {
				return record{}, err
			}
		} else if strings.TrimSpace(r.response.text) == "" {
			return record{}, &emptyAnswer{fmt.Sprintf("%q is empty", rk)}
		}
		return r, nil
	case has("chosen") || has("rejected") || has("chosen_input_ids"):
		return record{}, errors.New("a preference pair (chosen/rejected): load it as DPO data")
	case has("prompt"):
		return record{}, errors.New(`has "prompt" but lacks "response" (or "completion")`)
	case has("response") || has("completion"):
		return record{}, errors.New(`has a response but lacks "prompt"`)
	case has("text"):
		s, err := stringField(obj, "text")
		if err != nil {
			return record{}, err
		}
		if strings.TrimSpace(s) == "" {
			return record{}, errors.New(`"text" is empty`)
		}
		return record{shape: shapeText, text: s}, nil
	}
	return record{}, fmt.Errorf("no known fields (found %s): want prompt/response, messages, text or input_ids/labels", keyList(obj))
}

// answered checks that no assistant message of msgs is empty (no content and
// no reasoning).
func answered(msgs []Message, key string) error {
	for i, m := range msgs {
		if m.Role == "assistant" && strings.TrimSpace(m.Content) == "" && strings.TrimSpace(m.Reasoning) == "" {
			return &emptyAnswer{fmt.Sprintf("%s[%d] (assistant) is empty", key, i)}
		}
	}
	return nil
}

// finishReason reads a line's optional "finish_reason" (as elicit label and
// the OpenAI API write it: "stop", "length", …); "" when absent or null.
func finishReason(obj map[string]json.RawMessage) (string, error) {
	raw, ok := obj["finish_reason"]
	if !ok || isNull(raw) {
		return "", nil
	}
	return stringValue(raw, "finish_reason")
}

func parsePair(obj map[string]json.RawMessage, has func(string) bool, vocab int) (record, error) {
	if has("chosen_input_ids") || has("rejected_input_ids") || has("prompt_input_ids") {
		r := record{shape: shapePairTokens}
		var err error
		if r.promptIDs, err = idsField(obj, "prompt_input_ids", vocab, true); err != nil {
			return record{}, err
		}
		if r.chosenIDs, err = idsField(obj, "chosen_input_ids", vocab, false); err != nil {
			return record{}, err
		}
		if r.rejectedIDs, err = idsField(obj, "rejected_input_ids", vocab, false); err != nil {
			return record{}, err
		}
		return r, nil
	}
	if !has("chosen") || !has("rejected") {
		switch {
		case has("chosen"):
			return record{}, errors.New(`has "chosen" but lacks "rejected"`)
		case has("rejected"):
			return record{}, errors.New(`has "rejected" but lacks "chosen"`)
		case has("messages") || has("response") || has("completion") || has("input_ids") || has("text"):
			return record{}, errors.New("an SFT example, not a preference pair (which needs chosen and rejected)")
		}
		return record{}, fmt.Errorf("no known fields (found %s): want prompt, chosen and rejected", keyList(obj))
	}
	r := record{shape: shapePair}
	var err error
	if has("prompt") {
		if r.prompt, err = textOrMessages(obj, "prompt", false); err != nil {
			return record{}, err
		}
	}
	if r.chosen, err = textOrMessages(obj, "chosen", true); err != nil {
		return record{}, err
	}
	if r.rejected, err = textOrMessages(obj, "rejected", true); err != nil {
		return record{}, err
	}
	if !r.prompt.present {
		if !r.chosen.isMsgs || !r.rejected.isMsgs {
			return record{}, errors.New(`lacks "prompt" (a pair without one needs chosen and rejected as message lists sharing the prompt turns)`)
		}
		if err := splitImplicitPrompt(&r); err != nil {
			return record{}, err
		}
		return r, nil
	}
	for _, f := range []struct {
		name string
		f    textField
	}{{"chosen", r.chosen}, {"rejected", r.rejected}} {
		if f.f.isMsgs {
			if err := assistantOnly(f.f.msgs, f.name); err != nil {
				return record{}, err
			}
		}
	}
	return r, nil
}

// splitImplicitPrompt takes the longest common prefix of the chosen and the
// rejected conversations as the prompt (TRL's extract_prompt).
func splitImplicitPrompt(r *record) error {
	c, j := r.chosen.msgs, r.rejected.msgs
	k := 0
	for k < len(c) && k < len(j) && c[k] == j[k] {
		k++
	}
	// The completion starts at the first assistant turn after the shared
	// prefix; shared assistant turns at the end of the prefix stay prompt.
	if k == 0 {
		return errors.New("chosen and rejected share no prompt turns and there is no \"prompt\"")
	}
	r.prompt = textField{present: true, isMsgs: true, msgs: c[:k]}
	r.chosen.msgs, r.rejected.msgs = c[k:], j[k:]
	if len(r.chosen.msgs) == 0 || len(r.rejected.msgs) == 0 {
		return errors.New("chosen and rejected are the same conversation")
	}
	if err := assistantOnly(r.chosen.msgs, "chosen"); err != nil {
		return err
	}
	return assistantOnly(r.rejected.msgs, "rejected")
}

func assistantOnly(msgs []Message, name string) error {
	for i, m := range msgs {
		if m.Role != "assistant" {
			return fmt.Errorf("%s: message %d is %q, want assistant turns only in a response", name, i, m.Role)
		}
	}
	return nil
}

func parseTokens(obj map[string]json.RawMessage, vocab int) (record, error) {
	ids, err := idsField(obj, "input_ids", vocab, false)
	if err != nil {
		return record{}, err
	}
	r := record{shape: shapeTokens, ids: ids}
	if raw, ok := obj["labels"]; ok && !isNull(raw) {
		labels, err := intList(raw, "labels", vocab, true)
		if err != nil {
			return record{}, err
		}
		if len(labels) != len(ids) {
			return record{}, fmt.Errorf(`"labels" has %d values for %d input_ids`, len(labels), len(ids))
		}
		r.labels = labels
	}
	if r.topK, err = parseTopK(obj, len(ids), vocab); err != nil {
		return record{}, err
	}
	if raw, ok := obj["attention_mask"]; ok && !isNull(raw) {
		mask, err := intList(raw, "attention_mask", 0, false)
		if err != nil {
			return record{}, err
		}
		if len(mask) != len(ids) {
			return record{}, fmt.Errorf(`"attention_mask" has %d values for %d input_ids`, len(mask), len(ids))
		}
		keep := 0
		for i, m := range mask {
			if m != 0 && m != 1 {
				return record{}, fmt.Errorf("attention_mask[%d] is %d, want 0 or 1", i, m)
			}
			if m == 1 {
				r.ids[keep] = r.ids[i]
				if r.labels != nil {
					r.labels[keep] = r.labels[i]
				}
				keep++
			}
		}
		r.ids = r.ids[:keep]
		if r.labels != nil {
			r.labels = r.labels[:keep]
		}
		r.topK = filterTopK(r.topK, mask)
		if keep == 0 {
			return record{}, errors.New("attention_mask is all 0: no tokens")
		}
	}
	if r.labels != nil {
		loss := false
		for _, l := range r.labels[1:] {
			if l != IgnoreIndex {
				loss = true
				break
			}
		}
		if !loss {
			return record{}, errors.New("labels are all -100 after the first position: nothing to learn")
		}
	} else if len(r.ids) < 2 {
		return record{}, errors.New("a single token: nothing to learn")
	}
	return r, nil
}

// idsField reads a list of token ids; emptyOK allows [].
func idsField(obj map[string]json.RawMessage, key string, vocab int, emptyOK bool) ([]int32, error) {
	raw, ok := obj[key]
	if !ok {
		return nil, fmt.Errorf("lacks %q", key)
	}
	ids, err := intList(raw, key, vocab, false)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 && !emptyOK {
		return nil, fmt.Errorf("%q is empty", key)
	}
	return ids, nil
}

// intList parses a JSON array of integers. Values must be ≥ 0 (and < vocab
// when vocab > 0); ignoreOK also allows IgnoreIndex.
func intList(raw json.RawMessage, key string, vocab int, ignoreOK bool) ([]int32, error) {
	s := bytes.TrimSpace(raw)
	if len(s) == 0 || s[0] != '[' {
		return nil, fmt.Errorf("%q is %s, want a list of integers", key, jsonKind(s))
	}
	// raw is valid JSON (json.Unmarshal checked the line), so a small walk
	// over it suffices.
	out := make([]int32, 0, len(s)/4)
	i := 1
	skip := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
	}
	skip()
	if i < len(s) && s[i] == ']' {
		return out, nil
	}
	for {
		skip()
		if i >= len(s) {
			return nil, fmt.Errorf("%q is not a complete list", key)
		}
		n := len(out)
		if c := s[i]; c != '-' && (c < '0' || c > '9') {
			return nil, fmt.Errorf("%s[%d] is %s, want an integer", key, n, jsonKind(s[i:]))
		}
		j := i
		for j < len(s) && (s[j] == '-' || s[j] == '+' || s[j] == '.' || s[j] == 'e' || s[j] == 'E' || (s[j] >= '0' && s[j] <= '9')) {
			j++
		}
		lit := string(s[i:j])
		v, err := strconv.ParseInt(lit, 10, 64)
		if err != nil {
			if f, ferr := strconv.ParseFloat(lit, 64); ferr == nil && f == math.Trunc(f) && math.Abs(f) < 1<<31 {
				v = int64(f) // 5.0 or 1e3: an integer written as a float
			} else {
				return nil, fmt.Errorf("%s[%d] is %s, want an integer", key, n, lit)
			}
		}
		switch {
		case ignoreOK && v == IgnoreIndex:
		case v < 0:
			return nil, fmt.Errorf("%s[%d] is %d, want a token id ≥ 0", key, n, v)
		case vocab > 0 && v >= int64(vocab):
			return nil, fmt.Errorf("%s[%d] is %d, outside the vocabulary of %d tokens", key, n, v, vocab)
		case v > math.MaxInt32:
			return nil, fmt.Errorf("%s[%d] is %d, too large for a token id", key, n, v)
		}
		out = append(out, int32(v))
		i = j
		skip()
		if i >= len(s) {
			return nil, fmt.Errorf("%q is not a complete list", key)
		}
		switch s[i] {
		case ',':
			i++
		case ']':
			return out, nil
		default:
			return nil, fmt.Errorf("%q is not a list of integers", key)
		}
	}
}

// stringField reads a required string field.
func stringField(obj map[string]json.RawMessage, key string) (string, error) {
	raw, ok := obj[key]
	if !ok {
		return "", fmt.Errorf("lacks %q", key)
	}
	return stringValue(raw, key)
}

func stringValue(raw json.RawMessage, what string) (string, error) {
	s := bytes.TrimSpace(raw)
	if len(s) == 0 || s[0] != '"' {
		return "", fmt.Errorf("%s is %s, want a string", quoteField(what), jsonKind(s))
	}
	var v string
	if err := json.Unmarshal(s, &v); err != nil {
		return "", fmt.Errorf("%s: %v", quoteField(what), err)
	}
	return v, nil
}

// quoteField quotes a top-level field name; paths like messages[2].role stay
// bare.
func quoteField(what string) string {
	if strings.ContainsAny(what, "[.") {
		return what
	}
	return strconv.Quote(what)
}

// textOrMessages reads a field that holds a string or a list of messages. A
// response (nonEmpty) must not be empty.
func textOrMessages(obj map[string]json.RawMessage, key string, nonEmpty bool) (textField, error) {
	raw, ok := obj[key]
	if !ok {
		return textField{}, fmt.Errorf("lacks %q", key)
	}
	s := bytes.TrimSpace(raw)
	if len(s) > 0 && s[0] == '[' {
		msgs, err := messagesField(raw, key)
		if err != nil {
			return textField{}, err
		}
		if len(msgs) == 0 {
			return textField{}, fmt.Errorf("%q is an empty list", key)
		}
		if nonEmpty {
			for i, m := range msgs {
				if m.Role == "assistant" && strings.TrimSpace(m.Content) == "" && strings.TrimSpace(m.Reasoning) == "" {
					return textField{}, fmt.Errorf("%s[%d] (assistant) is empty", key, i)
				}
			}
		}
		return textField{present: true, isMsgs: true, msgs: msgs}, nil
	}
	if len(s) == 0 || s[0] != '"' {
		return textField{}, fmt.Errorf("%q is %s, want a string or a list of messages", key, jsonKind(s))
	}
	v, err := stringValue(raw, key)
	if err != nil {
		return textField{}, err
	}
	if nonEmpty && strings.TrimSpace(v) == "" {
		return textField{}, fmt.Errorf("%q is empty", key)
	}
	return textField{present: true, text: v}, nil
}

// shareGPTRoles maps ShareGPT's "from" values to roles.
var shareGPTRoles = map[string]string{"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}

// messagesField reads a list of {"role","content"} (or {"from","value"})
// objects and checks the roles.
func messagesField(raw json.RawMessage, key string) ([]Message, error) {
	s := bytes.TrimSpace(raw)
	if len(s) == 0 || s[0] != '[' {
		return nil, fmt.Errorf("%q is %s, want a list of messages", key, jsonKind(s))
	}
	var items []json.RawMessage
	if err := json.Unmarshal(s, &items); err != nil {
		return nil, fmt.Errorf("%q: %v", key, err)
	}
	msgs := make([]Message, 0, len(items))
	for i, it := range items {
		var m map[string]json.RawMessage
		t := bytes.TrimSpace(it)
		if len(t) == 0 || t[0] != '{' {
			return nil, fmt.Errorf("%s[%d] is %s, want a message object", key, i, jsonKind(t))
		}
		if err := json.Unmarshal(t, &m); err != nil {
			return nil, fmt.Errorf("%s[%d]: %v", key, i, err)
		}
		roleKey, contentKey := "role", "content"
		if _, ok := m["role"]; !ok {
			if _, ok := m["from"]; ok {
				roleKey, contentKey = "from", "value"
			}
		}
		rraw, ok := m[roleKey]
		if !ok {
			return nil, fmt.Errorf("%s[%d] lacks \"role\"", key, i)
		}
		role, err := stringValue(rraw, fmt.Sprintf("%s[%d].%s", key, i, roleKey))
		if err != nil {
			return nil, err
		}
		if roleKey == "from" {
			r, ok := shareGPTRoles[role]
			if !ok {
				return nil, fmt.Errorf("%s[%d] has unknown \"from\" %q (want system, human or gpt)", key, i, role)
			}
			role = r
		}
		switch role {
		case "system", "user", "assistant":
		case "tool", "function", "ipython":
			return nil, fmt.Errorf("%s[%d] has role %q: tool messages are not supported", key, i, role)
		default:
			return nil, fmt.Errorf("%s[%d] has unknown role %q (want system, user or assistant)", key, i, role)
		}
		craw, ok := m[contentKey]
		if !ok {
			return nil, fmt.Errorf("%s[%d] lacks %q", key, i, contentKey)
		}
		if ct := bytes.TrimSpace(craw); len(ct) > 0 && ct[0] == '[' {
			return nil, fmt.Errorf("%s[%d].%s is a list of parts: multimodal content is not supported, want a string", key, i, contentKey)
		}
		content, err := stringValue(craw, fmt.Sprintf("%s[%d].%s", key, i, contentKey))
		if err != nil {
			return nil, err
		}
		msg := Message{Role: role, Content: content}
		if rc, ok := m["reasoning_content"]; ok && !isNull(rc) {
			if msg.Reasoning, err = stringValue(rc, fmt.Sprintf("%s[%d].reasoning_content", key, i)); err != nil {
				return nil, err
			}
			if role != "assistant" && msg.Reasoning != "" {
				return nil, fmt.Errorf("%s[%d] is %q with reasoning_content: only assistant turns reason", key, i, role)
			}
		}
		if tc, ok := m["tool_calls"]; ok && !isNull(tc) && !bytes.Equal(bytes.TrimSpace(tc), []byte("[]")) {
			return nil, fmt.Errorf("%s[%d] has tool_calls: tool calls are not supported", key, i)
		}
		msgs = append(msgs, msg)
	}
	return msgs, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// jsonKind names the JSON type of a value by its first byte.
func jsonKind(s []byte) string {
	if len(s) == 0 {
		return "missing"
	}
	switch s[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "a list"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func keyList(obj map[string]json.RawMessage) string {
	if len(obj) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, strconv.Quote(k))
	}
	sort.Strings(keys)
	if len(keys) > 8 {
		keys = append(keys[:8], "…")
	}
	return strings.Join(keys, ", ")
}
