package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/kdnative/kdnative/kd/elicit"
	"github.com/kdnative/kdnative/model"
)

// Endpoint scores sequences through an OpenAI-compatible completions
// endpoint that returns prompt log-probabilities the way vLLM does —
// vLLM's own server, or kdnative serve. Each request is
//
//	POST {root}/completions
//	{"model": M, "prompt": [[ids…], …], "echo": true, "max_tokens": 1,
//	 "temperature": 0, "logprobs": K, "prompt_logprobs": K,
//	 "return_tokens_as_token_ids": true}
//
// and the answer's choices[i].prompt_logprobs[j] — null for the first
// token, else {"<id>": {"logprob", "rank", "decoded_token"}, …} holding the
// given token and the K most likely — gives each token's log-probability
// (at temperature 1: vLLM computes prompt log-probabilities from the raw
// logits). A server without prompt_logprobs that echoes OpenAI-style
// logprobs with "token_id:<id>" tokens is read from those instead.
// max_tokens is 1, not 0, so that vLLM versions that refuse 0 answer too
// (the one token generated costs a decoding step). All sequences of a call
// go in as few requests as MaxPrompts allows, and each request is retried
// with backoff by the elicit client (429, 5xx, timeouts, connection
// errors); what still fails is an *EndpointError.
type Endpoint struct {
	// Client is the endpoint (BaseURL, Model, APIKey) and its retry policy.
	Client *elicit.Client
	// TopK is how many alternatives per position are asked for (0: the
	// given token only).
	TopK int
	// MaxPrompts bounds the sequences of one request (default 64, kdnative
	// serve's limit).
	MaxPrompts int
}

// EndpointError is a scoring request that failed after its retries (or at
// once, for an answer no retry can fix: a refused key, a wrong model).
type EndpointError struct {
	URL string
	Err error
}

func (e *EndpointError) Error() string { return fmt.Sprintf("teacher endpoint %s: %v", e.URL, e.Err) }
func (e *EndpointError) Unwrap() error { return e.Err }

// Scores are one sequence's scores from an endpoint: LogProbs[j] is
// log p(Tokens[j] | Tokens[:j]) (NaN for j = 0) and Top[j] the most likely
// tokens at position j (nil for j = 0), most likely first.
type Scores struct {
	LogProbs []float64
	Top      [][]model.TokenLogProb
}

// completionRequest is the body sent.
type completionRequest struct {
	Model                  string `json:"model"`
	Prompt                 any    `json:"prompt"`
	Echo                   bool   `json:"echo"`
	MaxTokens              int    `json:"max_tokens"`
	Temperature            int    `json:"temperature"`
	Logprobs               int    `json:"logprobs"`
	PromptLogprobs         int    `json:"prompt_logprobs"`
	ReturnTokensAsTokenIDs bool   `json:"return_tokens_as_token_ids"`
	ReturnTokenIDs         bool   `json:"return_token_ids,omitempty"`
}

// promptLogprob is one entry of vLLM's prompt_logprobs dictionaries.
type promptLogprob struct {
	Logprob      *float64 `json:"logprob"`
	Rank         *int     `json:"rank"`
	DecodedToken *string  `json:"decoded_token"`
}

// completionChoice is what is read of an answer's choice.
type completionChoice struct {
	Index          int                        `json:"index"`
	PromptLogprobs []map[string]promptLogprob `json:"prompt_logprobs"`
	PromptTokenIDs []int32                    `json:"prompt_token_ids"`
	Logprobs       *struct {
		Tokens        []string              `json:"tokens"`
		TokenLogprobs []*float64            `json:"token_logprobs"`
		TopLogprobs   []map[string]*float64 `json:"top_logprobs"`
	} `json:"logprobs"`
}

type completionResponse struct {
	Choices []completionChoice `json:"choices"`
}

func (e *Endpoint) maxPrompts() int {
	if e.MaxPrompts > 0 {
		return e.MaxPrompts
	}
	return 64
}

func (e *Endpoint) fail(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &EndpointError{URL: e.Client.BaseURL, Err: err}
}

