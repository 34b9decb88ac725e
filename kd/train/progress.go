package train

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// report prints one step's progress: a redrawn line on a terminal, a plain
// line every LogEvery steps otherwise, and a metrics record every LogEvery.
func (t *trainer) report(st stepStats) {
	now := t.pace.clock()
	elapsed := now.Sub(t.start).Seconds()
	tps, left, known := t.pace.at(now, t.step, t.total, t.tokens)
	line := fmt.Sprintf("step %d/%d  loss %.4f", t.step, t.total, st.loss)
	if t.r.Objectives.SFT != nil && t.r.Objectives.KD != nil {
		line += fmt.Sprintf(" (sft %.4f, kd %.4f)", st.sft, st.kd)
	}
	if t.pairs != nil {
		line += fmt.Sprintf(" acc %.2f margin %.3f", st.dpoMetrics.Accuracy, st.dpoMetrics.Margin)
	}
	line += t.onpolicyLine(st)
	line += t.rlLine(st)
	line += fmt.Sprintf("  lr %.2e  |g| %.3f", st.lr, st.gradNorm)
	if known {
		line += fmt.Sprintf("  %.0f tok/s  %s left", tps, formatLeft(left))
	} else {
		line += "  (timing the steps)"
	}
	every := max(1, t.r.LogEvery)
	if t.term {
		fmt.Fprintf(t.log, "\r%s%s", line, strings.Repeat(" ", 4))
	} else if t.step%every == 0 || t.step == t.total {
		t.logf("%s", line)
	}
	if t.step%every == 0 || t.step == t.total {
		rec := map[string]any{"step": t.step, "loss": st.loss, "lr": st.lr, "grad_norm": st.gradNorm,
			"tokens": t.tokens, "elapsed_s": elapsed, "step_s": st.wall.Seconds()}
		if known {
			rec["tokens_per_s"] = tps
		}
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
		t.onpolicyRecord(rec, st)
		t.rlRecord(rec, st)
		t.metrics.write(rec)
	}
}

// pace is the speed of a counted job (training steps, evaluated examples)
// in this process, and the time it has left. Its clock starts when the first
// unit ends: loading, the first evaluation and the first unit's warm-up
// (allocations, kernel compiles, cold caches) are not the job's pace, and
// counting them made the demo's first estimate "1h16m left" for a 6-minute
// run. From the second unit on, the estimate is the mean time per unit since
// then, which already smooths the noise of single units; pauses that recur
// (evaluations every N steps, checkpoints) enter it as they happen.
type pace struct {
	// now is the clock (time.Now; a fake one in tests).
	now func() time.Time
	// started: t0 is the end of the first unit, done0 and tokens0 the
	// counts then.
	started bool
	t0      time.Time
	done0   int
	tokens0 int64
}

func (p *pace) clock() time.Time {
	if p.now == nil {
		return time.Now()
	}
	return p.now()
}

// at records that done of total units (and tokens tokens) are finished at
// now, and returns the rate in tokens per second, the time left, and whether
// there is an estimate yet (not before the second unit).
func (p *pace) at(now time.Time, done, total int, tokens int64) (tps float64, left time.Duration, ok bool) {
	if !p.started {
		p.started, p.t0, p.done0, p.tokens0 = true, now, done, tokens
		return 0, 0, false
	}
	units := done - p.done0
	secs := now.Sub(p.t0).Seconds()
	if units <= 0 || secs <= 0 {
		return 0, 0, false
	}
	perUnit := secs / float64(units)
	left = time.Duration(perUnit * float64(max(0, total-done)) * float64(time.Second))
	return float64(tokens-p.tokens0) / secs, left, true
}

// formatLeft rounds a time left to what a reader uses: seconds under ten
// minutes, then minutes, then hours and minutes.
func formatLeft(d time.Duration) string {
	if d < 10*time.Minute {
		return d.Round(time.Second).String()
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}

// meter is a progress line for a counted job other than training steps
// (kdnative eval's examples): "eval 120/275 examples  44%  12.3 examples/s
// 13s left", redrawn with \r on a terminal at most ten times a second. Off a
// terminal it writes nothing: a log gets the result, not a stream of
// carriage returns.
type meter struct {
	w           io.Writer
	term        bool
	label, unit string
	total       int
	pace        pace
	last        time.Time
	drawn       bool
}

// update records that done units are finished.
func (m *meter) update(done int) {
	if !m.term {
		return
	}
	now := m.pace.clock()
	rate, left, ok := m.pace.at(now, done, m.total, int64(done))
	if done < m.total && m.drawn && now.Sub(m.last) < 100*time.Millisecond {
		return
	}
	m.last, m.drawn = now, true
	line := fmt.Sprintf("%s %d/%d %s  %3.0f%%", m.label, done, m.total, m.unit, 100*float64(done)/float64(max(1, m.total)))
	if ok {
		line += fmt.Sprintf("  %.1f %s/s  %s left", rate, m.unit, formatLeft(left))
	}
	fmt.Fprintf(m.w, "\r%s    ", line)
}

// finish ends a drawn line, so that what follows starts on its own.
func (m *meter) finish() {
	if m.drawn {
		fmt.Fprintln(m.w)
		m.drawn = false
	}
}

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
