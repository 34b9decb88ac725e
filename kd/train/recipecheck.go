package train

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// recipeProblem is one thing wrong with a recipe's YAML, in the recipe's own
// words: the key path (data.max_len) and what was expected, and the line it
// is on (0 when unknown, as for --set).
type recipeProblem struct {
	Line int
	Msg  string
}

// checkRecipeYAML walks a parsed recipe beside the Recipe type and reports
// what yaml's decoder would reject, and non-finite numbers, in users' words:
// "unknown key data.max_lenn (did you mean max_len?)" rather than "field
// max_lenn not found in type train.DataRecipe", and `data.max_len: expected
// an integer, got "eight"` rather than "cannot unmarshal !!str `eight` into
// int".
func checkRecipeYAML(doc *yaml.Node) []recipeProblem {
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil
		}
		doc = doc.Content[0]
	}
	var out []recipeProblem
	checkNode(doc, reflect.TypeOf(Recipe{}), "", &out)
	return out
}

var yamlUnmarshaler = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

func checkNode(n *yaml.Node, t reflect.Type, path string, out *[]recipeProblem) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	bad := func(format string, a ...any) {
		msg := fmt.Sprintf(format, a...)
		if path != "" {
			msg = path + ": " + msg
		}
		*out = append(*out, recipeProblem{Line: n.Line, Msg: msg})
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // the key's default (an objective left off)
	}
	if reflect.PointerTo(t).Implements(yamlUnmarshaler) {
		// A type that reads its own YAML (EvalTask: a file name or a
		// mapping) says itself what is wrong.
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			bad("%v", err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			bad("expected keys (%s), got %s", strings.Join(fieldNames(t), ", "), describeNode(n))
			return
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" {
				continue // a YAML merge; the decoder checks what it brings
			}
			key := joinKey(path, k.Value)
			if line, dup := seen[k.Value]; dup {
				*out = append(*out, recipeProblem{Line: k.Line, Msg: fmt.Sprintf("%s is given twice (lines %d and %d)", key, line, k.Line)})
				continue
			}
			seen[k.Value] = k.Line
			f, ok := fieldByKey(t, k.Value)
			if !ok {
				msg := "unknown key " + key
				if s := closest(k.Value, fieldNames(t)); s != "" {
					msg += fmt.Sprintf(" (did you mean %s?)", s)
				} else if s := elsewhere(k.Value); s != "" && s != key {
					msg += fmt.Sprintf(" (did you mean %s?)", s)
				} else {
					where := "at the top level"
					if path != "" {
						where = "under " + path
					}
					msg += fmt.Sprintf(" (the keys %s are %s)", where, strings.Join(fieldNames(t), ", "))
				}
				*out = append(*out, recipeProblem{Line: k.Line, Msg: msg})
				continue
			}
			checkNode(v, f.Type, key, out)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			bad("expected a list, got %s", describeNode(n))
			return
		}
		for i, e := range n.Content {
			checkNode(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), out)
		}
	default:
		if n.Kind != yaml.ScalarNode {
			bad("expected %s, got %s", kindWords(t), describeNode(n))
			return
		}
		v := reflect.New(t)
		if err := n.Decode(v.Interface()); err != nil {
			bad("expected %s, got %q", kindWords(t), n.Value)
			return
		}
		switch t.Kind() {
		case reflect.Int, reflect.Int64, reflect.Uint64:
			// yaml puts 2.5 into an int as 2: a count must be written whole.
			if n.ShortTag() == "!!float" {
				var f float64
				if n.Decode(&f) != nil || f != math.Trunc(f) {
					bad("expected %s, got %q", kindWords(t), n.Value)
				}
			}
		case reflect.Float64:
			if f := v.Elem().Float(); math.IsNaN(f) || math.IsInf(f, 0) {
				bad("expected a finite number, got %s", n.Value)
			}
		}
	}
}

// fieldByKey finds the struct field whose yaml key is key.
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if yamlKey(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func yamlKey(f reflect.StructField) string { return strings.Split(f.Tag.Get("yaml"), ",")[0] }

func fieldNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if k := yamlKey(t.Field(i)); k != "" && k != "-" {
			out = append(out, k)
		}
	}
	return out
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// kindWords says what a value of type t is written as.
func kindWords(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Uint64:
		return "a whole number ≥ 0"
	case reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "text"
	}
	return t.String()
}

// describeNode names what a YAML node holds, for "expected …, got …".
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "keys (a mapping)"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "nothing"
}

// closest is the candidate nearest to s by edit distance, if it is near
// enough to be the key meant (a typo, not another word).
func closest(s string, candidates []string) string {
	best, bestD := "", math.MaxInt
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), c); d < bestD {
			best, bestD = c, d
		}
	}
	if bestD <= max(1, min(len(s), len(best))/3) {
		return best
	}
	// A key with something added or cut off (max_lenght, max_length).
	var hits []string
	for _, c := range candidates {
		if min(len(s), len(c)) >= 3 && (strings.HasPrefix(s, c) || strings.HasPrefix(c, s)) {
			hits = append(hits, c)
		}
	}
	if len(hits) == 1 {
		return hits[0]
	}
	return ""
}

// elsewhere is the one full key path, other than under path, whose last part
// is key (max_len written at the top level means data.max_len).
func elsewhere(key string) string {
	var hits []string
	for _, k := range Keys() {
		if k == key || strings.HasSuffix(k, "."+key) {
			hits = append(hits, k)
		}
	}
	if len(hits) == 1 {
		return hits[0]
	}
	return ""
}

// editDistance is the Levenshtein distance between a and b (bytes; keys are
// ASCII), with a transposition of neighbours counting as one edit.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// yamlLine matches the "line N: " yaml puts in its syntax errors.
var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// syntaxProblem turns a yaml parse error into a recipeProblem.
func syntaxProblem(err error) recipeProblem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return recipeProblem{Line: line, Msg: "not valid YAML: " + m[2]}
	}
	return recipeProblem{Msg: "not valid YAML: " + msg}
}

// nonFinite lists the key paths of the recipe's float fields that hold NaN
// or ±Inf (for recipes built in code; a file or --set is checked as read).
func nonFinite(r *Recipe) []string {
	var out []string
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		for v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return
			}
			v = v.Elem()
		}
		switch v.Kind() {
		case reflect.Struct:
			for i := range v.NumField() {
				walk(v.Field(i), joinKey(path, yamlKey(v.Type().Field(i))))
			}
		case reflect.Float64:
			if f := v.Float(); math.IsNaN(f) || math.IsInf(f, 0) {
				out = append(out, fmt.Sprintf("%s: %g is not a finite number", path, f))
			}
		}
	}
	walk(reflect.ValueOf(r), "")
	return slices.Clip(out)
}
