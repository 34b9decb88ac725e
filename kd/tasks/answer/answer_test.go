package answer

import (
	"math"
	"regexp"
	"testing"
)

// gsm8kSolution is a GSM8K training answer (test item "Natalia sold clips…"),
// in the dataset's own format: calculator annotations, then "#### answer".
const gsm8kSolution = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n" +
	"Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"

func TestExtract(t *testing.T) {
	cases := []struct {
		name, output, extract, regex string
		last                         bool
		want                         string
		found                        bool
	}{
		{"gsm8k", gsm8kSolution, ExtractGSM8K, "", false, "72", true},
		{"gsm8k thousands", "They paid 4 * 250 = <<4*250=1000>>1000 dollars.\n#### 1,000", ExtractGSM8K, "", false, "1,000", true},
		{"gsm8k missing", "Natalia sold 72 clips.", ExtractGSM8K, "", false, "", false},
		{"boxed fraction", `So the probability is $\boxed{\frac{1}{2}}$.`, ExtractBoxed, "", false, `\frac{1}{2}`, true},
		{"boxed nested", `Thus $\cos 30^\circ = \boxed{\frac{\sqrt{3}}{2}}$`, ExtractBoxed, "", false, `\frac{\sqrt{3}}{2}`, true},
		{"boxed last", `First \boxed{1}, on reflection \boxed{2}.`, ExtractBoxed, "", false, "2", true},
		{"boxed cut off", `The answer is \boxed{\frac{1}{2`, ExtractBoxed, "", false, "", false},
		{"boxed space form", `so the answer is \boxed 5$.`, ExtractBoxed, "", false, "5", true},
		{"fbox", `\fbox{(C)}`, ExtractBoxed, "", false, "(C)", true},
		{"last number", "Tom had 3 apples, bought 4, so he has $1,000.50 worth.", ExtractLastNumber, "", false, "$1,000.50", true},
		{"last number negative", "The temperature fell to -3.50 degrees.", ExtractLastNumber, "", false, "-3.50", true},
		{"first number", "7 is the answer, not 8", ExtractFirstNumber, "", false, "7", true},
		{"no number", "I do not know.", ExtractLastNumber, "", false, "", false},
		{"regex group first", "The answer is 12. Wait, the answer is 13.", "", `answer is (\d+)`, false, "12", true},
		{"regex group last", "The answer is 12. Wait, the answer is 13.", "", `answer is (\d+)`, true, "13", true},
		{"regex whole match", "Final: B", "", `[A-D]$`, false, "B", true},
	}
	for _, c := range cases {
		var re *regexp.Regexp
		extract := c.extract
		if c.regex != "" {
			re, extract = regexp.MustCompile(c.regex), c.regex
		}
		got, found := Extract(c.output, extract, re, c.last)
		if got != c.want || found != c.found {
			t.Errorf("%s: Extract(%q) = %q, %v; want %q, %v", c.name, c.output, got, found, c.want, c.found)
		}
	}
}

