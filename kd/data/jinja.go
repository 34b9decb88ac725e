package data

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"

	"github.com/kdnative/kdnative/model/tokenizer"
)

// A model's chat template is rendered as transformers' apply_chat_template
// renders it: the Jinja source of chat_template.jinja or tokenizer_config.json
// (github.com/ardanlabs/jinja, which follows Jinja2 with HF's trim_blocks and
// lstrip_blocks), the conversation as "messages", "tools" when a line has
// them, "add_generation_prompt", the tokenizer's special tokens (bos_token,
// eos_token, pad_token) and HF's raise_exception and strftime_now. The
// rendered text is tokenized whole, as HF does with add_special_tokens=False,
// so the ids are the ids transformers gives; what carries the loss is found
// by rendering again with an assistant turn changed (see locate).

// specialTokenizer is model/tokenizer's view of its special tokens, for the
// bos_token, eos_token and pad_token a template reads.
type specialTokenizer interface {
	Special() tokenizer.Special
}

// DefaultTemplateDate is the day strftime_now gives a chat template (Llama 3's
// "Today Date"), unless Options.TemplateDate sets one: a fixed day, so that
// the same data gives the same tokens on any day (a resumed run checks it).
var DefaultTemplateDate = time.Date(2024, time.July, 26, 0, 0, 0, 0, time.UTC)

// chatTemplate is a compiled Hugging Face chat template.
type chatTemplate struct {
	source string // where it came from, for messages
	text   string
	tpl    *jinja.Template
	vars   map[string]jinja.Value // the globals HF gives every render
}

// compileChatTemplate compiles text; source names it in errors.
func compileChatTemplate(text, source string, tok Tokenizer, eos string, date time.Time) (*chatTemplate, error) {
	tpl, err := compileJinja(text)
	if err != nil {
		return nil, fmt.Errorf("chat template (%s) does not compile: %v", source, err)
	}
	c := &chatTemplate{source: source, text: text, tpl: tpl, vars: map[string]jinja.Value{}}
	if st, ok := tok.(specialTokenizer); ok {
		sp := st.Special()
		for name, s := range map[string]string{"bos_token": sp.BOSToken, "eos_token": sp.EOSToken, "pad_token": sp.PADToken} {
			if s != "" {
				c.vars[name] = jinja.NewString(s)
			}
		}
	}
	if _, ok := c.vars["eos_token"]; !ok && eos != "" {
		c.vars["eos_token"] = jinja.NewString(eos)
	}
	c.vars["raise_exception"] = jinja.NewCallable("raise_exception", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		msg := "raise_exception() without a message"
		if len(args) > 0 {
			msg = plainString(args[0])
		}
		return jinja.Undefined(), &templateRaise{msg}
	})
	c.vars[tojsonFunc] = jinja.NewCallable(tojsonFunc, tojson)
	c.vars["strftime_now"] = jinja.NewCallable("strftime_now", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		if len(args) == 0 || !args[0].IsString() {
			return jinja.Undefined(), errors.New("strftime_now wants a format string")
		}
		return jinja.NewString(strftime(date, args[0].AsString())), nil
	})
	return c, nil
}

// compileJinja compiles a template, turning a panic of the engine on
// malformed input into an error.
func compileJinja(text string) (tpl *jinja.Template, err error) {
	defer func() {
		if r := recover(); r != nil {
			tpl, err = nil, fmt.Errorf("the template engine failed: %v", r)
		}
	}()
	return jinja.Compile(rewriteTojson(text))
}

// tojsonFunc is the function rewriteTojson calls in place of the filter.
const tojsonFunc = "kdnative_tojson"

var tojsonRE = regexp.MustCompile(`\|\s*tojson\b`)

