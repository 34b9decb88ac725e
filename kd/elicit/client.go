package elicit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to an OpenAI-compatible chat completions endpoint (vLLM,
// llama.cpp's server, kdnative serve, a hosted API). It retries with
// exponential backoff and jitter on 429 (honouring Retry-After), 5xx, 408,
// timeouts and connection errors; other 4xx answers are not retried. The
// API key is sent as a bearer token and never appears in an error.
type Client struct {
	// BaseURL is the API root, e.g. "http://127.0.0.1:8000/v1" ("/v1" is
	// added when the URL has no path).
	BaseURL string
	// Model is the model name sent with each request.
	Model string
	// APIKey, when set, is sent as "Authorization: Bearer …". The caller reads
	// it from an environment variable; it is never printed or written.
	APIKey string
	// HTTP is the client used; nil is a plain http.Client.
	HTTP *http.Client
	// Timeout bounds one attempt (default 120s).
	Timeout time.Duration
	// MaxRetries is how many times a failed attempt is retried (default 5;
	// negative: none).
	MaxRetries int
	// Backoff is the first retry's wait, doubled each retry with ±50%
	// jitter and capped at 30s (default 500ms).
	Backoff time.Duration
	// OnRetry, when set, is told of each retry (for counting).
	OnRetry func(err error)
}

// Message is one chat turn.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ChatRequest is the body of POST /chat/completions (the fields used here).
type ChatRequest struct {
	Model       string    `json:"model"`
	Messages    []Message `json:"messages"`
	MaxTokens   int       `json:"max_tokens,omitempty"`
	Temperature *float64  `json:"temperature,omitempty"`
	TopP        *float64  `json:"top_p,omitempty"`
	N           int       `json:"n,omitempty"`
	Seed        *int64    `json:"seed,omitempty"`
	Stop        []string  `json:"stop,omitempty"`
	Logprobs    bool      `json:"logprobs,omitempty"`
	TopLogprobs *int      `json:"top_logprobs,omitempty"`
}

// ChatResponse is a chat completion.
type ChatResponse struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Model   string   `json:"model"`
	Choices []Choice `json:"choices"`
	Usage   Usage    `json:"usage"`
}

// Choice is one of a completion's answers.
type Choice struct {
	Index        int       `json:"index"`
	Message      Message   `json:"message"`
	FinishReason string    `json:"finish_reason"`
	Logprobs     *Logprobs `json:"logprobs"`
}

// Logprobs is a choice's per-token log probabilities.
type Logprobs struct {
	Content []TokenLogprob `json:"content"`
}

// TokenLogprob is one generated token with its most likely alternatives.
type TokenLogprob struct {
	Token       string       `json:"token"`
	Logprob     float64      `json:"logprob"`
	Bytes       []int        `json:"bytes,omitempty"`
	TopLogprobs []TopLogprob `json:"top_logprobs"`
}

// TopLogprob is an alternative token; ID is set by elicit when the tokens
// are mapped to a student tokenizer's ids (-1: no single id).
type TopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes,omitempty"`
	ID      *int32  `json:"id,omitempty"`
}

// Usage counts a completion's tokens.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// StatusError is an HTTP error answer.
type StatusError struct {
	Status  int
	Message string // the API's error message, when it gave one
	// RetryAfter is the wait asked for by a Retry-After header (-1: none).
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	switch e.Status {
	case http.StatusUnauthorized:
		return "the endpoint refused the API key (401): check --api-key-env" + detail(e.Message)
	case http.StatusForbidden:
		return "the endpoint denied access (403)" + detail(e.Message)
	case http.StatusNotFound:
		return "the endpoint has no such path or model (404): check --endpoint and --model" + detail(e.Message)
	}
	return fmt.Sprintf("the endpoint answered %d %s%s", e.Status, http.StatusText(e.Status), detail(e.Message))
}

func detail(msg string) string {
	if msg == "" {
		return ""
	}
	return ": " + msg
}

// RedirectError is a redirect that was not followed: to another origin
// (scheme, host and port) while an API key is set, since the key must never
// reach a server it was not given for.
type RedirectError struct {
	From, To string // origins
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("the endpoint redirected from %s to another origin, %s; kdnative does not send the API key there (if you trust it, give that URL as --endpoint)", e.From, e.To)
}