func TestParseNumber(t *testing.T) {
	cases := []struct {
		in   string
		want float64
		ok   bool
	}{
		{"72", 72, true}, {"1,000", 1000, true}, {"$1,000", 1000, true}, {`\$1,000`, 1000, true},
		{"-3.50", -3.5, true}, {"+7", 7, true}, {".5", 0.5, true}, {"1,234,567.89", 1234567.89, true},
		{"42 apples", 42, true}, {"12 cm.", 12, true}, {"18 dollars", 18, true}, {`5\text{ cm}`, 5, true},
		{`\text{18 dollars}`, 18, true}, {"5 m^2", 5, true}, {"50%", 50, true}, {`50\%`, 50, true},
		{"x = 5", 5, true}, {"1e-3", 0.001, true}, {"−7", -7, true},
		{`\frac{1}{2}`, 0.5, true}, {`\dfrac{3}{4}`, 0.75, true}, {`-\frac34`, -0.75, true}, {"3/4", 0.75, true},
		{`\frac{1}{0}`, 0, false}, {"3 4", 0, false}, {"1,5", 0, false}, {"abc", 0, false}, {"", 0, false},
		{"12,34", 0, false},
	}
	for _, c := range cases {
		got, ok := ParseNumber(c.in)
		if ok != c.ok || (ok && math.Abs(got-c.want) > 1e-12) {
			t.Errorf("ParseNumber(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestNormalize(t *testing.T) {
	cases := []struct{ in, mode, want string }{
		// Minerva (lm-evaluation-harness minerva_math normalize_final_answer), then decimals.
		{`\boxed{\frac{1}{2}}`, NormalizeMath, `\frac{1}{2}`},
		{`\frac12`, NormalizeMath, `\frac{1}{2}`},
		{`\dfrac{1}{2}`, NormalizeMath, `\frac{1}{2}`},
		{"$1,000$", NormalizeMath, "1000"},
		{"1,000,000", NormalizeMath, "1000000"},
		{"-3.50", NormalizeMath, "-3.5"},
		{"3.", NormalizeMath, "3"},
		{"007", NormalizeMath, "7"},
		{`5\text{ cm}`, NormalizeMath, "5"},
		{"18 dollars", NormalizeMath, "18"},
		{"10^\\circ", NormalizeMath, "10"},
		{"x = 10", NormalizeMath, "10"},
		{`\text{(B)}`, NormalizeMath, "(B)"},
		{`\left( 3, \frac{\pi}{2} \right)`, NormalizeMath, `(3,\frac{\pi}{2})`},
		{`\sqrt2`, NormalizeMath, `\sqrt{2}`},
		// SQuAD.
		{"The Eiffel Tower.", NormalizeText, "eiffel tower"},
		{"  an   Apple, a day ", NormalizeText, "apple day"},
		{"-3.50", NormalizeText, "350"},
		{"  Kept As Is. ", NormalizeNone, "Kept As Is."},
	}
	for _, c := range cases {
		if got := Normalize(c.in, c.mode); got != c.want {
			t.Errorf("Normalize(%q, %s) = %q, want %q", c.in, c.mode, got, c.want)
		}
	}
}

// TestComparison: each way of matching, on answers extracted already.
func TestComparison(t *testing.T) {
	cases := []struct {
		c       Comparison
		got     string
		answers []string
		numbers []float64
		want    bool
	}{
		{Comparison{Normalize: NormalizeText}, "The Eiffel Tower!", []string{"eiffel tower"}, nil, true},
		{Comparison{Normalize: NormalizeNone}, "The Eiffel Tower!", []string{"eiffel tower"}, nil, false},
		{Comparison{Match: MatchContains, Normalize: NormalizeText}, "it is Paris, France", []string{"paris"}, nil, true},
		{Comparison{Match: MatchContains, Normalize: NormalizeText}, "it is Lyon", []string{"paris"}, nil, false},
		{Comparison{Match: MatchContains, Normalize: NormalizeText}, "anything", []string{"the"}, nil, false}, // normalizes to "": never contained
		{Comparison{Match: MatchNumeric, Tolerance: 1e-6}, "$1,000", nil, []float64{1000}, true},
		{Comparison{Match: MatchNumeric, Tolerance: 1e-6}, "999.9", nil, []float64{1000}, false},
		{Comparison{Match: MatchNumeric, Tolerance: 0.2}, "999.9", nil, []float64{1000}, true},
		{Comparison{Match: MatchNumeric, RelTolerance: 0.01}, "1005", nil, []float64{1000}, true},
		{Comparison{Match: MatchNumeric, Tolerance: 1}, "many", nil, []float64{1000}, false},
		{Comparison{Normalize: NormalizeMath}, `\frac12`, []string{`\frac{1}{2}`}, nil, true},
	}
	for _, c := range cases {
		if got := c.c.Equal(c.got, c.answers, c.numbers); got != c.want {
			t.Errorf("%+v.Equal(%q, %q, %v) = %v, want %v", c.c, c.got, c.answers, c.numbers, got, c.want)
		}
	}
}
