package train

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestRLLocalJudge: the teacher as a local judge is served inside the
// training process and asked elicit's judging prompt for every answer; a
// model without a chat template is refused at the first judgement with the
// server's reason, and with judge_template it judges (the demo's teacher
// writes Moby-Dick, not scores: whatever it says is either a score on the
// scale or counted unjudged, and the run goes on; judge_prompt replaces the
// long built-in prompt, which would not fit its 128 positions).
func TestRLLocalJudge(t *testing.T) {
	w := newDemoWorld(t, 16)
	r := w.rlRecipe(filepath.Join(w.dir, "no-template"), RLTerm{Reward: "judge", GroupSize: 2, EvalSamples: ptr(2), JudgeMaxTokens: 4})
	r.Teacher = w.teacher
	r.MaxSteps, r.BatchSize, r.LogEvery = 2, 2, 1
	var log bytes.Buffer
	_, err := Run(context.Background(), cpu.New(), r, Options{Log: &log})
	if err == nil || !strings.Contains(err.Error(), "the judge") || !strings.Contains(err.Error(), "no chat template") {
		t.Fatalf("%v, want the judge's refusal for want of a chat template\n%s", err, log.String())
	}
	// (the demo's teacher has 128 positions: a short judging prompt)
	r.Objectives.RL.JudgeTemplate, r.Objectives.RL.JudgePrompt = "chatml", "{response}\nScore 0-{max}:"
	r.Output = filepath.Join(w.dir, "chatml")
	_, out := run(t, r, false)
	if !strings.Contains(out, "served in this process") {
		t.Fatalf("the log does not say where the judge is:\n%s", out)
	}
	for _, rec := range metricLines(t, r.Output) {
		if rec["sampled_rows"].(float64) != 4 {
			t.Fatalf("a step of 2 prompts × 2 answers has %v answers", rec["sampled_rows"])
		}
	}
}
