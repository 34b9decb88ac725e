package serve

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/kdnative/kdnative/model"
)

// The scheduler is one goroutine that owns the model. It keeps a running
// batch of sequences in a model.Engine (continuous batching): between two
// decoding steps it admits waiting sequences into free rows (their prompts
// are read in, in chunks, alongside the others' next tokens), and a
// finished or abandoned sequence frees its row at once. After every step it
// publishes each sequence's new tokens to the handler that waits for them.

// request is one HTTP request's sequences (prompts × n).
type request struct {
	ctx  context.Context
	jobs []*seqJob
	next int // jobs admitted so far

	mu     sync.Mutex    // guards the jobs' published fields
	notify chan struct{} // capacity 1: something was published
}

// seqJob is one sequence of a request.
type seqJob struct {
	req *request
	seq *model.Seq // the scheduler's; handlers read gen

	// Published, under req.mu.
	gen  model.Generation
	done bool
	err  error
}

var errShutdown = errors.New("the server is shutting down")

// snapshot returns what the scheduler published for j.
func (j *seqJob) snapshot() (model.Generation, bool, error) {
	j.req.mu.Lock()
	defer j.req.mu.Unlock()
	return j.gen, j.done, j.err
}

// submit queues a request, false when the queue is full or the server is
// closing.
func (s *Server) submit(r *request) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stop:
		return false
	default:
	}
	if len(s.waiting) >= s.cfg.MaxQueue {
		return false
	}
	s.waiting = append(s.waiting, r)
	s.signal()
	return true
}

func (s *Server) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// withdraw takes a request out of the queue (a client that went away); its
// admitted sequences are cancelled by the scheduler at its next step.
func (s *Server) withdraw(r *request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.waiting, r); i >= 0 {
		s.waiting = slices.Delete(s.waiting, i, i+1)
	}
	s.signal()
}

// queued is how many requests wait for a row.
func (s *Server) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiting)
}

// schedule is the scheduler goroutine.
func (s *Server) schedule() {
	defer close(s.done)
	defer s.e.Close()
	var running []*seqJob
	finish := func(j *seqJob, err error) {
		r := j.req
		r.mu.Lock()
		j.done, j.err = true, err
		r.mu.Unlock()
		select {
		case r.notify <- struct{}{}:
		default:
		}
	}
	for {
		select {
		case <-s.stop:
			s.failScoring(errShutdown)
			for _, j := range running {
				finish(j, errShutdown)
			}
			s.mu.Lock()
			for _, r := range s.waiting {
				for _, j := range r.jobs[r.next:] {
					finish(j, errShutdown)
				}
			}
			s.waiting = nil
			s.mu.Unlock()
			return
		default:
		}
		running = s.admit(running)
		s.runScoring() // scoring requests, between two decoding steps (score.go)
		// Sequences whose client went away leave the batch.
		running = slices.DeleteFunc(running, func(j *seqJob) bool {
			if j.req.ctx.Err() == nil {
				return false
			}
			s.e.Cancel(j.seq)
			finish(j, j.req.ctx.Err())
			return true
		})
		if len(running) == 0 {
			select {
			case <-s.wake:
			case <-s.stop:
			}
			continue
		}
		if s.beforeStep != nil {
			s.beforeStep()
		}
		if n := int64(s.e.Rows()); n > s.peakBatch.Load() {
			s.peakBatch.Store(n)
		}
		got, err := s.e.Step()
		if err != nil {
			for _, j := range running {
				s.e.Cancel(j.seq)
				finish(j, err)
			}
			running = nil
			continue
		}
		for _, seq := range got {
			i := slices.IndexFunc(running, func(j *seqJob) bool { return j.seq == seq })
			j := running[i]
			r := j.req
			r.mu.Lock()
			g := &j.gen
			n := len(g.Tokens)
			g.Tokens = append(g.Tokens, seq.Gen.Tokens[n:]...)
			g.LogProbs = append(g.LogProbs, seq.Gen.LogProbs[n:]...)
			if len(seq.Gen.Top) > n {
				g.Top = append(g.Top, seq.Gen.Top[n:]...)
			}
			g.Finish = seq.Gen.Finish
			j.done = seq.Done
			r.mu.Unlock()
			select {
			case r.notify <- struct{}{}:
			default:
			}
			if seq.Done {
				running = slices.Delete(running, i, i+1)
			}
		}
	}
}

// admit moves waiting sequences into the engine's free rows, in order.
func (s *Server) admit(running []*seqJob) []*seqJob {
	for {
		s.mu.Lock()
		if len(s.waiting) == 0 {
			s.mu.Unlock()
			return running
		}
		r := s.waiting[0]
		if r.ctx.Err() != nil {
			s.waiting = s.waiting[1:]
			s.mu.Unlock()
			for _, j := range r.jobs[r.next:] {
				r.mu.Lock()
				j.done, j.err = true, r.ctx.Err()
				r.mu.Unlock()
			}
			continue
		}
		j := r.jobs[r.next]
		ok, err := s.e.Add(j.seq)
		if !ok && err == nil {
			s.mu.Unlock()
			return running
		}
		r.next++
		all := r.next == len(r.jobs)
		if all {
			s.waiting = s.waiting[1:]
		}
		s.mu.Unlock()
		if err != nil { // the handler checked; this is a server error
			r.mu.Lock()
			j.done, j.err = true, err
			r.mu.Unlock()
			select {
			case r.notify <- struct{}{}:
			default:
			}
			continue
		}
		running = append(running, j)
		if all && s.afterAdmit != nil {
			s.afterAdmit()
		}
	}
}