// rewriteTojson turns "operand | tojson(args)" into "kdnative_tojson(operand,
// args)" where the operand is a plain variable, attribute or item chain: the
// engine's own tojson sorts keys and escapes HTML under indent (Llama 3's
// tools block), and its filters cannot be replaced. Other uses (after
// another filter, on an expression in parentheses) keep the engine's filter,
// which writes JSON as Python does when there is no indent.
func rewriteTojson(src string) string {
	var b strings.Builder
	last := 0
	for _, m := range tojsonRE.FindAllStringIndex(src, -1) {
		if m[0] < last {
			continue
		}
		end := strings.TrimRight(src[:m[0]], " \t\n")
		start := len(end)
		for start > 0 && strings.IndexByte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.[]'\"", end[start-1]) >= 0 {
			start--
		}
		operand := end[start:]
		before := strings.TrimRight(end[:start], " \t\n")
		if operand == "" || strings.Count(operand, "[") != strings.Count(operand, "]") || (operand[0] >= '0' && operand[0] <= '9') || operand[0] == '.' || operand[0] == '[' ||
			strings.HasSuffix(before, "|") || start < last {
			continue
		}
		args, stop := "", m[1]
		if rest := src[m[1]:]; strings.HasPrefix(strings.TrimLeft(rest, " "), "(") {
			open := m[1] + strings.Index(rest, "(")
			closeAt := strings.IndexByte(src[open:], ')')
			if closeAt < 0 || strings.IndexByte(src[open+1:open+closeAt], '(') >= 0 {
				continue
			}
			args, stop = strings.TrimSpace(src[open+1:open+closeAt]), open+closeAt+1
		}
		b.WriteString(src[last:start])
		b.WriteString(tojsonFunc + "(" + operand)
		if args != "" {
			b.WriteString(", " + args)
		}
		b.WriteString(")")
		last = stop
	}
	b.WriteString(src[last:])
	return b.String()
}

// templateRaise is a template's own raise_exception.
type templateRaise struct{ msg string }

func (e *templateRaise) Error() string { return e.msg }

// render renders a conversation; tools is the line's "tools" (nil: none).
func (c *chatTemplate) render(msgs []Message, tools json.RawMessage, genPrompt bool, extra map[string]jinja.Value) (out string, err error) {
	vars := make(map[string]jinja.Value, len(c.vars)+4)
	for k, v := range c.vars {
		vars[k] = v
	}
	for k, v := range extra {
		vars[k] = v
	}
	list := make([]jinja.Value, len(msgs))
	for i, m := range msgs {
		list[i] = messageValue(m)
	}
	vars["messages"] = jinja.NewList(list)
	vars["add_generation_prompt"] = jinja.NewBool(genPrompt)
	if len(tools) > 0 {
		v, err := jsonValue(tools)
		if err != nil {
			return "", fmt.Errorf(`"tools": %v`, err)
		}
		vars["tools"] = v
	}
	defer func() {
		if r := recover(); r != nil {
			out, err = "", fmt.Errorf("chat template (%s) failed: the template engine stopped: %v", c.source, r)
		}
	}()
	out, err = c.tpl.RenderValues(vars)
	if err != nil {
		var tr *templateRaise
		if errors.As(err, &tr) {
			return "", fmt.Errorf("chat template (%s) refused the conversation: %s", c.source, tr.msg)
		}
		return "", fmt.Errorf("chat template (%s) failed: %v", c.source, err)
	}
	return out, nil
}

// messageValue is a message as transformers hands it to a template: role and
// content, and the reasoning under each name templates read it by
// (transformers' _alias_reasoning_fields: thinking first, reasoning_content
// last).
func messageValue(m Message) jinja.Value {
	d := jinja.NewDict()
	dict := d.AsDict()
	if m.Reasoning != "" {
		dict.Set("thinking", jinja.NewString(m.Reasoning))
	}
	dict.Set("role", jinja.NewString(m.Role))
	dict.Set("content", jinja.NewString(m.Content))
	if m.Reasoning != "" {
		dict.Set("reasoning_content", jinja.NewString(m.Reasoning))
	}
	return d
}

