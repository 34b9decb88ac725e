package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
)

// maxChoices bounds prompts × n in one request.
const maxChoices = 64

// inputLimits bound what a request may hold before anything is tokenized:
// counts and sizes are checked while the JSON is decoded, so a body of
// millions of prompts or token ids is refused at the first one too many.
type inputLimits struct {
	positions int // the model's positions: a prompt has fewer tokens
	vocab     int
	// maxBytes is the longest text that can be under positions tokens:
	// positions × the longest token's bytes (× 2 for normalizers that
	// shrink text).
	maxBytes int
}

// promptField is /v1/completions' prompt: a string, an array of strings,
// an array of token ids, or an array of such arrays.
type promptField struct {
	lim   *inputLimits
	set   bool
	texts []string
	ids   [][]int32
}

// decodeStream decodes the prompt from dec within p.lim, one token at a
// time: a request with millions of prompts or token ids is refused at the
// first one too many, without reading the others.
func (p *promptField) decodeStream(dec *json.Decoder) error {
	bad := badf("prompt", "prompt: want a string, an array of strings, or token ids")
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case nil:
		return nil
	case string:
		p.set = true
		if e := p.lim.checkText("prompt", t); e != nil {
			return e
		}
		p.texts = []string{t}
		return nil
	case json.Delim:
		if t != '[' {
			return bad
		}
	default:
		return bad
	}
	p.set = true
	first, err := dec.Token()
	if err != nil {
		return err
	}
	switch t := first.(type) {
	case json.Delim:
		if t == ']' {
			return badf("prompt", "prompt is an empty array")
		}
		if t != '[' {
			return bad
		}
		for i := 0; ; i++ {
			if i >= maxChoices {
				return badf("prompt", "prompt has more than %d token arrays: at most %d completions a request", maxChoices, maxChoices)
			}
			ids, e := p.lim.readIDs(dec, fmt.Sprintf("prompt[%d]", i))
			if e != nil {
				return e
			}
			p.ids = append(p.ids, ids)
			next, err := dec.Token()
			if err != nil {
				return err
			}
			if next == json.Delim(']') {
				return nil
			}
			if next != json.Delim('[') {
				return bad
			}
		}
	case string:
		for i := 0; ; i++ {
			if i >= maxChoices {
				return badf("prompt", "prompt has more than %d strings: at most %d completions a request", maxChoices, maxChoices)
			}
			if e := p.lim.checkText(fmt.Sprintf("prompt[%d]", i), t); e != nil {
				return e
			}
			p.texts = append(p.texts, t)
			next, err := dec.Token()
			if err != nil {
				return err
			}
			if next == json.Delim(']') {
				return nil
			}
			s, ok := next.(string)
			if !ok {
				return bad
			}
			t = s
		}
	case json.Number:
		ids, e := p.lim.readIDsFrom(dec, "prompt", t)
		if e != nil {
			return e
		}
		p.ids = [][]int32{ids}
		return nil
	}
	return bad
}

// readIDs reads an array of token ids whose '[' was read.
func (l *inputLimits) readIDs(dec *json.Decoder, param string) ([]int32, *reqError) {
	tok, err := dec.Token()
	if err != nil {
		return nil, badf("prompt", "%s: want token ids", param)
	}
	if tok == json.Delim(']') {
		return nil, nil // an empty prompt; fit names it
	}
	n, ok := tok.(json.Number)
	if !ok {
		return nil, badf("prompt", "%s: want token ids (integers)", param)
	}
	return l.readIDsFrom(dec, param, n)
}

// readIDsFrom reads token ids from first on, through the closing ']'.
func (l *inputLimits) readIDsFrom(dec *json.Decoder, param string, first json.Number) ([]int32, *reqError) {
	var ids []int32
	tok := any(first)
	for {
		n, ok := tok.(json.Number)
		if !ok {
			return nil, badf("prompt", "%s: want token ids (integers)", param)
		}
		id, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || id < 0 || id >= int64(l.vocab) {
			return nil, badf("prompt", "%s: token %s is outside the vocabulary (0 to %d)", param, n, l.vocab-1)
		}
		if len(ids) >= l.positions-1 {
			return nil, badf("prompt", "%s: more than %d token ids, and the model has %d positions in all (prompt and completion, at least 1 token)", param, l.positions-1, l.positions)
		}
		ids = append(ids, int32(id))
		var err2 error
		if tok, err2 = dec.Token(); err2 != nil {
			return nil, badf("prompt", "%s: want token ids", param)
		}
		if tok == json.Delim(']') {
			return ids, nil
		}
	}
}

// checkText refuses a text too long to fit the model, before tokenizing it.
func (l *inputLimits) checkText(param, s string) *reqError {
	if len(s) > l.maxBytes {
		return badf(param, "%s is %d bytes: more than fits in the model's %d positions (at most %d bytes)", param, len(s), l.positions, l.maxBytes)
	}
	return nil
}

// chatMessages is /v1/chat/completions' messages, decoded one message at
// a time within lim: at most as many messages as the model has positions,
// at most lim.maxBytes of text in all.
type chatMessages struct {
	lim  *inputLimits
	set  bool
	msgs []chatMessage
}

