// Package answer finds the final answer in a model's output and compares it
// with a reference, as lm-evaluation-harness and lighteval do: extraction
// presets (\boxed{…}, GSM8K's "#### 42", the first or last number) or a
// regular expression, the SQuAD and Minerva normalizations, and numbers read
// the way answers are written, equal within a tolerance. `kdnative eval
// --task` scores with it, and `kdnative elicit self` judges the student's
// samples with it; it imports nothing of kdnative's, so either may use it.
package answer

import (
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// The normalizations applied before exact match and containment.
const (
	// NormalizeText is SQuAD's answer normalization (as lm-evaluation-harness
	// and lighteval use it): lower case, ASCII punctuation removed, the
	// articles a/an/the removed, whitespace collapsed.
	NormalizeText = "text"
	// NormalizeMath is the Minerva normalization of final answers
	// (Lewkowycz et al. 2022, appendix D, as lm-evaluation-harness's
	// minerva_math has it: units and TeX wrappers removed, \fracab →
	// \frac{a}{b}, thousands separators dropped), then plain decimal numbers
	// written canonically (-3.50 → -3.5, +7 → 7).
	NormalizeMath = "math"
	// NormalizeNone only trims surrounding whitespace.
	NormalizeNone = "none"
)

// Normalize applies one of the normalizations to s.
func Normalize(s, mode string) string {
	switch mode {
	case NormalizeText:
		return normalizeText(s)
	case NormalizeMath:
		return normalizeMath(s)
	}
	return strings.TrimSpace(s)
}

var articles = regexp.MustCompile(`\b(a|an|the)\b`)

func normalizeText(s string) string {
	s = strings.ToLower(s)
	s = strings.Map(func(r rune) rune {
		if r < 128 && unicode.IsPunct(r) || r < 128 && unicode.IsSymbol(r) {
			return -1 // Python's string.punctuation: ASCII punctuation and symbols
		}
		return r
	}, s)
	s = articles.ReplaceAllString(s, " ")
	return strings.Join(strings.Fields(s), " ")
}

// minervaSubstitutions and minervaRemoved are normalize_final_answer's
// tables, in its order.
var minervaSubstitutions = [][2]string{
	{"an ", ""}, {"a ", ""}, {".$", "$"}, {`\$`, ""}, {`\ `, ""}, {" ", ""}, {"mbox", "text"},
	{`,\text{and}`, ","}, {`\text{and}`, ","}, {`\text{m}`, `\text{}`},
}

var minervaRemoved = []string{
	"square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", `\ldots`, "sue",
	"points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals", "edges",
	"students", "childrentickets", "multiples", `\text{s}`, `\text{.}`, "\\text{\ns}", `\text{}^2`, `\text{}^3`,
	"\\text{\n}", `\text{}`, `\mathrm{th}`, `^\circ`, `^{\circ}`, `\;`, `,\!`, "{,}", `"`, `\dots`,
}

var (
	reDollars  = regexp.MustCompile(`(.*?)(\$)(.*?)(\$)(.*)`)
	reText     = regexp.MustCompile(`(\\text\{)(.*?)(\})`)
	reTextbf   = regexp.MustCompile(`(\\textbf\{)(.*?)(\})`)
	reOverline = regexp.MustCompile(`(\\overline\{)(.*?)(\})`)
	reBoxed    = regexp.MustCompile(`(\\boxed\{)(.*)(\})`)
	reFrac     = regexp.MustCompile(`(frac)([^{])(.)`)
	reSqrt     = regexp.MustCompile(`(sqrt)([^{])`)
	reDecimal  = regexp.MustCompile(`^[-+]?(\d+\.?\d*|\.\d+)$`)
)

func normalizeMath(s string) string {
	// \dfrac and \tfrac are \frac, and \left( … \right) are ( … ), for
	// equality's sake (as the MATH grader's strip_string does).
	s = strings.NewReplacer(`\dfrac`, `\frac`, `\tfrac`, `\frac`, `\left`, "", `\right`, "").Replace(s)
	// normalize_final_answer, step by step.
	if i := strings.LastIndex(s, "="); i >= 0 {
		s = s[i+1:]
	}
	for _, sub := range minervaSubstitutions {
		s = strings.ReplaceAll(s, sub[0], sub[1])
	}
	for _, r := range minervaRemoved {
		s = strings.ReplaceAll(s, r, "")
	}
	s = reDollars.ReplaceAllString(s, "$$$3$$")
	s = reText.ReplaceAllString(s, "$2")
	s = reTextbf.ReplaceAllString(s, "$2")
	s = reOverline.ReplaceAllString(s, "$2")
	s = reBoxed.ReplaceAllString(s, "$2")
	s = reFrac.ReplaceAllString(s, "frac{$2}{$3}")
	s = reSqrt.ReplaceAllString(s, "sqrt{$2}")
	s = strings.ReplaceAll(s, "$", "")
	if noCommas := strings.ReplaceAll(s, ",", ""); isDigits(noCommas) {
		s = noCommas
	}
	// Our addition: a sentence's full stop, and one way to write a decimal.
	s = strings.TrimRight(s, ".")
	if reDecimal.MatchString(s) {
		s = canonicalDecimal(s)
	}
	return s
}

// isDigits is Python's str.isdigit: non-empty, digits only.
func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !unicode.IsDigit(r) {
			return false
		}
	}
	return true
}

