// Package serve is `kdnative serve`: an OpenAI-compatible HTTP server for a
// local model, so a distilled student can be used by any OpenAI client and
// kdnative can be its own teacher endpoint.
//
// Endpoints: GET /v1/models (and /v1/models/{id}), POST /v1/completions and
// POST /v1/chat/completions, with n, stop, seed, temperature, top_p,
// max_tokens, logprobs / top_logprobs, streaming (server-sent events, ending
// with "data: [DONE]") and stream_options.include_usage. Two extensions
// follow vLLM: top_k and repetition_penalty.
//
// Not supported (400 when asked for): echo, suffix, best_of > 1,
// logit_bias, non-zero presence_penalty / frequency_penalty, tools,
// response_format other than text, and non-text content parts. max_tokens
// beyond the room the model has left after the prompt (or beyond
// Config.MaxTokensCap) is lowered to it; the answer's finish_reason
// "length" says so. text_offset counts bytes, not characters.
//
// The model computes one generation at a time: requests wait in a queue of
// Config.MaxQueue; beyond it they get 429 with Retry-After. A client that
// goes away is dropped from the queue, and its running generation stops at
// the next token.
package serve

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// Config is what `kdnative serve` was asked to do.
type Config struct {
	// Model is the Hugging Face model folder (with its tokenizer).
	Model string
	// Addr is where Run listens; default "127.0.0.1:8000" (localhost only).
	Addr string
	// ModelName is the model's id in the API; default the folder's base name.
	ModelName string
	// MaxQueue is how many requests may wait for the model; default 16.
	MaxQueue int
	// MaxTokensCap, when > 0, bounds max_tokens.
	MaxTokensCap int
	// Template renders chat messages: "auto" (default; the model's chat
	// template), "chatml" or "qwen3", as kd/data.
	Template string
	// Log receives one line per start and stop of Run; nil is silent.
	Log io.Writer
	// Precision is auto (the backend's default), bf16, fp32 or tf32: how the
	// model is stored and multiplied (runtime.UsePrecision).
	Precision string
}

// maxBody bounds a request body.
const maxBody = 32 << 20

// Server answers the API. It is an http.Handler.
type Server struct {
	cfg     Config
	m       *model.Model
	tok     *tokenizer.Tokenizer
	tmpl    *data.Template // nil when chat is unavailable
	tmplErr error
	created int64

	mu      sync.Mutex
	waiting []*job
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	closing sync.Once

	// beforeJob, when set (tests), runs in the worker before each job.
	beforeJob func()
}

type job struct {
	ctx  context.Context
	run  func()
	done chan struct{}
	ran  bool // set by the worker before done closes
}

// New loads the model and tokenizer and starts the worker; Close stops it.
func New(be kdrt.Backend, cfg Config) (*Server, error) {
	if cfg.Model == "" {
		return nil, errors.New("serve: no model folder")
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8000"
	}
	if cfg.ModelName == "" {
		cfg.ModelName = filepath.Base(filepath.Clean(cfg.Model))
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 16
	}
	if cfg.Template == "" {
		cfg.Template = data.TemplateAuto
	}
	if cfg.Template == data.TemplateNone {
		return nil, errors.New("serve: template none has no chat format; use auto, chatml or qwen3 (/v1/completions takes plain text)")
	}
	prec, err := kdrt.UsePrecision(be, cfg.Precision)
	if err != nil {
		return nil, err
	}
	m, err := model.LoadDir(cfg.Model, be, model.ForPrecision(prec, false)...)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.LoadDir(cfg.Model)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, m: m, tok: tok, created: time.Now().Unix(),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	tmpl, err := data.NewTemplate(tok, data.Options{Template: cfg.Template, MaxLen: m.Config.MaxPositions})
	switch {
	case err != nil:
		if cfg.Template != data.TemplateAuto {
			return nil, err
		}
		s.tmplErr = err
	case tmpl.Name() == data.TemplateNone:
		s.tmplErr = errors.New("the model has no chat template (tokenizer_config.json's chat_template): use /v1/completions, or start kdnative serve with --template chatml if the model was trained on ChatML")
	default:
		s.tmpl = tmpl
	}
	go s.worker()
	return s, nil
}

// Close stops the worker once the running job ends; queued jobs are dropped.
func (s *Server) Close() {
	s.closing.Do(func() { close(s.stop) })
	<-s.done
}

// Run listens on Config.Addr until ctx ends, then shuts down gracefully
// (in-flight requests get a few seconds) and stops the worker.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return s.serve(ctx, ln)
}

