package tasks

import "testing"

// gsm8kSolution is a GSM8K training answer (test item "Natalia sold clips…"),
// in the dataset's own format: calculator annotations, then "#### answer".
const gsm8kSolution = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n" +
	"Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"

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