// decodeStream decodes the messages from dec within m.lim, one message at
// a time.
func (m *chatMessages) decodeStream(dec *json.Decoder) error {
	bad := badf("messages", "messages: want an array of {role, content} objects")
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil
	}
	m.set = true
	if tok != json.Delim('[') {
		return bad
	}
	total := 0
	for i := 0; dec.More(); i++ {
		param := fmt.Sprintf("messages[%d]", i)
		if i >= m.lim.positions {
			return badf("messages", "messages has more than %d entries: more than fit in the model's %d positions", m.lim.positions, m.lim.positions)
		}
		var msg chatMessage
		if err := dec.Decode(&msg); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				if te.Field == "" {
					return badf(param, "%s: want a {role, content} object, got %s", param, jsonKind(te.Value))
				}
				return badf(param+"."+te.Field, "%s.%s: want %s, got %s", param, te.Field, goTypeWords(te.Type.String()), jsonKind(te.Value))
			}
			return err
		}
		total += len(msg.Content) + len(msg.Reasoning)
		if total > 6*m.lim.maxBytes { // JSON escapes take at most 6 bytes a byte
			return badf("messages", "messages hold more than %d bytes of text: more than fits in the model's %d positions", m.lim.maxBytes, m.lim.positions)
		}
		m.msgs = append(m.msgs, msg)
	}
	_, err = dec.Token() // ]
	return err
}

// maxStops bounds the stop strings.
const maxStops = 16

// stopField is "stop": a string or an array of at most maxStops strings.
type stopField struct{ stops []string }

func (f *stopField) decodeStream(dec *json.Decoder) error {
	bad := badf("stop", "stop: want a string or an array of strings")
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case nil:
		return nil
	case string:
		f.stops = []string{t}
	case json.Delim:
		if t != '[' {
			return bad
		}
		for dec.More() {
			if len(f.stops) == maxStops {
				return badf("stop", "stop has more than %d strings: want at most %d", maxStops, maxStops)
			}
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			s, ok := tok.(string)
			if !ok {
				return bad
			}
			f.stops = append(f.stops, s)
		}
		if _, err := dec.Token(); err != nil { // ]
			return err
		}
	default:
		return bad
	}
	for _, s := range f.stops {
		if s == "" {
			return badf("stop", "stop strings must not be empty")
		}
	}
	return nil
}

// logitBiasField is "logit_bias", which is not supported: null or {} is
// accepted, an entry is refused at once.
type logitBiasField struct{ set bool }

func (f *logitBiasField) decodeStream(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil || tok == nil {
		return err
	}
	if tok != json.Delim('{') {
		return badf("logit_bias", "logit_bias: want an object")
	}
	if dec.More() {
		f.set = true
		return badf("logit_bias", "logit_bias is not supported")
	}
	_, err = dec.Token() // }
	return err
}

// userField is a JSON path as the user wrote it: encoding/json names the
// fields of embedded structs with the struct's Go name ("common.max_tokens").
func userField(f string) string {
	return strings.TrimPrefix(f, "common.")
}

// goTypeWords says a Go type in the words of JSON.
func goTypeWords(t string) string {
	t = strings.TrimPrefix(t, "*")
	switch {
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint"):
		return "an integer"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "string":
		return "a string"
	case t == "bool":
		return "true or false"
	case strings.HasPrefix(t, "[]"):
		return "an array"
	case strings.HasPrefix(t, "map") || strings.HasPrefix(t, "struct"):
		return "an object"
	}
	return t
}

// jsonKind says what an UnmarshalTypeError's Value was ("string",
// "number 1.5", "array", …) with an article.
func jsonKind(v string) string {
	switch {
	case strings.HasPrefix(v, "number "):
		return strings.TrimPrefix(v, "number ")
	case v == "array" || v == "object":
		return "an " + v
	case v == "bool":
		return "true or false"
	}
	return "a " + v
}

// streamField is a request field that decodes itself from the token
// stream, within limits.
type streamField interface {
	decodeStream(dec *json.Decoder) error
}

// decodeRequest decodes a JSON object from r into v (a pointer to a request
// struct, embedded structs' fields included, matched by their json names
// as encoding/json does), streaming: fields that are streamFields decode
// themselves token by token, so a request that asks too much is refused at
// the first item too many. Errors name the field as the user wrote it, in
// JSON's words.
func decodeRequest(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	tok, err := dec.Token()
	if err == io.EOF {
		return badf("", "the request body is empty: want a JSON object")
	}
	if err != nil {
		return err
	}
	if tok != json.Delim('{') {
		return badf("", "the request body must be a JSON object, not %s", tokenKind(tok))
	}
	fields := map[string]reflect.Value{}
	collectFields(reflect.ValueOf(v).Elem(), fields)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key := tok.(string)
		f, ok := fields[key]
		if !ok {
			f, ok = fields[strings.ToLower(key)]
		}
		if !ok { // an unknown field is skipped, as encoding/json does
			if err := skipValue(dec); err != nil {
				return err
			}
			continue
		}
		if sf, ok := f.Addr().Interface().(streamField); ok {
			if err := sf.decodeStream(dec); err != nil {
				return err
			}
			continue
		}
		if err := dec.Decode(f.Addr().Interface()); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				name := key
				if te.Field != "" {
					name += "." + te.Field
				}
				return badf(name, "%s: want %s, got %s", name, goTypeWords(te.Type.String()), jsonKind(te.Value))
			}
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // }
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return badf("", "the request body has more after its JSON object")
	}
	return nil
}

// collectFields maps the json names of v's fields (and of its embedded
// structs' fields) to them; the lower-case names too, for encoding/json's
// case-insensitive match.
func collectFields(v reflect.Value, out map[string]reflect.Value) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if sf.Anonymous && sf.Type.Kind() == reflect.Struct {
			collectFields(v.Field(i), out)
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "" || name == "-" || !sf.IsExported() {
			continue
		}
		out[name] = v.Field(i)
		if _, dup := out[strings.ToLower(name)]; !dup {
			out[strings.ToLower(name)] = v.Field(i)
		}
	}
}

// skipValue reads one JSON value and drops it.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

// tokenKind says what a JSON token is, with an article.
func tokenKind(tok any) string {
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			return "an array"
		}
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "true or false"
	case nil:
		return "null"
	}
	return fmt.Sprint(tok)
}
