package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"

	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// Scoring: /v1/completions with echo or prompt_logprobs, in vLLM's request
// and answer shape, so that a client written for vLLM (kd/rollout's
// Endpoint, an on-policy trainer's teacher) scores tokens here too:
//
//	{"prompt": [[ids…], …] or text, "echo": true, "max_tokens": 0 (or more),
//	 "logprobs": k, "prompt_logprobs": k, "return_tokens_as_token_ids": true}
//
// Each choice gets prompt_logprobs: for every prompt position, null for the
// first token, else an object from token id to {"logprob", "rank",
// "decoded_token"} holding the given token (rank: 1 + how many tokens are
// at least as likely… as vLLM counts it, the token itself included) and
// then the k most likely tokens, ranks 1…k. With echo, text and logprobs
// begin with the prompt (token_logprobs[0] and top_logprobs[0] are null;
// top_logprobs entries hold the given token and the top k, as vLLM's do).
// max_tokens 0 scores without generating; with max_tokens > 0 the
// completion follows as usual. Log-probabilities are the model's at
// temperature 1 (vLLM's prompt log-probabilities are the raw ones too);
// −∞ is written as −9999, as vLLM does. Not streamed (vLLM refuses
// prompt_logprobs with stream too).
//
// A scoring request runs on the scheduler's goroutine between decoding
// steps: one full forward pass per group of prompts of at most
// Config.ScoreTokens tokens (DefaultScoreTokens), then the logits a chunk
// of rows at a time.

// DefaultScoreTokens bounds the tokens of one scoring forward pass.
const DefaultScoreTokens = 4096

// maxScoreTop bounds prompt_logprobs' k.
const maxScoreTop = 20

// scoreJob is one request's prompts, scored by the scheduler.
type scoreJob struct {
	ctx     context.Context
	prompts [][]int32
	k       int
	out     []promptScores
	err     error
	done    chan struct{}
}

// promptScores are one prompt's scores: for positions j ≥ 1, the given
// token's log-probability and rank and the k most likely tokens.
type promptScores struct {
	lp   []float64
	rank []int
	top  [][]model.TokenLogProb
}

// scorePrompts has the scheduler score prompts and waits for it.
func (s *Server) scorePrompts(ctx context.Context, prompts [][]int32, k int) ([]promptScores, *httpError) {
	j := &scoreJob{ctx: ctx, prompts: prompts, k: k, done: make(chan struct{})}
	s.mu.Lock()
	select {
	case <-s.stop:
		s.mu.Unlock()
		return nil, &httpError{status: http.StatusServiceUnavailable, typ: "server_error", msg: "the server is shutting down"}
	default:
	}
	if len(s.scoring) >= s.cfg.MaxQueue {
		s.mu.Unlock()
		return nil, &httpError{status: http.StatusTooManyRequests, typ: "rate_limit_exceeded",
			msg: fmt.Sprintf("the server is busy: %d scoring requests are already waiting; retry later", len(s.scoring))}
	}
	s.scoring = append(s.scoring, j)
	s.signal()
	s.mu.Unlock()
	select {
	case <-j.done:
	case <-ctx.Done():
		<-j.done // the scheduler sees the context and stops early
	}
	if j.err != nil {
		if errors.Is(j.err, errShutdown) {
			return nil, &httpError{status: http.StatusServiceUnavailable, typ: "server_error", msg: j.err.Error()}
		}
		return nil, &httpError{status: http.StatusInternalServerError, typ: "server_error", msg: j.err.Error()}
	}
	return j.out, nil
}

// runScoring scores the waiting scoring requests (on the scheduler).
func (s *Server) runScoring() {
	for {
		s.mu.Lock()
		if len(s.scoring) == 0 {
			s.mu.Unlock()
			return
		}
		j := s.scoring[0]
		s.scoring = s.scoring[1:]
		s.mu.Unlock()
		j.out, j.err = s.score(j)
		close(j.done)
	}
}

// failScoring ends the waiting scoring requests with err (shutdown).
func (s *Server) failScoring(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, j := range s.scoring {
		j.err = err
		close(j.done)
	}
	s.scoring = nil
}