// ScoreAll scores every position of each sequence (after the first).
func (e *Endpoint) ScoreAll(ctx context.Context, seqs [][]int32) ([]Scores, error) {
	out := make([]Scores, 0, len(seqs))
	for at := 0; at < len(seqs); at += e.maxPrompts() {
		part := seqs[at:min(at+e.maxPrompts(), len(seqs))]
		for i, s := range part {
			if len(s) < 2 {
				return nil, fmt.Errorf("rollout: sequence %d has %d tokens; scoring needs at least 2", at+i, len(s))
			}
		}
		req := completionRequest{Model: e.Client.Model, Prompt: part, Echo: true, MaxTokens: 1,
			Logprobs: e.TopK, PromptLogprobs: e.TopK, ReturnTokensAsTokenIDs: true}
		var resp completionResponse
		err := e.Client.Post(ctx, "/completions", "a completion with prompt log-probabilities", req, func(data []byte) error {
			resp = completionResponse{}
			if err := json.Unmarshal(data, &resp); err != nil {
				return err
			}
			if len(resp.Choices) != len(part) {
				return fmt.Errorf("%d choices for %d prompts", len(resp.Choices), len(part))
			}
			return nil
		})
		if err != nil {
			return nil, e.fail(err)
		}
		slices.SortStableFunc(resp.Choices, func(a, b completionChoice) int { return a.Index - b.Index })
		for i, ch := range resp.Choices {
			sc, err := readChoice(ch, part[i], e.TopK)
			if err != nil {
				return nil, e.fail(fmt.Errorf("sequence %d: %w", at+i, err))
			}
			out = append(out, sc)
		}
	}
	return out, nil
}

// readChoice reads one sequence's scores from prompt_logprobs, or from
// echoed OpenAI-style logprobs with token-id tokens; Top keeps the k most
// likely of each position (the given token is in an entry even when it is
// not among them).
func readChoice(ch completionChoice, seq []int32, k int) (Scores, error) {
	n := len(seq)
	sc := Scores{LogProbs: make([]float64, n), Top: make([][]model.TokenLogProb, n)}
	sc.LogProbs[0] = math.NaN()
	if ch.PromptLogprobs != nil {
		if len(ch.PromptLogprobs) != n {
			return sc, fmt.Errorf("prompt_logprobs has %d entries for a prompt of %d tokens (did the endpoint tokenize the ids again, or add a BOS token?)", len(ch.PromptLogprobs), n)
		}
		for j := 1; j < n; j++ {
			entry := ch.PromptLogprobs[j]
			var top []model.TokenLogProb
			found := false
			for key, v := range entry {
				id, err := strconv.ParseInt(key, 10, 32)
				if err != nil || v.Logprob == nil {
					return sc, fmt.Errorf("prompt_logprobs[%d]: entry %q is not a token id with a logprob", j, key)
				}
				lp := *v.Logprob
				if id == int64(seq[j]) {
					sc.LogProbs[j], found = lp, true
				}
				top = append(top, model.TokenLogProb{ID: int32(id), LogProb: float32(lp)})
			}
			if !found {
				return sc, fmt.Errorf("prompt_logprobs[%d] has no entry for the given token %d", j, seq[j])
			}
			slices.SortStableFunc(top, func(a, b model.TokenLogProb) int {
				switch {
				case a.LogProb > b.LogProb:
					return -1
				case a.LogProb < b.LogProb:
					return 1
				}
				return int(a.ID - b.ID)
			})
			sc.Top[j] = top[:min(k, len(top))]
		}
		return sc, checkLogProbs(sc.LogProbs)
	}
	lp := ch.Logprobs
	if lp == nil || len(lp.Tokens) < n || len(lp.TokenLogprobs) < n {
		return sc, errors.New("the answer has neither prompt_logprobs nor echoed logprobs for the prompt: the endpoint cannot score tokens (vLLM and kdnative serve can)")
	}
	for j := range n {
		id, ok := tokenID(lp.Tokens[j])
		if !ok {
			return sc, fmt.Errorf("logprobs.tokens[%d] is %q, not \"token_id:<id>\": the endpoint does not return token ids", j, lp.Tokens[j])
		}
		if id != seq[j] {
			return sc, fmt.Errorf("the endpoint echoed token %d at position %d where %d was sent", id, j, seq[j])
		}
		if j == 0 {
			continue
		}
		if lp.TokenLogprobs[j] == nil {
			return sc, fmt.Errorf("logprobs.token_logprobs[%d] is null", j)
		}
		sc.LogProbs[j] = *lp.TokenLogprobs[j]
		if j < len(lp.TopLogprobs) {
			for key, v := range lp.TopLogprobs[j] {
				if tid, ok := tokenID(key); ok && v != nil {
					sc.Top[j] = append(sc.Top[j], model.TokenLogProb{ID: tid, LogProb: float32(*v)})
				}
			}
			slices.SortStableFunc(sc.Top[j], func(a, b model.TokenLogProb) int {
				if a.LogProb != b.LogProb {
					if a.LogProb > b.LogProb {
						return -1
					}
					return 1
				}
				return int(a.ID - b.ID)
			})
			sc.Top[j] = sc.Top[j][:min(k, len(sc.Top[j]))]
		}
	}
	return sc, checkLogProbs(sc.LogProbs)
}

