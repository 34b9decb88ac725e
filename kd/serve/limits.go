package serve

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// The limits' defaults; each has a flag of kdnative serve, named in the
// errors it causes.
const (
	DefaultMaxBodyBytes      = 8 << 20
	DefaultBodyMemoryBytes   = 256 << 20
	DefaultMaxConnections    = 64
	DefaultReadTimeout       = 60 * time.Second
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultMaxBatch          = 16
	DefaultMaxQueue          = 16
	DefaultKVCacheBytes      = 1 << 30
)

// bodyFactor is how much memory reading and parsing a body takes per byte
// at most: the body itself, the raw copy of a prompt or message that
// encoding/json keeps, and the decoded strings (see TestBodyMemoryBounded).
const bodyFactor = 3

// httpError is an error answer: its status and OpenAI error fields.
type httpError struct {
	status int
	typ    string
	msg    string
	param  string
}

func (s *Server) write(w http.ResponseWriter, e *httpError) {
	writeError(w, e.status, e.typ, e.msg, e.param)
}

// bodyReader reads a request body up to a limit and remembers why reading
// stopped.
type bodyReader struct {
	r        io.Reader
	n, limit int64
	err      error
}

var errTooLarge = errors.New("request body too large")

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if int64(len(p)) > b.limit+1-b.n {
		p = p[:b.limit+1-b.n]
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > b.limit {
		n -= int(b.n - b.limit)
		err = errTooLarge
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// readRequest decodes a request body into v within the limits: a body
// larger than Config.MaxBodyBytes is 413 (before reading it when its length
// is declared); decoding waits until the memory it may take (bodyFactor ×
// the body's size) fits in Config.BodyMemoryBytes, which bounds the memory
// that concurrent bodies take together; a body that does not arrive within
// Config.ReadTimeout is 408. The body is decoded as it streams in (see
// decodeRequest); what follows a refused part is read and dropped, so the
// client gets its answer on a healthy connection. release gives the memory
// back once the request has been planned.
func (s *Server) readRequest(r *http.Request, v any) (release func(), herr *httpError) {
	limit := s.cfg.MaxBodyBytes
	tooLarge := func(n string) *httpError {
		return &httpError{http.StatusRequestEntityTooLarge, "invalid_request_error",
			fmt.Sprintf("the request body is %s, larger than this server's limit of %s (start kdnative serve with a larger --max-body-mb)", n, mb(limit)), ""}
	}
	if r.ContentLength > limit {
		return nil, tooLarge(mb(r.ContentLength))
	}
	size := limit
	if r.ContentLength >= 0 {
		size = r.ContentLength
	}
	need := bodyFactor * max(size, 1)
	if err := s.bodyMem.Acquire(r.Context(), need); err != nil {
		return nil, &httpError{http.StatusServiceUnavailable, "server_error", "the client went away while waiting to be read", ""}
	}
	release = sync.OnceFunc(func() { s.bodyMem.Release(need) })
	br := &bodyReader{r: r.Body, limit: limit}
	err := decodeRequest(br, v)
	if err != nil && br.err == nil {
		io.Copy(io.Discard, br)
	}
	var ne net.Error
	var re *reqError
	switch {
	case br.err == errTooLarge:
		herr = tooLarge("more than " + mb(limit))
	case br.err != nil && (errors.Is(br.err, os.ErrDeadlineExceeded) || errors.As(br.err, &ne) && ne.Timeout()):
		herr = &httpError{http.StatusRequestTimeout, "invalid_request_error",
			fmt.Sprintf("the request body did not arrive within %v (start kdnative serve with a longer --read-timeout)", s.cfg.ReadTimeout), ""}
	case br.err != nil:
		herr = &httpError{http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("cannot read the request body: %v", br.err), ""}
	case errors.As(err, &re):
		herr = &httpError{http.StatusBadRequest, "invalid_request_error", re.msg, re.param}
	case err != nil:
		herr = &httpError{http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("the request body is not valid JSON: %v", err), ""}
	}
	if herr != nil {
		release()
		return nil, herr
	}
	return release, nil
}

func mb(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// limitListener accepts at most n connections at once: Accept waits until
// one closes, so further clients wait in the kernel's backlog instead of
// costing memory and goroutines.
type limitListener struct {
	net.Listener
	sem  chan struct{}
	done chan struct{}
	once sync.Once
}

func newLimitListener(l net.Listener, n int) *limitListener {
	return &limitListener{Listener: l, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: sync.OnceFunc(func() { <-l.sem })}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}