// canonicalDecimal writes a plain decimal without sign clutter, leading or
// trailing zeros: "+007.50" → "7.5", "-0.0" → "0", ".5" → "0.5". It works
// on the digits, so long integers keep every digit.
func canonicalDecimal(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimLeft(s, "+-")
	intPart, frac, _ := strings.Cut(s, ".")
	intPart = strings.TrimLeft(intPart, "0")
	frac = strings.TrimRight(frac, "0")
	if intPart == "" {
		intPart = "0"
	}
	out := intPart
	if frac != "" {
		out += "." + frac
	}
	if neg && out != "0" {
		out = "-" + out
	}
	return out
}

// Extraction presets.
const (
	// ExtractBoxed is the content of the last \boxed{…} (or \fbox{…}), braces
	// balanced, as MATH's last_boxed_only_string finds it.
	ExtractBoxed = "boxed"
	// ExtractGSM8K is the number after "#### " (GSM8K's answer format; the
	// harness's strict-match filter).
	ExtractGSM8K = "gsm8k"
	// ExtractLastNumber and ExtractFirstNumber are the last (first) number
	// written in the output: an optional sign and $, digits with optional
	// thousands separators, decimals and a /denominator.
	ExtractLastNumber  = "last_number"
	ExtractFirstNumber = "first_number"
)

// Presets are the extraction presets' names.
var Presets = []string{ExtractBoxed, ExtractGSM8K, ExtractLastNumber, ExtractFirstNumber}

// IsPreset reports whether s names an extraction preset (else an extract
// string is a regular expression).
func IsPreset(s string) bool { return slices.Contains(Presets, s) }

var (
	reGSM8K  = regexp.MustCompile(`#### (\-?[0-9\.\,]+)`)
	reNumber = regexp.MustCompile(`[-+]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?|[-+]?\.\d+`)
)

// Extract picks the final answer out of a model's output with a preset or a
// regular expression (its one group, or the whole match; the first match
// unless last). It reports false when there is none.
func Extract(output, extract string, re *regexp.Regexp, last bool) (string, bool) {
	switch extract {
	case "":
		return output, true
	case ExtractBoxed:
		return lastBoxed(output)
	case ExtractGSM8K:
		re, last = reGSM8K, false
	case ExtractLastNumber:
		re, last = reNumber, true
	case ExtractFirstNumber:
		re, last = reNumber, false
	}
	if re == nil {
		re = regexp.MustCompile(extract)
	}
	var m []string
	if last {
		all := re.FindAllStringSubmatch(output, -1)
		if len(all) > 0 {
			m = all[len(all)-1]
		}
	} else {
		m = re.FindStringSubmatch(output)
	}
	if m == nil {
		return "", false
	}
	if len(m) > 1 {
		return m[1], true
	}
	return m[0], true
}

// lastBoxed is the content of the last \boxed{…} or \fbox{…} with balanced
// braces, or of "\boxed x" up to a $ (last_boxed_only_string + remove_boxed).
func lastBoxed(s string) (string, bool) {
	if i := strings.LastIndex(s, `\boxed `); i >= 0 && !strings.Contains(s[i:], `\boxed{`) {
		rest := s[i+len(`\boxed `):]
		rest, _, _ = strings.Cut(rest, "$")
		return strings.TrimSpace(rest), true
	}
	idx, prefix := strings.LastIndex(s, `\boxed{`), `\boxed{`
	if idx < 0 {
		idx, prefix = strings.LastIndex(s, `\fbox{`), `\fbox{`
	}
	if idx < 0 {
		return "", false
	}
	depth := 0
	for i := idx; i < len(s); i++ {
		switch s[i] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return s[idx+len(prefix) : i], true
			}
		}
	}
	return "", false // unbalanced: the output was cut off
}

var (
	reNumberPrefix = regexp.MustCompile(`^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|^[-+]?\.\d+(?:[eE][-+]?\d+)?`)
	reTeXFrac      = regexp.MustCompile(`^([-+]?)\\frac\{\s*([-+]?[\d.]+)\s*\}\{\s*([-+]?[\d.]+)\s*\}`)
	reTeXFracShort = regexp.MustCompile(`^([-+]?)\\frac(\d)(\d)`)
	reTeXText      = regexp.MustCompile(`\\(?:text|mbox|mathrm)\{([^}]*)\}`)
)

