package tasks

import "github.com/kdnative/kdnative/kd/tasks/answer"

// Judgement is how one output scored.
type Judgement struct {
	// Extracted is the final answer found in the output ("" when Found is
	// false: the example is wrong).
	Extracted string
	Found     bool
	Correct   bool
}

// Check scores one output of a generate example that is not judged: the
// answer extracted (kd/tasks/answer) and compared with the references.
func (ex *Example) Check(output string) Judgement {
	extract := ex.Extract
	if extract == "" && ex.Score == ScoreNumeric {
		extract = answer.ExtractLastNumber
	}
	got, ok := answer.Extract(output, extract, ex.extractRe, ex.ExtractLast)
	j := Judgement{Extracted: got, Found: ok}
	if ok {
		c := answer.Comparison{Match: ex.Score, Normalize: ex.Normalize, Tolerance: ex.Tolerance, RelTolerance: ex.RelTolerance}
		j.Correct = c.Equal(got, ex.Answers, ex.Numbers)
	}
	return j
}
