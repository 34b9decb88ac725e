package elicit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// resumable is a JSONL output that an interrupted run continues: on open,
// the records already there are read (their "id" keys remembered) and a
// torn last line (a kill mid-write) is cut off; each new record is written
// whole by one write under a lock, so a kill loses at most the record being
// written, which the next run makes again.
type resumable struct {
	mu   sync.Mutex
	f    *os.File
	have map[string]bool
	recs []map[string]any // the records read on open
	torn bool
}

func openResumable(path string) (*resumable, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	r := &resumable{f: f, have: map[string]bool{}}
	br := bufio.NewReaderSize(f, 1<<20)
	var good int64 // end of the last whole, valid line
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			var rec map[string]any
			if len(bytes.TrimSpace(line)) == 0 {
				good += int64(len(line))
				continue
			}
			if jerr := json.Unmarshal(line, &rec); jerr != nil {
				// A bad line followed by more: not a torn write.
				if _, perr := br.Peek(1); perr == nil {
					f.Close()
					return nil, fmt.Errorf("%s line %d is not JSON (%v): not a file this command wrote; give another --output", path, lineNo, jerr)
				}
				r.torn = true
				break
			}
			id, _ := rec["id"].(string)
			if id == "" {
				f.Close()
				return nil, fmt.Errorf(`%s line %d has no "id": not a file this command wrote; give another --output`, path, lineNo)
			}
			r.have[id] = true
			r.recs = append(r.recs, rec)
			good += int64(len(line))
		} else if len(line) > 0 {
			r.torn = true // no newline: cut off mid-write
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// done reports whether a record with key id is already written.
func (r *resumable) done(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.have[id]
}

// write appends rec (which has an "id") as one line. A key written before
// is not written again.
func (r *resumable) write(id string, rec any) (bool, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	b = append(b, '\n')
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.have[id] {
		return false, nil
	}
	if _, err := r.f.Write(b); err != nil {
		return false, err
	}
	r.have[id] = true
	return true, nil
}

// writeGroup appends the records of one task (each with its own "id")
// with a single write, and marks the task's key group done too.
func (r *resumable) writeGroup(group string, ids []string, recs []any) (bool, error) {
	var buf []byte
	for _, rec := range recs {
		b, err := json.Marshal(rec)
		if err != nil {
			return false, err
		}
		buf = append(append(buf, b...), '\n')
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.have[group] {
		return false, nil
	}
	if _, err := r.f.Write(buf); err != nil {
		return false, err
	}
	r.have[group] = true
	for _, id := range ids {
		r.have[id] = true
	}
	return true, nil
}

func (r *resumable) close() error {
	if err := r.f.Sync(); err != nil {
		r.f.Close()
		return err
	}
	return r.f.Close()
}

// Summary is what a run did.
type Summary struct {
	// Records is how many records this run wrote; Resumed how many were in
	// the output already (skipped).
	Records, Resumed int
	// PromptTokens and CompletionTokens are the endpoint's usage counts.
	PromptTokens, CompletionTokens int
	// Failures counts requests that failed after their retries (their
	// records are missing: run again to retry them); Retries counts retried
	// attempts.
	Failures, Retries int
	// BadLines counts input lines skipped as unreadable.
	BadLines int
	// Unparsed counts teacher answers that could not be used (expansion
	// without new instructions, judgements without a choice).
	Unparsed int
	// MissingLogprobs counts answers without the logprobs asked for.
	MissingLogprobs int
	// Unmapped counts top-logprob tokens without a single student id.
	Unmapped int
	// EmptyAnswers counts records written with an empty (or blank) answer:
	// kept as the teacher's data, skipped by kdnative train.
	EmptyAnswers int
	// LengthLimited counts records whose answer the endpoint cut at the
	// length limit (finish_reason "length").
	LengthLimited int
	// Elapsed is the run's wall time.
	Elapsed time.Duration
}

func (s Summary) String() string {
	parts := []string{count(s.Records, "record", "records") + " written"}
	if s.Resumed > 0 {
		parts = append(parts, fmt.Sprintf("%d already there", s.Resumed))
	}
	parts = append(parts, fmt.Sprintf("%d prompt + %d completion tokens", s.PromptTokens, s.CompletionTokens),
		count(s.Failures, "failure", "failures"), count(s.Retries, "retry", "retries"))
	for _, c := range []struct {
		n         int
		one, many string
	}{
		{s.BadLines, "bad input line skipped", "bad input lines skipped"},
		{s.Unparsed, "unusable answer", "unusable answers"},
		{s.MissingLogprobs, "answer without logprobs", "answers without logprobs"},
		{s.Unmapped, "unmapped top token", "unmapped top tokens"},
		{s.EmptyAnswers, "empty answer (written; kdnative train skips it)", "empty answers (written; kdnative train skips them)"},
		{s.LengthLimited, `answer cut at the length limit (finish_reason "length")`, `answers cut at the length limit (finish_reason "length")`},
	} {
		if c.n > 0 {
			parts = append(parts, count(c.n, c.one, c.many))
		}
	}
	return strings.Join(parts, ", ") + fmt.Sprintf(" in %v", s.Elapsed.Round(time.Millisecond))
}

// count is "1 thing" or "n things".
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
