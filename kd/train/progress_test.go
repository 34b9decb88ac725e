package train

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProgressETA: the time left is the pace of the steps themselves, not
// of the setup before them. A run that spent an hour loading and evaluating
// before step 1, then takes 0.4 s a step, has 898 × 0.4 s = 5m59s left after
// step 2 of 900 — the old estimate (time since the start / steps done) said
// 449 hours at step 2, as the demo's first "1h16m left" did for 6 minutes.
func TestProgressETA(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var log bytes.Buffer
	m, err := openMetrics(filepath.Join(t.TempDir(), "metrics.jsonl"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	tr := &trainer{r: Recipe{LogEvery: 1}, log: &log, total: 900, metrics: m,
		start: now.Add(-time.Hour), pace: pace{now: func() time.Time { return now }}}
	step := func(tokens int64) string {
		log.Reset()
		tr.step++
		tr.tokens += tokens
		tr.report(stepStats{loss: 1})
		return log.String()
	}
	// Step 1 carries the warm-up: no estimate from it.
	if line := step(2048); !strings.Contains(line, "(timing the steps)") || strings.Contains(line, "left") {
		t.Errorf("step 1: %q", line)
	}
	now = now.Add(400 * time.Millisecond)
	if line := step(2048); !strings.Contains(line, "5120 tok/s  5m59s left") {
		t.Errorf("step 2 of 900 at 0.4 s a step: %q, want 5120 tok/s and 5m59s left", line)
	}
	// A slow step (an evaluation) enters the mean, not the whole estimate:
	// (0.4 + 2) / 2 = 1.2 s a step, × 897 steps left = 1076 s ≈ 18m.
	now = now.Add(2 * time.Second)
	if line := step(2048); !strings.Contains(line, "18m left") {
		t.Errorf("step 3 after a 2 s step: %q, want 18m left", line)
	}
}

func TestFormatLeft(t *testing.T) {
	for d, want := range map[time.Duration]string{
		59*time.Second + 400*time.Millisecond: "59s",
		9*time.Minute + 59*time.Second:        "9m59s",
		16*time.Minute + 20*time.Second:       "16m",
		time.Hour + 16*time.Minute:            "1h16m",
		3 * time.Hour:                         "3h0m",
	} {
		if got := formatLeft(d); got != want {
			t.Errorf("formatLeft(%v) = %q, want %q", d, got, want)
		}
	}
}
