package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/kdnative/kdnative/model"
)

// tokInfo is one generated token kept in the answer.
type tokInfo struct {
	id     int32
	lp     float32
	top    []model.TokenLogProb
	offset int // byte offset in the completion text
}

// tracker turns a growing generation into text deltas: it holds back an
// incomplete UTF-8 sequence and anything that may start a stop string, so
// the deltas add up to the final text.
type tracker struct {
	s     *Server
	stops []string
	prev  string // decode of the tokens before the last
	offs  []int
	sent  strings.Builder
	nrep  int // tokens reported
	emit  func(delta string, toks []int)
}

// step sees the tokens so far (never a final stop token); true ends the
// generation at a stop string.
func (t *tracker) step(gen []int32) bool {
	cur := t.s.tok.Decode(gen)
	t.offs = append(t.offs, commonPrefix(t.prev, cur))
	t.prev = cur
	text, cut := cur, cutAtStop(cur, t.stops)
	if cut >= 0 {
		return true // finish sends the rest
	}
	safe := len(text)
	for safe > 0 {
		r, n := utf8.DecodeLastRuneInString(text[:safe])
		if r != utf8.RuneError || n != 3 && n != 1 {
			break
		}
		safe -= n
	}
	for _, st := range t.stops {
		for k := min(len(st)-1, safe); k > 0; k-- {
			if strings.HasSuffix(text[:safe], st[:k]) {
				safe -= k
				break
			}
		}
	}
	sent := t.sent.String()
	if safe <= len(sent) || !strings.HasPrefix(text[:safe], sent) {
		return false
	}
	delta := text[len(sent):safe]
	t.sent.WriteString(delta)
	var toks []int
	for ; t.nrep < len(gen) && t.offs[t.nrep] < t.sent.Len(); t.nrep++ {
		toks = append(toks, t.nrep)
	}
	if t.emit != nil {
		t.emit(delta, toks)
	}
	return false
}

// result is one finished choice.
type result struct {
	text   string
	finish string
	toks   []tokInfo
	n      int // tokens generated
}

