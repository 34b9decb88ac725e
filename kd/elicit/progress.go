package elicit

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// plainEvery is how often a progress line is printed where the output is
// not a terminal (a log file, a pipe).
const plainEvery = 15 * time.Second

// progress reports a run on w (nil: silent). On a terminal it is one line
// redrawn in place with "\r" (at most five times a second); anywhere else
// it is a plain line every plainEvery, so a log holds no carriage returns.
// Its counts are the run's Summary counts, taken under the same lock, and
// the last line (end) carries their final values: the units this run wrote
// (label: Records), already there (Resumed), requests failed (Failures),
// skipped (answers without logprobs under "skip", unusable judgements).
type progress struct {
	mu   sync.Mutex
	w    io.Writer
	term bool
	unit string // what is counted: "answers", "prompts", "instructions"
	// perRequest: each unit is one request, so a failed or skipped one is
	// not waited for (expand's units are instructions, many per request).
	perRequest bool
	// failedOne and failedMany name a failed unit ("request failed",
	// "requests failed" by default).
	failedOne, failedMany string
	now                   func() time.Time

	total, resumed           int
	written, failed, skipped int
	start, last              time.Time
}

func newProgress(w io.Writer, unit string, total, resumed int) *progress {
	p := &progress{w: w, term: isTerminal(w), unit: unit, total: total, resumed: resumed, now: time.Now}
	p.start = p.now()
	p.last = p.start
	return p
}

// isTerminal reports whether w is a character device (a terminal), where
// a line can be redrawn.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Counted outcomes of one unit of work.
const (
	unitWritten = iota
	unitFailed
	unitSkipped
)

// add counts one unit's outcome and redraws when it is time to.
func (p *progress) add(outcome int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch outcome {
	case unitWritten:
		p.written++
	case unitFailed:
		p.failed++
	case unitSkipped:
		p.skipped++
	}
	if p.w == nil {
		return
	}
	now := p.now()
	every := plainEvery
	if p.term {
		every = 200 * time.Millisecond
	}
	if now.Sub(p.last) < every {
		return
	}
	p.last = now
	p.draw(now, false)
}

// draw prints the current line (final: the run's last, without an
// estimate of the time left).
func (p *progress) draw(now time.Time, final bool) {
	if p.term {
		const width = 24
		fill := 0
		if p.total > 0 {
			fill = min(width, width*(p.resumed+p.written)/p.total)
		}
		fmt.Fprintf(p.w, "\r[%s%s] %s   ", strings.Repeat("#", fill), strings.Repeat(".", width-fill), p.line(now, final))
		return
	}
	fmt.Fprintln(p.w, p.line(now, final))
}

// line is the progress in words: how many of the total are there, what
// this run wrote, failed and skipped, the rate and the time left.
func (p *progress) line(now time.Time, final bool) string {
	elapsed := now.Sub(p.start)
	parts := []string{fmt.Sprintf("%d/%d %s", p.resumed+p.written, p.total, p.unit)}
	if p.resumed > 0 {
		parts = append(parts, fmt.Sprintf("%d already there", p.resumed))
	}
	one, many := p.failedOne, p.failedMany
	if one == "" {
		one, many = "request failed", "requests failed"
	}
	if p.failed > 0 {
		parts = append(parts, count(p.failed, one, many))
	}
	if p.skipped > 0 {
		parts = append(parts, fmt.Sprintf("%d skipped", p.skipped))
	}
	left := "? left"
	rate := "? /s"
	if p.written > 0 && elapsed > 0 {
		r := float64(p.written) / elapsed.Seconds()
		rate = fmt.Sprintf("%.3g %s/s", r, p.unit)
		remaining := p.total - p.resumed - p.written
		if p.perRequest {
			remaining -= p.failed + p.skipped
		}
		remaining = max(0, remaining)
		left = fmt.Sprintf("%v left", (time.Duration(float64(remaining) / r * float64(time.Second))).Round(time.Second))
	}
	parts = append(parts, rate, fmt.Sprintf("%v elapsed", elapsed.Round(time.Second)))
	if !final {
		parts = append(parts, left)
	}
	return strings.Join(parts, ", ")
}

// end draws the final line (and ends a redrawn one).
func (p *progress) end() {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.draw(p.now(), true)
	if p.term {
		fmt.Fprintln(p.w)
	}
}
