package tasks

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestProgressETA: the time left is the elapsed time per unit times the
// units left; a terminal gets one redrawn line ("\r"), a log plain lines.
func TestProgressETA(t *testing.T) {
	for _, term := range []bool{true, false} {
		var w bytes.Buffer
		p := newProgress(&w, term, "arith × student", "samples", 4)
		t0 := p.start
		p.now = func() time.Time { return t0.Add(20 * time.Second) }
		p.add(1)
		p.now = func() time.Time { return t0.Add(40 * time.Second) }
		p.add(3)
		p.end()
		out := w.String()
		if !strings.Contains(out, "arith × student: 1/4 samples, 0.1/s, 1m0s left") || !strings.Contains(out, "4/4 samples, 0.1/s, took 40s") {
			t.Errorf("terminal %v: %q", term, out)
		}
		if strings.Contains(out, "\r") != term || strings.Count(out, "\n") != map[bool]int{true: 1, false: 2}[term] {
			t.Errorf("terminal %v: %q", term, out)
		}
	}
}