// origin is a URL's scheme://host:port, the port made explicit.
func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return strings.ToLower(u.Scheme) + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// httpClient is c.HTTP (or a plain client) with a redirect policy that
// keeps the API key at home: Go's own policy forwards Authorization to
// another port or scheme of the same host, so a redirect to another
// origin is refused while a key is set (and, should a caller's policy let
// one through, the key is taken off it).
func (c *Client) httpClient() *http.Client {
	hc := http.Client{}
	if c.HTTP != nil {
		hc = *c.HTTP
	}
	if c.APIKey == "" {
		return &hc
	}
	inner := hc.CheckRedirect
	hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if from, to := origin(via[0].URL), origin(req.URL); from != to {
			req.Header.Del("Authorization")
			return &RedirectError{From: from, To: to}
		}
		if inner != nil {
			return inner(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &hc
}

// Fatal reports whether err means no later request can succeed either (a
// refused key, a wrong URL or model, a redirect to another origin), so a
// run should stop.
func Fatal(err error) bool {
	if errors.As(err, new(*RedirectError)) {
		return true
	}
	var se *StatusError
	if errors.As(err, &se) {
		switch se.Status {
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusPaymentRequired:
			return true
		}
	}
	return false
}

func retryable(err error) bool {
	if errors.As(err, new(*RedirectError)) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status == http.StatusTooManyRequests || se.Status == http.StatusRequestTimeout || se.Status >= 500
	}
	var bad *badResponseError
	if errors.As(err, &bad) {
		return true // a cut or garbled body: try again
	}
	return true // network errors, attempt timeouts, resets
}

type badResponseError struct {
	what string // "a chat completion"
	err  error
}

func (e *badResponseError) Error() string {
	return "the endpoint's answer is not " + e.what + ": " + e.err.Error()
}

// url is the API root joined with path ("/chat/completions").
func (c *Client) url(path string) string {
	u := strings.TrimRight(c.BaseURL, "/")
	if i := strings.Index(u, "://"); i >= 0 && !strings.Contains(u[i+3:], "/") {
		u += "/v1"
	}
	return u + path
}

// Chat sends req (its Model defaults to c.Model), retrying as the Client
// says. The error of the last attempt is returned, with the attempt count.
func (c *Client) Chat(ctx context.Context, req ChatRequest) (ChatResponse, error) {
	if req.Model == "" {
		req.Model = c.Model
	}
	var out ChatResponse
	err := c.Post(ctx, "/chat/completions", "a chat completion", req, func(data []byte) error {
		out = ChatResponse{}
		if err := json.Unmarshal(data, &out); err != nil {
			return err
		}
		if len(out.Choices) == 0 {
			return errors.New("no choices")
		}
		return nil
	})
	if err != nil {
		return ChatResponse{}, err
	}
	return out, nil
}

// Post sends req as JSON to path under the API root ("/completions") and
// gives a 200 answer's body to decode, retrying as the Client says: a
// failed attempt, or an answer decode refuses (a cut or garbled body), is
// tried again with backoff. what names the answer expected ("a chat
// completion") in errors. The error of the last attempt is returned, with
// the attempt count.
func (c *Client) Post(ctx context.Context, path, what string, req any, decode func(data []byte) error) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	retries := c.MaxRetries
	if retries == 0 {
		retries = 5
	}
	retries = max(retries, 0)
	backoff := c.Backoff
	if backoff <= 0 {
		backoff = 500 * time.Millisecond
	}
	for attempt := 0; ; attempt++ {
		err := c.once(ctx, path, what, body, decode)
		if err == nil {
			return nil
		}
		err = c.redact(err)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !retryable(err) || attempt >= retries {
			if attempt > 0 {
				err = fmt.Errorf("%w (after %d attempts)", err, attempt+1)
			}
			return err
		}
		if c.OnRetry != nil {
			c.OnRetry(err)
		}
		wait := min(backoff<<attempt, 30*time.Second)
		wait = wait/2 + time.Duration(rand.Int64N(int64(wait)+1))
		var se *StatusError
		if errors.As(err, &se) && se.RetryAfter >= 0 {
			wait = min(se.RetryAfter, 5*time.Minute)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// redact removes the API key from an error's text, in case an endpoint or
// a proxy echoed it.
func (c *Client) redact(err error) error {
	if c.APIKey == "" || !strings.Contains(err.Error(), c.APIKey) {
		return err
	}
	var se *StatusError
	if errors.As(err, &se) {
		cp := *se
		cp.Message = strings.ReplaceAll(cp.Message, c.APIKey, "[redacted]")
		return &cp
	}
	return errors.New(strings.ReplaceAll(err.Error(), c.APIKey, "[redacted]"))
}

func (c *Client) once(ctx context.Context, path, what string, body []byte, decode func([]byte) error) error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 120 * time.Second
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(actx, http.MethodPost, c.url(path), bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	if c.APIKey != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	hresp, err := c.httpClient().Do(hreq)
	if err != nil {
		if actx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
			return fmt.Errorf("no answer within %v", timeout)
		}
		var re *RedirectError
		if errors.As(err, &re) {
			return re
		}
		var op *net.OpError
		if errors.As(err, &op) {
			return fmt.Errorf("cannot reach %s: %v", c.url(path), op.Err)
		}
		return err
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, 256<<20))
	if err != nil {
		if actx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
			return fmt.Errorf("no answer within %v", timeout)
		}
		return &badResponseError{what, err}
	}
	if hresp.StatusCode != http.StatusOK {
		se := &StatusError{Status: hresp.StatusCode, RetryAfter: -1}
		var eb struct {
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(data, &eb) == nil && len(eb.Error) > 0 {
			var em struct {
				Message string `json:"message"`
			}
			if json.Unmarshal(eb.Error, &em) == nil && em.Message != "" {
				se.Message = em.Message
			} else {
				var s string
				if json.Unmarshal(eb.Error, &s) == nil {
					se.Message = s
				}
			}
		}
		if ra := hresp.Header.Get("Retry-After"); ra != "" {
			if secs, err := strconv.ParseFloat(ra, 64); err == nil && secs >= 0 {
				se.RetryAfter = time.Duration(secs * float64(time.Second))
			} else if t, err := http.ParseTime(ra); err == nil {
				se.RetryAfter = max(time.Until(t), 0)
			}
		}
		return se
	}
	if err := decode(data); err != nil {
		return &badResponseError{what, err}
	}
	return nil
}