func (s *Server) serve(ctx context.Context, ln net.Listener) error {
	defer s.Close()
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	if s.cfg.Log != nil {
		fmt.Fprintf(s.cfg.Log, "serving %s at http://%s/v1 (OpenAI-compatible; Ctrl-C stops)\n", s.cfg.ModelName, ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	if s.cfg.Log != nil {
		fmt.Fprintln(s.cfg.Log, "server stopped")
	}
	return nil
}

// worker runs the queued jobs one at a time.
func (s *Server) worker() {
	defer close(s.done)
	for {
		s.mu.Lock()
		var j *job
		if len(s.waiting) > 0 {
			j, s.waiting = s.waiting[0], s.waiting[1:]
		}
		s.mu.Unlock()
		if j == nil {
			select {
			case <-s.wake:
				continue
			case <-s.stop:
				s.mu.Lock()
				for _, w := range s.waiting {
					close(w.done)
				}
				s.waiting = nil
				s.mu.Unlock()
				return
			}
		}
		if j.ctx.Err() == nil {
			if s.beforeJob != nil {
				s.beforeJob()
			}
			j.ran = true
			j.run()
		}
		close(j.done)
	}
}

// submit queues a job, false when the queue is full or the server closed.
func (s *Server) submit(j *job) bool {
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
	s.waiting = append(s.waiting, j)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

// withdraw takes a job out of the queue, false when it has started.
func (s *Server) withdraw(j *job) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, w := range s.waiting {
		if w == j {
			s.waiting = append(s.waiting[:i], s.waiting[i+1:]...)
			return true
		}
	}
	return false
}

// enqueue runs fn on the worker and waits for it; it answers 429 (and
// returns false) when the queue is full.
func (s *Server) enqueue(w http.ResponseWriter, r *http.Request, fn func()) bool {
	var perr any
	j := &job{ctx: r.Context(), done: make(chan struct{}), run: func() {
		defer func() { perr = recover() }()
		fn()
	}}
	if !s.submit(j) {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "rate_limit_exceeded",
			fmt.Sprintf("the server is busy: %d requests are already waiting for the model; retry later", s.cfg.MaxQueue), "")
		return false
	}
	select {
	case <-j.done:
	case <-r.Context().Done():
		if s.withdraw(j) {
			return false
		}
		<-j.done
	}
	if perr != nil {
		panic(perr)
	}
	if !j.ran {
		if r.Context().Err() == nil {
			writeError(w, http.StatusServiceUnavailable, "server_error", "the server is shutting down", "")
		}
		return false
	}
	return true
}

// apiError is an OpenAI error body's "error".
type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func writeError(w http.ResponseWriter, status int, typ, msg, param string) {
	e := apiError{Message: msg, Type: typ}
	if param != "" {
		e.Param = &param
	}
	if status == http.StatusTooManyRequests {
		c := "rate_limit_exceeded"
		e.Code = &c
	}
	writeJSON(w, status, map[string]apiError{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// reqError is a 400 for a field.
type reqError struct{ param, msg string }

func (e *reqError) Error() string { return e.msg }

func badf(param, format string, args ...any) *reqError {
	return &reqError{param: param, msg: fmt.Sprintf(format, args...)}
}

// ServeHTTP routes a request; a panic becomes a 500 JSON error.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			writeError(w, http.StatusInternalServerError, "server_error", fmt.Sprintf("internal error: %v", p), "")
		}
	}()
	path := strings.TrimSuffix(r.URL.Path, "/")
	method := func(want string) bool {
		if r.Method == want || (want == http.MethodGet && r.Method == http.MethodHead) {
			return true
		}
		w.Header().Set("Allow", want)
		writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, want), "")
		return false
	}
	switch {
	case path == "/v1/models":
		if method(http.MethodGet) {
			writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{s.modelObject()}})
		}
	case strings.HasPrefix(path, "/v1/models/"):
		if method(http.MethodGet) {
			if id := strings.TrimPrefix(path, "/v1/models/"); id != s.cfg.ModelName {
				writeError(w, http.StatusNotFound, "invalid_request_error", fmt.Sprintf("the model %q does not exist; this server has %q", id, s.cfg.ModelName), "model")
			} else {
				writeJSON(w, http.StatusOK, s.modelObject())
			}
		}
	case path == "/v1/completions":
		if method(http.MethodPost) {
			s.completions(w, r)
		}
	case path == "/v1/chat/completions":
		if method(http.MethodPost) {
			s.chatCompletions(w, r)
		}
	default:
		writeError(w, http.StatusNotFound, "invalid_request_error",
			fmt.Sprintf("no such endpoint: %s %s (this server has GET /v1/models, POST /v1/completions, POST /v1/chat/completions)", r.Method, r.URL.Path), "")
	}
}

func (s *Server) modelObject() map[string]any {
	return map[string]any{"id": s.cfg.ModelName, "object": "model", "created": s.created, "owned_by": "kdnative"}
}

// readJSON decodes the body into v; errors name the field.
func readJSON(w http.ResponseWriter, r *http.Request, v any) *reqError {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return badf("", "cannot read the request body: %v", err)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return badf("", "the request body is empty: want a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			if te.Field == "" {
				return badf("", "the request body must be a JSON object, not %s", te.Value)
			}
			return badf(te.Field, "%s: want %s, got %s", te.Field, te.Type, te.Value)
		}
		return badf("", "the request body is not valid JSON: %v", err)
	}
	return nil
}

func newID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