// finish sends what was held back and returns the choice.
func (t *tracker) finish(g *model.Generation, stopIDs []int32) result {
	toks := g.Tokens
	if g.Finish == "stop" && len(toks) > 0 && slices.Contains(stopIDs, toks[len(toks)-1]) {
		toks = toks[:len(toks)-1]
	}
	for len(t.offs) < len(toks) { // Stop was not asked about every token
		t.step(toks[:len(t.offs)+1])
	}
	text := t.s.tok.Decode(toks)
	res := result{finish: g.Finish, n: len(g.Tokens)}
	cut := cutAtStop(text, t.stops)
	if cut >= 0 {
		text, res.finish = text[:cut], "stop"
	}
	res.text = text
	kept := 0
	for kept < len(toks) && (cut < 0 || t.offs[kept] < cut) {
		kept++
	}
	for i := range kept {
		ti := tokInfo{id: toks[i], lp: g.LogProbs[i], offset: t.offs[i]}
		if i < len(g.Top) {
			ti.top = g.Top[i]
		}
		res.toks = append(res.toks, ti)
	}
	sent := t.sent.String()
	delta := ""
	if strings.HasPrefix(text, sent) {
		delta = text[len(sent):]
	}
	var rest []int
	for i := t.nrep; i < kept; i++ {
		rest = append(rest, i)
	}
	if t.emit != nil && (delta != "" || len(rest) > 0) {
		t.emit(delta, rest)
	}
	return res
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// cutAtStop is the index of the first stop string in text, or −1.
func cutAtStop(text string, stops []string) int {
	best := -1
	for _, s := range stops {
		if i := strings.Index(text, s); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	return best
}

// choiceState is one choice of a response as the handler follows it.
type choiceState struct {
	job      *seqJob
	prompt   int // index in plan.prompts
	tr       *tracker
	gen      model.Generation // the latest published
	seen     int              // tokens given to tr
	started  bool             // the stream has its first chunk
	finished bool
	res      result
}

// respond hands the plan's sequences to the scheduler and answers as they
// come: streamed token by token, or whole at the end.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, p *plan, chat bool) {
	id, created := newID("cmpl-"), now()
	object := "text_completion"
	if chat {
		id, object = newID("chatcmpl-"), "chat.completion"
	}
	var sse *sseWriter
	if p.stream {
		sse = &sseWriter{w: w}
		if chat {
			object = "chat.completion.chunk"
		}
	}
	chunk := func(choices []any) map[string]any {
		c := map[string]any{"id": id, "object": object, "created": created, "model": s.cfg.ModelName, "choices": choices}
		if p.usage {
			c["usage"] = nil
		}
		return c
	}
	ctx := r.Context()
	req := &request{ctx: ctx, notify: make(chan struct{}, 1)}
	var choices []*choiceState
	promptTokens := 0
	for pi, ids := range p.prompts {
		promptTokens += len(ids)
		for k := range p.n {
			params := p.params
			params.Seed += uint64(k)
			params.StopTokens = p.stopIDs
			params.TopLogProbs = p.topLP
			if len(p.stops) > 0 {
				stops := p.stops
				// Runs on the scheduler after each token, as Generate's Stop.
				params.Stop = func(g []int32) bool { return cutAtStop(s.tok.Decode(g), stops) >= 0 }
			}
			j := &seqJob{req: req, seq: &model.Seq{Prompt: ids, Params: params}}
			req.jobs = append(req.jobs, j)
			choices = append(choices, &choiceState{job: j, prompt: pi, tr: &tracker{s: s, stops: p.stops}})
		}
	}
	if !s.submit(req) {
		select {
		case <-s.stop:
			writeError(w, http.StatusServiceUnavailable, "server_error", "the server is shutting down", "")
		default:
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusTooManyRequests, "rate_limit_exceeded",
				fmt.Sprintf("the server is busy: %d requests are already waiting for the model; retry later (or start kdnative serve with a larger --max-queue or --max-batch)", s.cfg.MaxQueue), "")
		}
		return
	}
	if sse != nil {
		for idx, c := range choices {
			c.tr.emit = func(delta string, toks []int) {
				var lp any
				if p.logprobs {
					lp = s.logprobsJSON(chat, pick(&c.gen, toks, c.tr), p, p.texts[c.prompt])
				}
				if chat {
					sse.send(chunk([]any{map[string]any{"index": idx, "delta": map[string]any{"content": delta}, "logprobs": lp, "finish_reason": nil}}))
				} else {
					sse.send(chunk([]any{map[string]any{"index": idx, "text": delta, "logprobs": lp, "finish_reason": nil}}))
				}
			}
		}
	}
	completionTokens := 0
	var genErr error
	for left := len(choices); left > 0; {
		select {
		case <-req.notify:
		case <-ctx.Done():
			s.withdraw(req) // the scheduler drops what runs at its next step
			return
		}
		for idx, c := range choices {
			if c.finished {
				continue
			}
			gen, done, err := c.job.snapshot()
			if err != nil {
				genErr = err
				c.finished = true
				left--
				continue
			}
			if len(gen.Tokens) == 0 && !done {
				continue
			}
			c.gen = gen
			if sse != nil {
				if chat && !c.started {
					sse.send(chunk([]any{map[string]any{"index": idx, "delta": map[string]any{"role": "assistant", "content": ""}, "logprobs": nil, "finish_reason": nil}}))
				}
				c.started = true
				n := len(gen.Tokens)
				if done && gen.Finish == "stop" && n > 0 && slices.Contains(p.stopIDs, gen.Tokens[n-1]) {
					n-- // finish drops the stop token
				}
				for ; c.seen < n; c.seen++ {
					c.tr.step(gen.Tokens[:c.seen+1])
				}
			}
			if !done {
				continue
			}
			c.res = c.tr.finish(&c.gen, p.stopIDs)
			c.finished = true
			left--
			completionTokens += c.res.n
			if sse != nil {
				if chat {
					sse.send(chunk([]any{map[string]any{"index": idx, "delta": map[string]any{}, "logprobs": nil, "finish_reason": c.res.finish}}))
				} else {
					sse.send(chunk([]any{map[string]any{"index": idx, "text": "", "logprobs": nil, "finish_reason": c.res.finish}}))
				}
			}
		}
	}
	if genErr != nil && ctx.Err() != nil {
		return
	}
	usage := map[string]int{"prompt_tokens": promptTokens, "completion_tokens": completionTokens, "total_tokens": promptTokens + completionTokens}
	status := http.StatusInternalServerError
	if errors.Is(genErr, errShutdown) {
		status = http.StatusServiceUnavailable
	}
	if sse != nil {
		if genErr != nil && !sse.started {
			writeError(w, status, "server_error", genErr.Error(), "")
			return
		}
		if genErr != nil {
			sse.send(map[string]apiError{"error": {Message: genErr.Error(), Type: "server_error"}})
		} else if p.usage {
			sse.send(map[string]any{"id": id, "object": object, "created": created, "model": s.cfg.ModelName, "choices": []any{}, "usage": usage})
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
		sse.flush()
		return
	}
	if genErr != nil {
		writeError(w, status, "server_error", genErr.Error(), "")
		return
	}
	out := make([]any, len(choices))
	for i, c := range choices {
		var lp any
		if p.logprobs {
			lp = s.logprobsJSON(chat, c.res.toks, p, p.texts[c.prompt])
		}
		if chat {
			out[i] = map[string]any{"index": i, "message": map[string]any{"role": "assistant", "content": c.res.text}, "logprobs": lp, "finish_reason": c.res.finish}
		} else {
			ch := map[string]any{"index": i, "text": c.res.text, "logprobs": lp, "finish_reason": c.res.finish}
			s.addScores(ch, p, c.prompt, c.res.toks) // echo, prompt_logprobs (score.go)
			out[i] = ch
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": object, "created": created, "model": s.cfg.ModelName, "choices": out, "usage": usage})
}

func pick(g *model.Generation, idx []int, t *tracker) []tokInfo {
	var out []tokInfo
	for _, i := range idx {
		ti := tokInfo{id: g.Tokens[i], lp: g.LogProbs[i], offset: t.offs[i]}
		if i < len(g.Top) {
			ti.top = g.Top[i]
		}
		out = append(out, ti)
	}
	return out
}

// sseWriter writes server-sent events.
type sseWriter struct {
	w       http.ResponseWriter
	started bool
}

func (e *sseWriter) start() {
	h := e.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	e.w.WriteHeader(http.StatusOK)
	e.started = true
}

func (e *sseWriter) send(v any) {
	if !e.started {
		e.start()
	}
	js, _ := json.Marshal(v)
	fmt.Fprintf(e.w, "data: %s\n\n", js)
	e.flush()
}

func (e *sseWriter) flush() { http.NewResponseController(e.w).Flush() }

// logprobsJSON is a choice's "logprobs": chat's {content: [...]} or the
// completions' {tokens, token_logprobs, top_logprobs, text_offset}.
func (s *Server) logprobsJSON(chat bool, toks []tokInfo, p *plan, prompt string) any {
	if chat {
		content := make([]any, 0, len(toks))
		for _, t := range toks {
			top := make([]any, 0, len(t.top))
			for _, a := range t.top {
				top = append(top, map[string]any{"token": s.piece(a.ID), "logprob": a.LogProb, "bytes": s.tokenBytes(a.ID)})
			}
			content = append(content, map[string]any{"token": s.piece(t.id), "logprob": t.lp, "bytes": s.tokenBytes(t.id), "top_logprobs": top})
		}
		return map[string]any{"content": content, "refusal": nil}
	}
	tokens := make([]string, 0, len(toks))
	lps := make([]float32, 0, len(toks))
	offs := make([]int, 0, len(toks))
	var tops []map[string]float32
	for _, t := range toks {
		tokens = append(tokens, s.piece(t.id))
		lps = append(lps, t.lp)
		offs = append(offs, len(prompt)+t.offset)
		if p.topLP > 0 {
			m := map[string]float32{}
			for _, a := range t.top {
				k := s.piece(a.ID)
				if _, dup := m[k]; !dup {
					m[k] = a.LogProb
				}
			}
			tops = append(tops, m)
		}
	}
	out := map[string]any{"tokens": tokens, "token_logprobs": lps, "top_logprobs": nil, "text_offset": offs}
	if p.topLP > 0 {
		out["top_logprobs"] = tops
	}
	return out
}

// piece is one token's text as logprobs show it: the bytes it stands for
// where they are whole UTF-8 (a SentencePiece token's ▁ as the space it is,
// which decoding it alone would strip), else its decoding alone.
func (s *Server) piece(id int32) string {
	if b, ok := s.tok.TokenBytes(id); ok && utf8.Valid(b) {
		return string(b)
	}
	return s.tok.Decode([]int32{id})
}

// tokenBytes is a token's raw bytes: its text, or for a byte-level token
// that is part of a UTF-8 sequence, the bytes themselves.
func (s *Server) tokenBytes(id int32) []int {
	if b, ok := s.tok.TokenBytes(id); ok {
		out := make([]int, len(b))
		for i, c := range b {
			out[i] = int(c)
		}
		return out
	}
	d := s.tok.Decode([]int32{id})
	raw := []byte(d)
	if strings.ContainsRune(d, utf8.RuneError) {
		if t, ok := s.tok.Token(id); ok {
			if b, ok := byteLevel(t); ok {
				raw = b
			}
		}
	}
	out := make([]int, len(raw))
	for i, b := range raw {
		out[i] = int(b)
	}
	return out
}

// byteUnicode inverts GPT-2's bytes_to_unicode.
var byteUnicode = func() map[rune]byte {
	m := map[rune]byte{}
	n := 0
	for b := range 256 {
		if b >= 33 && b <= 126 || b >= 161 && b <= 172 || b >= 174 {
			m[rune(b)] = byte(b)
		} else {
			m[rune(256+n)] = byte(b)
			n++
		}
	}
	return m
}()

func byteLevel(t string) ([]byte, bool) {
	var out []byte
	for _, r := range t {
		b, ok := byteUnicode[r]
		if !ok {
			return nil, false
		}
		out = append(out, b)
	}
	return out, true
}