// jsonValue converts JSON to a template value, keeping the order of object
// keys (tojson must write tools as the data has them, as Python does).
func jsonValue(raw json.RawMessage) (jinja.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return jinja.Undefined(), err
	}
	if _, err := dec.Token(); err != io.EOF {
		return jinja.Undefined(), errors.New("trailing data after the value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (jinja.Value, error) {
	tok, err := dec.Token()
	if err != nil {
		return jinja.Undefined(), err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '[':
			var items []jinja.Value
			for dec.More() {
				v, err := decodeValue(dec)
				if err != nil {
					return jinja.Undefined(), err
				}
				items = append(items, v)
			}
			_, err := dec.Token() // ]
			return jinja.NewList(items), err
		case '{':
			d := jinja.NewDict()
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return jinja.Undefined(), err
				}
				k, _ := kt.(string)
				v, err := decodeValue(dec)
				if err != nil {
					return jinja.Undefined(), err
				}
				d.AsDict().Set(k, v)
			}
			_, err := dec.Token() // }
			return d, err
		}
		return jinja.Undefined(), fmt.Errorf("unexpected %v", t)
	case json.Number:
		return jinja.FromGoValue(t), nil
	case string:
		return jinja.NewString(t), nil
	case bool:
		return jinja.NewBool(t), nil
	case nil:
		return jinja.None(), nil
	}
	return jinja.Undefined(), fmt.Errorf("unexpected %v", tok)
}

// plainString is a value as {{ v }} writes it.
func plainString(v jinja.Value) string {
	if v.IsString() {
		return v.AsString()
	}
	return v.String()
}

// strftime formats t with Python's strftime directives (those chat templates
// use: dates, times, names of days and months).
func strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] != '%' || i+1 == len(format) {
			b.WriteByte(format[i])
			continue
		}
		i++
		switch format[i] {
		case 'Y':
			fmt.Fprintf(&b, "%04d", t.Year())
		case 'y':
			fmt.Fprintf(&b, "%02d", t.Year()%100)
		case 'm':
			fmt.Fprintf(&b, "%02d", int(t.Month()))
		case 'd':
			fmt.Fprintf(&b, "%02d", t.Day())
		case 'e':
			fmt.Fprintf(&b, "%2d", t.Day())
		case 'j':
			fmt.Fprintf(&b, "%03d", t.YearDay())
		case 'H':
			fmt.Fprintf(&b, "%02d", t.Hour())
		case 'I':
			h := t.Hour() % 12
			if h == 0 {
				h = 12
			}
			fmt.Fprintf(&b, "%02d", h)
		case 'M':
			fmt.Fprintf(&b, "%02d", t.Minute())
		case 'S':
			fmt.Fprintf(&b, "%02d", t.Second())
		case 'p':
			if t.Hour() < 12 {
				b.WriteString("AM")
			} else {
				b.WriteString("PM")
			}
		case 'B':
			b.WriteString(t.Month().String())
		case 'b', 'h':
			b.WriteString(t.Month().String()[:3])
		case 'A':
			b.WriteString(t.Weekday().String())
		case 'a':
			b.WriteString(t.Weekday().String()[:3])
		case 'Z':
			b.WriteString(t.Format("MST"))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	return b.String()
}