// score runs the model over a job's prompts.
func (s *Server) score(j *scoreJob) ([]promptScores, error) {
	budget := s.cfg.ScoreTokens
	if budget <= 0 {
		budget = DefaultScoreTokens
	}
	out := make([]promptScores, len(j.prompts))
	for at := 0; at < len(j.prompts); {
		// The longest group of prompts whose padded batch fits the budget
		// (at least one prompt).
		end, T := at, 0
		for end < len(j.prompts) {
			t := max(T, len(j.prompts[end]))
			if end > at && t*(end-at+1) > budget {
				break
			}
			T, end = t, end+1
		}
		if err := j.ctx.Err(); err != nil {
			return nil, err
		}
		if err := s.scoreGroup(j.prompts[at:end], T, j.k, out[at:end]); err != nil {
			return nil, err
		}
		at = end
	}
	return out, nil
}

// scoreGroup scores prompts (right-padded to T) in one forward pass.
func (s *Server) scoreGroup(prompts [][]int32, T, k int, out []promptScores) error {
	m, be := s.m, s.m.Backend()
	B, V := len(prompts), s.m.Config.Vocab
	b := model.Batch{B: B, T: T, IDs: make([]int32, B*T)}
	for r, p := range prompts {
		copy(b.IDs[r*T:], p)
	}
	h, err := m.InferHidden(b)
	if err != nil {
		return err
	}
	R := min(B*T, max(1, (64<<20)/(4*V)))
	logits, err := be.Alloc("score.logits", kdrt.F32, R, V)
	if err != nil {
		return err
	}
	defer be.Free(logits)
	host := make([]float32, R*V)
	// rows are (prompt r, position j) for j < len(prompt r) − 1: position j
	// predicts token j+1.
	type at struct{ r, j int }
	var rows []at
	for r, p := range prompts {
		out[r] = promptScores{lp: make([]float64, len(p)), rank: make([]int, len(p)), top: make([][]model.TokenLogProb, len(p))}
		for j := 0; j+1 < len(p); j++ {
			rows = append(rows, at{r, j})
		}
	}
	sel, err := be.Alloc("score.hidden", h.DType, R, m.Config.Hidden)
	if err != nil {
		return err
	}
	defer be.Free(sel)
	for c0 := 0; c0 < len(rows); c0 += R {
		n := min(R, len(rows)-c0)
		for i := range n {
			row := rows[c0+i].r*T + rows[c0+i].j
			be.Copy(be.Slice(sel, i, i+1), be.Slice(h, row, row+1))
		}
		lg := be.Slice(logits, 0, n)
		be.MatMul(lg, be.Slice(sel, 0, n), m.Head().W, false, true, 1, 0)
		if err := be.Download(lg, host[:n*V]); err != nil {
			return err
		}
		for i := range n {
			a := rows[c0+i]
			tok := prompts[a.r][a.j+1]
			lp, rank, top := scoreRow(host[i*V:(i+1)*V], tok, k)
			ps := &out[a.r]
			ps.lp[a.j+1], ps.rank[a.j+1], ps.top[a.j+1] = lp, rank, top
		}
	}
	return nil
}

// scoreRow is the log-softmax (float64) of logits at tok, tok's rank (1 +
// the number of other tokens at least as likely, as vLLM counts) and the k
// most likely tokens, most likely first (ties: lower id first).
func scoreRow(logits []float32, tok int32, k int) (float64, int, []model.TokenLogProb) {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - mx)
	}
	lse := mx + math.Log(sum)
	x := logits[tok]
	rank := 0
	for _, v := range logits {
		if v >= x {
			rank++
		}
	}
	var top []model.TokenLogProb
	if k > 0 {
		idx := make([]int, 0, k+1)
		for i, v := range logits {
			if len(idx) == k && v <= logits[idx[k-1]] {
				continue
			}
			at := sort.Search(len(idx), func(a int) bool { return logits[idx[a]] < v })
			idx = append(idx, 0)
			copy(idx[at+1:], idx[at:])
			idx[at] = i
			if len(idx) > k {
				idx = idx[:k]
			}
		}
		for _, i := range idx {
			top = append(top, model.TokenLogProb{ID: int32(i), LogProb: float32(float64(logits[i]) - lse)})
		}
	}
	return float64(x) - lse, rank, top
}

