package tasks

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

func TestCheck(t *testing.T) {
	mk := func(line string) *Example {
		t.Helper()
		ex, err := parseLine(line)
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}
	cases := []struct {
		line, output string
		correct      bool
	}{
		{`{"kind":"generate","prompt":"q","answer":72,"score":"numeric","extract":"gsm8k"}`, gsm8kSolution, true},
		{`{"kind":"generate","prompt":"q","answer":"72","score":"numeric"}`, "So she sold 72 clips.", true},
		{`{"kind":"generate","prompt":"q","answer":"1000","score":"numeric"}`, "The total is $1,000.", true},
		{`{"kind":"generate","prompt":"q","answer":"-3.5","score":"numeric"}`, "It ends at -3.50", true},
		{`{"kind":"generate","prompt":"q","answer":"-3.5","score":"numeric"}`, "It ends at -3.49", false},
		{`{"kind":"generate","prompt":"q","answer":"-3.5","score":"numeric","tolerance":0.02}`, "It ends at -3.49", true},
		{`{"kind":"generate","prompt":"q","answer":"1000","score":"numeric","tolerance":0,"rel_tolerance":0.01}`, "about 1005", true},
		{`{"kind":"generate","prompt":"q","answer":"0.5","score":"numeric","extract":"boxed"}`, `$\boxed{\frac{1}{2}}$`, true},
		{`{"kind":"generate","prompt":"q","answer":"\\frac12","extract":"boxed","normalize":"math"}`, `$\boxed{\frac{1}{2}}$`, true},
		{`{"kind":"generate","prompt":"q","answer":"\\frac12","extract":"boxed","normalize":"math"}`, `$\boxed{\frac{1}{3}}$`, false},
		{`{"kind":"generate","prompt":"q","answer":"5","extract":"boxed","normalize":"math"}`, `The length is \boxed{5\text{ cm}}.`, true},
		{`{"kind":"generate","prompt":"q","answer":"5","extract":"boxed","normalize":"math"}`, `no box: 5`, false},
		{`{"kind":"generate","prompt":"q","answer":["Eiffel Tower","La tour Eiffel"]}`, "the eiffel tower", true},
		{`{"kind":"generate","prompt":"q","answer":"Paris","score":"contains"}`, "I think it is Paris, France.", true},
		{`{"kind":"generate","prompt":"q","answer":"Paris","score":"contains"}`, "Lyon.", false},
		{`{"kind":"generate","prompt":"q","answer":"B","extract":"answer is \\(?([A-D])","normalize":"none"}`, "The answer is (B).", true},
	}
	for _, c := range cases {
		ex := mk(c.line)
		if got := ex.Check(c.output); got.Correct != c.correct {
			t.Errorf("%s on %q: correct %v (extracted %q, found %v), want %v", c.line, c.output, got.Correct, got.Extracted, got.Found, c.correct)
		}
	}
}