// checkLogProbs refuses values that are not log-probabilities (vLLM writes
// −9999 for −∞, which is kept).
func checkLogProbs(lps []float64) error {
	for j, v := range lps[1:] {
		if math.IsNaN(v) || math.IsInf(v, 0) || v > 1e-4 {
			return fmt.Errorf("the log-probability of token %d is %g: not a log-probability", j+1, v)
		}
	}
	return nil
}

// tokenID reads vLLM's "token_id:<id>" token strings.
func tokenID(s string) (int32, bool) {
	rest, ok := strings.CutPrefix(s, "token_id:")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(rest, 10, 32)
	return int32(id), err == nil && id >= 0
}

// Score implements Scorer: the scored tokens' log-probabilities.
func (e *Endpoint) Score(ctx context.Context, seqs []Sequence) ([][]float64, error) {
	if len(seqs) == 0 {
		return nil, errors.New("rollout: nothing to score")
	}
	raw := make([][]int32, len(seqs))
	for i, s := range seqs {
		if err := s.check(i); err != nil {
			return nil, err
		}
		raw[i] = s.Tokens
	}
	all, err := e.ScoreAll(ctx, raw)
	if err != nil {
		return nil, err
	}
	out := make([][]float64, len(seqs))
	for i, s := range seqs {
		out[i] = all[i].LogProbs[s.Start:]
	}
	return out, nil
}

// Tokenize asks the endpoint how it tokenizes text (sent as a text
// prompt, with the special tokens its tokenizer adds, such as a BOS), to
// check that it shares the student's tokenizer: its token ids are read
// from prompt_token_ids (vLLM's return_token_ids) or from the echoed
// "token_id:<id>" tokens.
func (e *Endpoint) Tokenize(ctx context.Context, text string) ([]int32, error) {
	req := completionRequest{Model: e.Client.Model, Prompt: text, Echo: true, MaxTokens: 1,
		Logprobs: 0, PromptLogprobs: 0, ReturnTokensAsTokenIDs: true, ReturnTokenIDs: true}
	var resp completionResponse
	err := e.Client.Post(ctx, "/completions", "a completion with token ids", req, func(data []byte) error {
		resp = completionResponse{}
		if err := json.Unmarshal(data, &resp); err != nil {
			return err
		}
		if len(resp.Choices) != 1 {
			return fmt.Errorf("%d choices for one prompt", len(resp.Choices))
		}
		return nil
	})
	if err != nil {
		return nil, e.fail(err)
	}
	ch := resp.Choices[0]
	if len(ch.PromptTokenIDs) > 0 {
		return ch.PromptTokenIDs, nil
	}
	if ch.Logprobs == nil || len(ch.Logprobs.Tokens) == 0 {
		return nil, e.fail(errors.New("the answer has neither prompt_token_ids nor echoed token ids: cannot tell how the endpoint tokenizes"))
	}
	n := len(ch.Logprobs.Tokens) - 1 // the echo ends with the one generated token
	if ch.PromptLogprobs != nil {
		n = len(ch.PromptLogprobs)
	}
	var ids []int32
	for _, t := range ch.Logprobs.Tokens[:max(n, 0)] {
		id, ok := tokenID(t)
		if !ok {
			return nil, e.fail(fmt.Errorf("echoed token %q is not \"token_id:<id>\"", t))
		}
		ids = append(ids, id)
	}
	return ids, nil
}
