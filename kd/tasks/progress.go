package tasks

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress reports one phase (a task with one model) on w. On a terminal it
// is one line redrawn with "\r" at most five times a second; elsewhere (a
// log file, a pipe) a plain line every plainEvery, so logs hold no carriage
// returns. The time left is the elapsed time per unit times the units left.
type progress struct {
	mu          sync.Mutex
	w           io.Writer
	term        bool
	what, unit  string
	total, done int
	start, last time.Time
	now         func() time.Time
	drawn       bool
}

const plainEvery = 15 * time.Second

func newProgress(w io.Writer, term bool, what, unit string, total int) *progress {
	p := &progress{w: w, term: term, what: what, unit: unit, total: total, now: time.Now}
	p.start = p.now()
	p.last = p.start
	return p
}

// add counts n more units done and redraws when it is time.
func (p *progress) add(n int) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	now := p.now()
	every := plainEvery
	if p.term {
		every = 200 * time.Millisecond
	}
	if now.Sub(p.last) < every && p.done < p.total {
		return
	}
	p.last = now
	line := p.line(now)
	if p.term {
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
		p.drawn = true
	} else if p.done < p.total {
		fmt.Fprintln(p.w, line)
	}
}

// line is "what: done/total unit, rate/s, 1m05s left".
func (p *progress) line(now time.Time) string {
	el := now.Sub(p.start)
	s := fmt.Sprintf("%s: %d/%d %s", p.what, p.done, p.total, p.unit)
	if p.done > 0 && el > 0 {
		s += fmt.Sprintf(", %.1f/s", float64(p.done)/el.Seconds())
		if p.done < p.total {
			left := time.Duration(float64(el) / float64(p.done) * float64(p.total-p.done))
			s += ", " + left.Round(time.Second).String() + " left"
		} else {
			s += ", took " + el.Round(100*time.Millisecond).String()
		}
	}
	return s
}

// end writes the last line: the redrawn one's final state and its newline
// on a terminal, one closing line elsewhere.
func (p *progress) end() {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.term && p.drawn:
		fmt.Fprintf(p.w, "\r%s\x1b[K\n", p.line(p.now()))
	case !p.term && p.done > 0:
		fmt.Fprintln(p.w, p.line(p.now()))
	}
}
