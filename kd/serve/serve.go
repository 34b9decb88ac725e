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
// Scoring follows vLLM: echo and prompt_logprobs on /v1/completions give
// every prompt token's log-probability and the top alternatives with their
// ids, for a batch of prompts in one request (score.go); kd/rollout's
// Endpoint reads them, from this server or from vLLM.
//
// Not supported (400 when asked for): suffix, best_of > 1,
// logit_bias, non-zero presence_penalty / frequency_penalty, tools,
// response_format other than text, and non-text content parts. max_tokens
// beyond the room the model has left after the prompt (or beyond
// Config.MaxTokensCap, or what the key/value cache budget holds) is lowered
// to it; the answer's finish_reason "length" says so. text_offset counts
// bytes, not characters.
//
// Concurrent requests are decoded together (continuous batching, see
// scheduler.go): up to Config.MaxBatch sequences share each forward pass,
// a new one joins between two steps, and each streams its own tokens.
// Requests beyond the batch wait in a queue of Config.MaxQueue; beyond it
// they get 429 with Retry-After. A client that goes away is dropped from
// the queue, and its running sequences leave the batch at the next step.
//
// Memory is bounded: a body larger than Config.MaxBodyBytes gets 413, the
// bodies being parsed share Config.BodyMemoryBytes, counts and sizes are
// checked while the JSON is decoded (before anything is tokenized), the
// key/value caches share Config.KVCacheBytes, connections are capped at
// Config.MaxConnections, and a request must arrive within
// Config.ReadTimeout. docs/serving.md has the numbers.
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
	"sync/atomic"
	"time"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	kdrt "github.com/kdnative/kdnative/runtime"
	"golang.org/x/sync/semaphore"
)

// Config is what `kdnative serve` was asked to do. Zero values take the
// defaults (the Default* constants).
type Config struct {
	// Model is the Hugging Face model folder (with its tokenizer).
	Model string
	// Addr is where Run listens; default "127.0.0.1:8000" (localhost only).
	Addr string
	// ModelName is the model's id in the API; default the folder's base name.
	ModelName string
	// MaxBatch is how many sequences are decoded together (--max-batch).
	MaxBatch int
	// MaxQueue is how many requests may wait for a free row (--max-queue);
	// beyond it they get 429.
	MaxQueue int
	// KVCacheBytes bounds the key/value caches of all running sequences
	// (--kv-cache-mb).
	KVCacheBytes int64
	// MaxTokensCap, when > 0, bounds max_tokens.
	MaxTokensCap int
	// MaxBodyBytes bounds a request body (--max-body-mb): larger ones get 413.
	MaxBodyBytes int64
	// BodyMemoryBytes bounds the memory that the bodies being read and
	// parsed take together (--body-memory-mb); a body waits for room. It
	// must be at least 3 × MaxBodyBytes.
	BodyMemoryBytes int64
	// MaxConnections bounds the open connections (--max-connections);
	// further clients wait to be accepted.
	MaxConnections int
	// ReadTimeout bounds the time to read a request, headers and body
	// (--read-timeout).
	ReadTimeout time.Duration
	// ScoreTokens bounds the tokens of one scoring forward pass (echo,
	// prompt_logprobs); default DefaultScoreTokens.
	ScoreTokens int
	// Template renders chat messages: "auto" (default; the model's chat
	// template), "chatml" or "qwen3", as kd/data.
	Template string
	// Log receives one line per start and stop of Run; nil is silent.
	Log io.Writer
	// Precision is auto (the backend's default), bf16, fp32 or tf32: how the
	// model is stored and multiplied (runtime.UsePrecision).
	Precision string
}