// tojson is transformers' tojson filter: Python's json.dumps with
// ensure_ascii=False, keys in their order (not sorted, unlike Jinja's own),
// and the indent, separators and sort_keys arguments. The engine's filter
// sorts keys and escapes HTML characters under indent, which would change
// every tool list a template prints.
func tojson(args []jinja.Value, kwargs map[string]jinja.Value) (jinja.Value, error) {
	if len(args) == 0 {
		return jinja.Undefined(), errors.New("tojson without a value")
	}
	enc := pyJSON{item: ", ", key: ": ", indent: -1}
	if v, ok := kwargs["indent"]; ok && !v.IsNone() && !v.IsUndefined() {
		switch {
		case v.IsInt():
			enc.indent = int(v.AsInt())
		case v.IsString():
			enc.indent, enc.indentStr = 0, v.AsString()
		default:
			return jinja.Undefined(), errors.New("tojson: indent must be an integer or a string")
		}
		if enc.indentStr == "" {
			enc.indentStr = strings.Repeat(" ", max(enc.indent, 0))
		}
		enc.indent = 1
		enc.item = ","
	}
	if v, ok := kwargs["separators"]; ok && !v.IsNone() && !v.IsUndefined() {
		if !v.IsList() || v.AsList().Len() != 2 || !v.AsList().Get(0).IsString() || !v.AsList().Get(1).IsString() {
			return jinja.Undefined(), errors.New("tojson: separators must be two strings")
		}
		enc.item, enc.key = v.AsList().Get(0).AsString(), v.AsList().Get(1).AsString()
	}
	if v, ok := kwargs["sort_keys"]; ok {
		enc.sort = v.IsTruthy()
	}
	if v, ok := kwargs["ensure_ascii"]; ok {
		enc.ascii = v.IsTruthy()
	}
	var b strings.Builder
	if err := enc.write(&b, args[0], 0); err != nil {
		return jinja.Undefined(), err
	}
	return jinja.NewString(b.String()), nil
}

// pyJSON writes values as Python's json.dumps does.
type pyJSON struct {
	item, key string
	indent    int // < 0: none
	indentStr string
	sort      bool
	ascii     bool
}

func (p pyJSON) newline(b *strings.Builder, depth int) {
	if p.indent < 0 {
		return
	}
	b.WriteByte('\n')
	for range depth {
		b.WriteString(p.indentStr)
	}
}

func (p pyJSON) write(b *strings.Builder, v jinja.Value, depth int) error {
	switch {
	case v.IsUndefined() || v.IsNone():
		b.WriteString("null")
	case v.IsBool():
		if v.AsBool() {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case v.IsInt():
		fmt.Fprintf(b, "%d", v.AsInt())
	case v.IsFloat():
		b.WriteString(pyFloat(v.AsFloat()))
	case v.IsString():
		p.str(b, v.AsString())
	case v.IsList():
		items := v.AsList().Items
		if len(items) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteByte('[')
		for i, it := range items {
			if i > 0 {
				b.WriteString(p.item)
			}
			p.newline(b, depth+1)
			if err := p.write(b, it, depth+1); err != nil {
				return err
			}
		}
		p.newline(b, depth)
		b.WriteByte(']')
	case v.IsDict():
		d := v.AsDict()
		keys := d.OrderedKeys()
		if p.sort {
			slices.Sort(keys)
		}
		if len(keys) == 0 {
			b.WriteString("{}")
			return nil
		}
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(p.item)
			}
			p.newline(b, depth+1)
			p.str(b, k)
			b.WriteString(p.key)
			val, _ := d.Get(k)
			if err := p.write(b, val, depth+1); err != nil {
				return err
			}
		}
		p.newline(b, depth)
		b.WriteByte('}')
	default:
		return fmt.Errorf("tojson: %s is not JSON serializable", v.String())
	}
	return nil
}

// str writes a JSON string as Python does: \" \\ \n \r \t \b \f escaped,
// other control characters as \u00XX, the rest as it is (or \uXXXX under
// ensure_ascii).
func (p pyJSON) str(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r < 0x20:
			fmt.Fprintf(b, `\u%04x`, r)
		case p.ascii && r > 0x7e:
			if r > 0xffff {
				r -= 0x10000
				fmt.Fprintf(b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
			} else {
				fmt.Fprintf(b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

// pyFloat is Python's repr of a float.
func pyFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	if a := math.Abs(f); a != 0 && (a < 1e-4 || a >= 1e16) {
		s := strconv.FormatFloat(f, 'e', -1, 64)
		return s
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}