// clampLP writes −∞ as vLLM does (−9999.0).
func clampLP(v float64) float64 { return math.Max(v, -9999) }

// orderedEntry is one token of a prompt_logprobs position.
type orderedEntry struct {
	id      int32
	logprob float64
	rank    int
	text    string
}

// orderedLogprobs is a prompt_logprobs position: a JSON object whose keys
// keep their order (the given token first, then the top k), as vLLM's
// dictionaries do.
type orderedLogprobs []orderedEntry

func (o orderedLogprobs) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	seen := map[int32]bool{}
	first := true
	for _, e := range o {
		if seen[e.id] {
			continue
		}
		seen[e.id] = true
		if !first {
			b.WriteByte(',')
		}
		first = false
		val, err := json.Marshal(map[string]any{"logprob": clampLP(e.logprob), "rank": e.rank, "decoded_token": e.text})
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "%q:%s", strconv.Itoa(int(e.id)), val)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// promptLogprobsJSON is a choice's prompt_logprobs.
func (s *Server) promptLogprobsJSON(ids []int32, ps promptScores) []any {
	out := make([]any, len(ids))
	for j := 1; j < len(ids); j++ {
		e := orderedLogprobs{{id: ids[j], logprob: ps.lp[j], rank: ps.rank[j], text: s.piece(ids[j])}}
		for r, t := range ps.top[j] {
			e = append(e, orderedEntry{id: t.ID, logprob: float64(t.LogProb), rank: r + 1, text: s.piece(t.ID)})
		}
		out[j] = e
	}
	return out
}

// tokenText is a token as logprobs' tokens show it: its text, or
// "token_id:<id>" when asked (return_tokens_as_token_ids).
func (s *Server) tokenText(id int32, asIDs bool) string {
	if asIDs {
		return "token_id:" + strconv.Itoa(int(id))
	}
	return s.piece(id)
}

// echoLogprobs is the prompt's part of an echoed choice's logprobs: tokens,
// token_logprobs and top_logprobs (null at the first token), text_offset.
func (s *Server) echoLogprobs(ids []int32, ps promptScores, k int, asIDs bool) (tokens []string, lps []any, tops []any, offs []int) {
	off := 0
	for j, id := range ids {
		tokens = append(tokens, s.tokenText(id, asIDs))
		offs = append(offs, off)
		off += len(s.piece(id))
		if j == 0 {
			lps, tops = append(lps, nil), append(tops, nil)
			continue
		}
		lps = append(lps, clampLP(ps.lp[j]))
		m := orderedFloats{{s.tokenText(id, asIDs), clampLP(ps.lp[j])}}
		for _, t := range ps.top[j][:min(k, len(ps.top[j]))] {
			m = append(m, keyFloat{s.tokenText(t.ID, asIDs), clampLP(float64(t.LogProb))})
		}
		tops = append(tops, m)
	}
	return
}

// keyFloat and orderedFloats are top_logprobs entries in order.
type keyFloat struct {
	k string
	v float64
}
type orderedFloats []keyFloat