// ParseNumber reads a number the way answers are written: "1,000", "$1,000",
// "-3.50", "42 apples", "12 cm.", "x = 5", "\frac{1}{2}", "-\frac34", "3/4",
// "50%" (50), "1e-3". Text after the number (units) is allowed when it holds
// no other number, or starts with a letter or ^ ("5 m^2"); anything else is
// not a number.
func ParseNumber(s string) (float64, bool) {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "="); i >= 0 {
		s = strings.TrimSpace(s[i+1:])
	}
	s = reTeXText.ReplaceAllString(s, " $1")
	s = strings.NewReplacer(`\$`, "", "$", "", `\(`, "", `\)`, "", `\[`, "", `\]`, "", `\!`, "", `\,`, "", "{,}", ",",
		`\%`, "%", `\dfrac`, `\frac`, `\tfrac`, `\frac`, `\left`, "", `\right`, "", "−", "-").Replace(s)
	s = strings.TrimSpace(s)
	if m := reTeXFrac.FindStringSubmatch(s); m != nil {
		return fraction(m[1], m[2], m[3], s[len(m[0]):])
	}
	if m := reTeXFracShort.FindStringSubmatch(s); m != nil {
		return fraction(m[1], m[2], m[3], s[len(m[0]):])
	}
	m := reNumberPrefix.FindString(s)
	if m == "" {
		return 0, false
	}
	rest := s[len(m):]
	if strings.HasPrefix(rest, "/") {
		if d := reNumberPrefix.FindString(rest[1:]); d != "" && !strings.ContainsAny(d, "+-") {
			return fraction("", m, d, rest[1+len(d):])
		}
	}
	if !unitsOnly(rest) {
		return 0, false
	}
	v, err := strconv.ParseFloat(strings.ReplaceAll(m, ",", ""), 64)
	if err != nil || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}

func fraction(sign, num, den, rest string) (float64, bool) {
	if !unitsOnly(rest) {
		return 0, false
	}
	a, err1 := strconv.ParseFloat(strings.ReplaceAll(num, ",", ""), 64)
	b, err2 := strconv.ParseFloat(strings.ReplaceAll(den, ",", ""), 64)
	if err1 != nil || err2 != nil || b == 0 {
		return 0, false
	}
	v := a / b
	if sign == "-" {
		v = -v
	}
	return v, true
}

// unitsOnly reports whether what follows a number is units or punctuation
// rather than more numbers.
func unitsOnly(rest string) bool {
	rest = strings.TrimSpace(rest)
	if rest == "" {
		return true
	}
	r := []rune(rest)[0]
	if unicode.IsLetter(r) || r == '^' || r == '%' || r == '\\' {
		return true
	}
	return !strings.ContainsFunc(rest, unicode.IsDigit) && !unicode.IsDigit(r)
}

// NumbersEqual is numeric equality within an absolute tolerance or a
// tolerance relative to the larger magnitude.
func NumbersEqual(a, b, tol, relTol float64) bool {
	return math.Abs(a-b) <= math.Max(tol, relTol*math.Max(math.Abs(a), math.Abs(b)))
}

// The ways an extracted answer is compared with the references.
const (
	// MatchExact: equal after normalization.
	MatchExact = "exact"
	// MatchNumeric: equal as numbers (ParseNumber) within the tolerances.
	MatchNumeric = "numeric"
	// MatchContains: a normalized reference occurs in the normalized answer.
	MatchContains = "contains"
)

// Comparison says how an extracted answer is compared with references.
type Comparison struct {
	// Match is MatchExact ("" too), MatchNumeric or MatchContains.
	Match string
	// Normalize is applied to both sides of exact and contains.
	Normalize string
	// Tolerance and RelTolerance bound a numeric difference (NumbersEqual).
	Tolerance, RelTolerance float64
}

// Equal reports whether got, an extracted answer, matches one of answers
// (numbers: the answers as numbers, used by MatchNumeric; a got that is not
// a number matches none).
func (c Comparison) Equal(got string, answers []string, numbers []float64) bool {
	switch c.Match {
	case MatchNumeric:
		v, ok := ParseNumber(got)
		if !ok {
			return false
		}
		for _, want := range numbers {
			if NumbersEqual(v, want, c.Tolerance, c.RelTolerance) {
				return true
			}
		}
	case MatchContains:
		out := Normalize(got, c.Normalize)
		for _, want := range answers {
			if w := Normalize(want, c.Normalize); w != "" && strings.Contains(out, w) {
				return true
			}
		}
	default:
		out := Normalize(got, c.Normalize)
		for _, want := range answers {
			if out == Normalize(want, c.Normalize) {
				return true
			}
		}
	}
	return false
}
