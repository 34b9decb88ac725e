package train

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// report prints one step's progress: a redrawn line on a terminal, a plain
// line every LogEvery steps otherwise, and a metrics record every LogEvery.
func (t *trainer) report(st stepStats) {
	elapsed := time.Since(t.start).Seconds()
	tps := float64(t.tokens) / max(elapsed, 1e-9)
	left := time.Duration(float64(t.total-t.step) * elapsed / float64(max(1, t.step-t.firstStep())) * float64(time.Second))
	line := fmt.Sprintf("step %d/%d  loss %.4f", t.step, t.total, st.loss)
	if t.r.Objectives.SFT != nil && t.r.Objectives.KD != nil {
		line += fmt.Sprintf(" (sft %.4f, kd %.4f)", st.sft, st.kd)
	}
	if t.pairs != nil {
		line += fmt.Sprintf(" acc %.2f margin %.3f", st.dpoMetrics.Accuracy, st.dpoMetrics.Margin)
	}
	line += fmt.Sprintf("  lr %.2e  |g| %.3f  %.0f tok/s  %s left", st.lr, st.gradNorm, tps, left.Round(time.Second))
	every := max(1, t.r.LogEvery)
	if t.term {
		fmt.Fprintf(t.log, "\r%s%s", line, strings.Repeat(" ", 4))
	} else if t.step%every == 0 || t.step == t.total {
		t.logf("%s", line)
	}
	if t.step%every == 0 || t.step == t.total {
		rec := map[string]any{"step": t.step, "loss": st.loss, "lr": st.lr, "grad_norm": st.gradNorm,
			"tokens": t.tokens, "tokens_per_s": tps, "elapsed_s": elapsed}
		if t.r.Objectives.SFT != nil {
			rec["sft"] = st.sft
		}
		if t.r.Objectives.KD != nil {
			rec["kd"] = st.kd
		}
		if t.r.Objectives.Feature != nil {
			rec["feature"] = st.feature
		}
		if t.pairs != nil {
			rec["reward_accuracy"], rec["reward_margin"] = st.dpoMetrics.Accuracy, st.dpoMetrics.Margin
		}
		t.metrics.write(rec)
	}
}

// firstStep is the step this process started from (for the time estimate).
func (t *trainer) firstStep() int { return t.startStep }

// endLine finishes a redrawn progress line.
func (t *trainer) endLine() {
	if t.term {
		fmt.Fprintln(t.log)
	}
}

// metricsLog appends JSON records, one per line, to metrics.jsonl. On resume
// it first drops records past the checkpoint's step, so the file reads as if
// the run had never stopped.
type metricsLog struct {
	f *os.File
	w *bufio.Writer
}

func openMetrics(path string, fromStep int) (*metricsLog, error) {
	var keep strings.Builder
	if fromStep > 0 {
		if data, err := os.ReadFile(path); err == nil {
			for _, line := range strings.Split(string(data), "\n") {
				var rec struct {
					Step int `json:"step"`
				}
				if line == "" || json.Unmarshal([]byte(line), &rec) != nil || rec.Step > fromStep {
					continue
				}
				keep.WriteString(line + "\n")
			}
		}
	}
	// The kept records replace the file in one rename: a crash while
	// resuming leaves the old file or the new one, never a truncated one.
	if err := writeFileAtomic(path, []byte(keep.String())); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return &metricsLog{f: f, w: bufio.NewWriter(f)}, nil
}

func (m *metricsLog) write(rec map[string]any) {
	data, _ := json.Marshal(rec)
	m.w.Write(append(data, '\n'))
	m.w.Flush()
}

func (m *metricsLog) close() error {
	if err := m.w.Flush(); err != nil {
		return err
	}
	return m.f.Close()
}