func (o orderedFloats) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	seen := map[string]bool{}
	for _, e := range o {
		if seen[e.k] {
			continue
		}
		if len(seen) > 0 {
			b.WriteByte(',')
		}
		seen[e.k] = true
		k, _ := json.Marshal(e.k)
		v, _ := json.Marshal(e.v)
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// scoreOptions are what a completions request asked of the scoring.
type scoreOptions struct {
	echo      bool
	scoreOnly bool // echo with max_tokens 0: no generation
	promptLP  int  // prompt_logprobs' k; −1: not asked
	logprobs  int  // logprobs' k; −1: not asked
	asIDs     bool // return_tokens_as_token_ids
	returnIDs bool // return_token_ids
	scored    []promptScores
}

// wantsScores reports whether the prompts must be scored.
func (o *scoreOptions) wantsScores() bool {
	return o.promptLP >= 0 || (o.echo && o.logprobs >= 0)
}

// topK is the k the scoring computes.
func (o *scoreOptions) topK() int { return max(o.promptLP, o.logprobs, 0) }

// planScoring reads the scoring fields of a completions request.
func planScoring(req *completionRequest, p *plan) *reqError {
	o := &scoreOptions{echo: req.Echo, promptLP: -1, logprobs: -1}
	if req.ReturnTokensAsTokenIDs != nil {
		o.asIDs = *req.ReturnTokensAsTokenIDs
	}
	if req.ReturnTokenIDs != nil {
		o.returnIDs = *req.ReturnTokenIDs
	}
	if req.PromptLogprobs != nil {
		if k := *req.PromptLogprobs; k < 0 || k > maxScoreTop {
			return badf("prompt_logprobs", "prompt_logprobs is %d: want 0 to %d", k, maxScoreTop)
		}
		o.promptLP = *req.PromptLogprobs
	}
	if req.Logprobs != nil {
		o.logprobs = *req.Logprobs
	}
	if req.MaxTokens != nil && *req.MaxTokens == 0 {
		if !req.Echo {
			return badf("max_tokens", "max_tokens is 0: want at least 1 (0 only with echo, to score the prompt)")
		}
		o.scoreOnly = true
		one := 1
		req.MaxTokens = &one // the checks of a generation of one token; none is made
	}
	if (o.echo || o.promptLP >= 0) && req.Stream {
		param := "echo"
		if o.promptLP >= 0 {
			param = "prompt_logprobs"
		}
		return badf(param, "%s is not available with stream", param)
	}
	if o.echo || o.promptLP >= 0 || o.asIDs || o.returnIDs {
		p.score = o
	}
	return nil
}

// addScores puts the scoring into a finished completions choice: the echoed
// prompt before its text and logprobs, prompt_logprobs, prompt_token_ids.
func (s *Server) addScores(ch map[string]any, p *plan, prompt int, gen []tokInfo) {
	o := p.score
	if o == nil {
		return
	}
	ids := p.prompts[prompt]
	if o.echo {
		text := p.texts[prompt]
		if o.returnIDs {
			text = "" // vLLM leaves the prompt's text out when it returns ids
		}
		ch["text"] = text + ch["text"].(string)
		if o.logprobs >= 0 {
			tokens, lps, tops, offs := s.echoLogprobs(ids, o.scored[prompt], o.logprobs, o.asIDs)
			for _, t := range gen {
				tokens = append(tokens, s.tokenText(t.id, o.asIDs))
				lps = append(lps, float64(t.lp))
				offs = append(offs, len(p.texts[prompt])+t.offset)
				m := orderedFloats{{s.tokenText(t.id, o.asIDs), float64(t.lp)}}
				for _, a := range t.top {
					m = append(m, keyFloat{s.tokenText(a.ID, o.asIDs), float64(a.LogProb)})
				}
				tops = append(tops, m)
			}
			ch["logprobs"] = map[string]any{"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs}
		}
	} else if o.asIDs && ch["logprobs"] != nil {
		lp := ch["logprobs"].(map[string]any)
		tokens := make([]string, len(gen))
		for i, t := range gen {
			tokens[i] = s.tokenText(t.id, true)
		}
		lp["tokens"] = tokens
	}
	if o.promptLP >= 0 || (o.echo && o.logprobs >= 0) {
		ch["prompt_logprobs"] = s.promptLogprobsJSON(ids, o.scored[prompt])
	}
	if o.returnIDs {
		ch["prompt_token_ids"] = ids
		gids := make([]int32, len(gen))
		for i, t := range gen {
			gids[i] = t.id
		}
		ch["token_ids"] = gids
	}
}

// scoreOnly answers an echo request with max_tokens 0: the prompts scored,
// nothing generated.
func (s *Server) scoreOnly(w http.ResponseWriter, p *plan) {
	out := make([]any, 0, len(p.prompts)*p.n)
	tokens := 0
	for i, ids := range p.prompts {
		tokens += len(ids)
		for range p.n {
			ch := map[string]any{"index": len(out), "text": "", "logprobs": nil, "finish_reason": "length", "stop_reason": nil}
			s.addScores(ch, p, i, nil)
			out = append(out, ch)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": newID("cmpl-"), "object": "text_completion", "created": now(),
		"model": s.cfg.ModelName, "choices": out,
		"usage": map[string]int{"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}})
}
