package generate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// openOutput opens path for appending this run's completions and returns
// how many it holds already. Its complete lines must be the run's first
// completions in order (job i is sample i % samples of prompt i / samples):
// anything else is an error naming the line, and the file is left alone. A
// last line without its newline is what a killed run left half-written:
// it is dropped.
func openOutput(path string, prompts []promptLine, samples int) (*os.File, int, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, 0, fmt.Errorf("generate: %w", err)
	}
	done, keep, err := scanOutput(f, path, prompts, samples)
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if err := f.Truncate(keep); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("generate: %w", err)
	}
	if _, err := f.Seek(keep, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("generate: %w", err)
	}
	return f, done, nil
}

// scanOutput reads an existing output: the number of complete records and
// the offset where they end.
func scanOutput(f *os.File, path string, prompts []promptLine, samples int) (done int, keep int64, err error) {
	r := bufio.NewReaderSize(f, 1<<16)
	total := len(prompts) * samples
	for line := 1; ; line++ {
		b, err := r.ReadBytes('\n')
		if err == io.EOF {
			if len(b) > 0 && !bytes.HasPrefix(b, []byte(`{"prompt":`)) {
				return 0, 0, fmt.Errorf("%s:%d: the file ends with a partial line that is not a completion record; it is not this command's output (give another --output)", path, line)
			}
			return done, keep, nil // a torn last record, or nothing
		}
		if err != nil {
			return 0, 0, fmt.Errorf("generate: reading %s: %w", path, err)
		}
		var rec struct {
			Prompt *string `json:"prompt"`
			Sample int     `json:"sample"`
		}
		if json.Unmarshal(b, &rec) != nil || rec.Prompt == nil {
			return 0, 0, fmt.Errorf("%s:%d: not a completion record of kdnative generate; give another --output (or remove the file to start afresh)", path, line)
		}
		if done >= total {
			return 0, 0, fmt.Errorf("%s:%d: the file holds more completions than the %d prompts × %d samples asked for; give another --output (or remove the file to start afresh)", path, line, len(prompts), samples)
		}
		pl := prompts[done/samples]
		if want := promptText(pl); *rec.Prompt != want || rec.Sample != done%samples {
			return 0, 0, fmt.Errorf("%s:%d: holds sample %d of %q, but completion %d of this run is sample %d of %q (%s): the file is another run's output; give another --output (or remove the file to start afresh)",
				path, line, rec.Sample, clip(*rec.Prompt), done+1, done%samples, clip(want), pl.where)
		}
		done++
		keep += int64(len(b))
	}
}

func clip(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return s
}

// progress reports an output run: completions done of the total, the rate,
// generated tokens per second and the time left. On a terminal the line is
// redrawn in place (at most 5 times a second); elsewhere a line is written
// every 10 seconds and at the end.
type progress struct {
	w           io.Writer
	term        bool
	from, total int
	n, toks     int
	t0, last    time.Time
	drawn       bool
}

func newProgress(w io.Writer, term bool, from, total int) *progress {
	p := &progress{w: w, term: term, from: from, n: from, total: total, t0: time.Now()}
	p.draw(true)
	return p
}

// tokens counts generated tokens.
func (p *progress) tokens(n int) {
	if p != nil {
		p.toks += n
	}
}

// done records that n completions are written.
func (p *progress) done(n int) {
	if p == nil {
		return
	}
	p.n = n
	every := 10 * time.Second
	if p.term {
		every = 200 * time.Millisecond
	}
	p.draw(n == p.total || time.Since(p.last) >= every)
}

func (p *progress) draw(force bool) {
	if !force {
		return
	}
	p.last = time.Now()
	el := time.Since(p.t0)
	line := fmt.Sprintf("generate: %d/%d completions (%.0f%%)", p.n, p.total, 100*float64(p.n)/float64(max(p.total, 1)))
	if made := p.n - p.from; made > 0 && el > 0 {
		rate := float64(made) / el.Seconds()
		left := time.Duration(float64(p.total-p.n) / rate * float64(time.Second))
		line += fmt.Sprintf(", %.2f/s, %.0f tokens/s, %s left", rate, float64(p.toks)/el.Seconds(), left.Round(time.Second))
	} else {
		line += ", time left: after the first completion"
	}
	if p.term {
		fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", 4))
		p.drawn = true
	} else {
		fmt.Fprintln(p.w, line)
	}
}

// end finishes a redrawn line.
func (p *progress) end() {
	if p != nil && p.term && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