// Server answers the API. It is an http.Handler.
type Server struct {
	cfg     Config
	m       *model.Model
	tok     *tokenizer.Tokenizer
	tmpl    *data.Template // nil when chat is unavailable
	tmplErr error
	created int64
	lim     inputLimits
	bodyMem *semaphore.Weighted
	// e is the scheduler goroutine's; handlers only call its Config,
	// KVBytesPerToken and Check, which read what does not change.
	e *model.Engine

	mu      sync.Mutex
	waiting []*request
	scoring []*scoreJob // scoring requests waiting for the scheduler (score.go)
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	closing sync.Once

	// afterAdmit, when set (tests), runs on the scheduler after a request's
	// last sequence joined the batch; beforeStep before each decoding step.
	afterAdmit, beforeStep func()
	// peakBatch is the most sequences one step has decoded together (the
	// scheduler's; tests read it after the requests).
	peakBatch atomic.Int64
}

// New loads the model and tokenizer and starts the scheduler; Close stops it.
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
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MaxBodyBytes, DefaultMaxBodyBytes)
	def(&cfg.BodyMemoryBytes, max(DefaultBodyMemoryBytes, bodyFactor*cfg.MaxBodyBytes))
	def(&cfg.KVCacheBytes, DefaultKVCacheBytes)
	if cfg.BodyMemoryBytes < bodyFactor*cfg.MaxBodyBytes {
		return nil, fmt.Errorf("serve: --body-memory-mb (%s) must be at least %d × --max-body-mb (%s): reading one body of the largest size takes that much",
			mb(cfg.BodyMemoryBytes), bodyFactor, mb(cfg.MaxBodyBytes))
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = DefaultMaxQueue
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
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
	e, err := m.NewEngine(model.EngineConfig{MaxRows: cfg.MaxBatch, KVBytes: cfg.KVCacheBytes})
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, m: m, tok: tok, e: e, created: time.Now().Unix(), bodyMem: semaphore.NewWeighted(cfg.BodyMemoryBytes),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	longest := 4 // an unknown character is one token of up to 4 bytes
	for id := range tok.VocabSize() {
		longest = max(longest, len(tok.Decode([]int32{int32(id)})))
	}
	s.lim = inputLimits{positions: m.Config.MaxPositions, vocab: m.Config.Vocab, maxBytes: 2 * longest * m.Config.MaxPositions}
	tmpl, err := data.NewTemplate(tok, data.Options{Template: cfg.Template, MaxLen: m.Config.MaxPositions})
	switch {
	case err != nil:
		if cfg.Template != data.TemplateAuto {
			e.Close()
			return nil, err
		}
		s.tmplErr = err
	case tmpl.Name() == data.TemplateNone:
		s.tmplErr = errors.New("the model has no chat template (tokenizer_config.json's chat_template): use /v1/completions, or start kdnative serve with --template chatml if the model was trained on ChatML")
	default:
		s.tmpl = tmpl
	}
	go s.schedule()
	return s, nil
}

// Close stops the scheduler: running and queued requests end with an error.
func (s *Server) Close() {
	s.closing.Do(func() { close(s.stop) })
	<-s.done
}

// Run listens on Config.Addr until ctx ends, then shuts down gracefully
// (in-flight requests get a few seconds) and stops the scheduler.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return s.serve(ctx, ln)
}

// httpServer is the http.Server with the limits: header and body read
// timeouts, idle keep-alive connections closed. Responses have no write
// timeout (a long generation streams for minutes).
func (s *Server) httpServer(ctx context.Context) *http.Server {
	return &http.Server{Handler: s, ReadHeaderTimeout: min(DefaultReadHeaderTimeout, s.cfg.ReadTimeout), ReadTimeout: s.cfg.ReadTimeout,
		IdleTimeout: DefaultIdleTimeout, MaxHeaderBytes: 64 << 10, BaseContext: func(net.Listener) context.Context { return ctx }}
}

func (s *Server) serve(ctx context.Context, ln net.Listener) error {
	defer s.Close()
	ln = newLimitListener(ln, s.cfg.MaxConnections)
	hs := s.httpServer(ctx)
	if s.cfg.Log != nil {
		fmt.Fprintf(s.cfg.Log, "serving %s at http://%s/v1 (OpenAI-compatible; %d sequences decoded together; Ctrl-C stops)\n", s.cfg.ModelName, ln.Addr(), s.cfg.MaxBatch)
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

func newID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
