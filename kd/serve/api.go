package serve

import (
	"encoding/json"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/model"
)

// common are the fields both endpoints share.
type common struct {
	Model             *string   `json:"model"`
	MaxTokens         *int      `json:"max_tokens"`
	Temperature       *float64  `json:"temperature"`
	TopP              *float64  `json:"top_p"`
	TopK              *int      `json:"top_k"`
	RepetitionPenalty *float64  `json:"repetition_penalty"`
	N                 *int      `json:"n"`
	Stop              stopField `json:"stop"`
	Seed              *int64    `json:"seed"`
	Stream            bool      `json:"stream"`
	StreamOptions     *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	PresencePenalty  *float64       `json:"presence_penalty"`
	FrequencyPenalty *float64       `json:"frequency_penalty"`
	LogitBias        logitBiasField `json:"logit_bias"`
}

// plan is a validated request.
type plan struct {
	prompts [][]int32
	texts   []string // the prompts as text (text_offset)
	n       int
	params  model.GenerateParams
	stops   []string
	stopIDs []int32
	// maxTokens as asked (0: as many as fit).
	maxTokens int
	stream    bool
	usage     bool // stream_options.include_usage
	topLP     int
	logprobs  bool
	// score is what a completions request asked of the scoring (echo,
	// prompt_logprobs; score.go), nil when nothing.
	score *scoreOptions
}

func (s *Server) checkCommon(c *common, p *plan, defaultMax int) *reqError {
	if c.Model == nil || *c.Model == "" {
		return badf("model", "model is required (this server has %q)", s.cfg.ModelName)
	}
	if *c.Model != s.cfg.ModelName {
		return badf("model", "model %q is not served here; this server has %q", *c.Model, s.cfg.ModelName)
	}
	p.maxTokens = defaultMax
	if c.MaxTokens != nil {
		if *c.MaxTokens < 1 {
			return badf("max_tokens", "max_tokens is %d: want at least 1", *c.MaxTokens)
		}
		p.maxTokens = *c.MaxTokens
	}
	p.params.Temperature = 1
	if c.Temperature != nil {
		if t := *c.Temperature; t < 0 || t > 2 || math.IsNaN(t) {
			return badf("temperature", "temperature is %g: want 0 to 2", t)
		}
		p.params.Temperature = *c.Temperature
	}
	if c.TopP != nil {
		if t := *c.TopP; !(t > 0 && t <= 1) {
			return badf("top_p", "top_p is %g: want more than 0 and at most 1", t)
		}
		p.params.TopP = *c.TopP
	}
	if c.TopK != nil {
		if *c.TopK < -1 {
			return badf("top_k", "top_k is %d: want 0 or -1 (all tokens) or a positive count", *c.TopK)
		}
		p.params.TopK = max(*c.TopK, 0)
	}
	if c.RepetitionPenalty != nil {
		if t := *c.RepetitionPenalty; !(t > 0) || math.IsInf(t, 0) {
			return badf("repetition_penalty", "repetition_penalty is %g: want more than 0", t)
		}
		p.params.RepetitionPenalty = *c.RepetitionPenalty
	}
	p.n = 1
	if c.N != nil {
		if *c.N < 1 || *c.N > 8 {
			return badf("n", "n is %d: want 1 to 8", *c.N)
		}
		p.n = *c.N
	}
	p.stops = c.Stop.stops
	if c.Seed != nil {
		p.params.Seed = uint64(*c.Seed)
	} else {
		p.params.Seed = mrand.Uint64()
	}
	p.stream = c.Stream
	if c.StreamOptions != nil {
		if !c.Stream {
			return badf("stream_options", "stream_options needs stream true")
		}
		p.usage = c.StreamOptions.IncludeUsage
	}
	if c.PresencePenalty != nil && *c.PresencePenalty != 0 {
		return badf("presence_penalty", "presence_penalty is not supported (use repetition_penalty)")
	}
	if c.FrequencyPenalty != nil && *c.FrequencyPenalty != 0 {
		return badf("frequency_penalty", "frequency_penalty is not supported (use repetition_penalty)")
	}
	if c.LogitBias.set {
		return badf("logit_bias", "logit_bias is not supported")
	}
	if sp := s.tok.Special(); sp.EOS >= 0 {
		p.stopIDs = append(p.stopIDs, sp.EOS)
	}
	return nil
}

// fit checks each prompt against the model's positions and sets MaxTokens.
func (s *Server) fit(p *plan, param string) *reqError {
	P := s.m.Config.MaxPositions
	maxLen := 0
	for i, ids := range p.prompts {
		if len(ids) == 0 {
			return badf(param, "%s: prompt %d is empty", param, i)
		}
		if len(ids) >= P {
			return badf(param, "%s: the prompt is %d tokens, and the model has %d positions in all (prompt and completion, at least 1 token)", param, len(ids), P)
		}
		maxLen = max(maxLen, len(ids))
	}
	// The key/value cache of one sequence must fit the server's budget.
	perToken := s.e.KVBytesPerToken()
	kvRoom := int(s.cfg.KVCacheBytes/perToken) - maxLen
	if kvRoom < 1 {
		return badf(param, "%s: the prompt is %d tokens, and its key/value cache (%s) would not fit in this server's budget of %s (start kdnative serve with a larger --kv-cache-mb)",
			param, maxLen, mb(int64(maxLen+1)*perToken), mb(s.cfg.KVCacheBytes))
	}
	mt := min(P-maxLen, kvRoom)
	if p.maxTokens > 0 {
		mt = min(mt, p.maxTokens)
	}
	if s.cfg.MaxTokensCap > 0 {
		mt = min(mt, s.cfg.MaxTokensCap)
	}
	p.params.MaxTokens = mt
	return nil
}

// completionRequest is POST /v1/completions.
type completionRequest struct {
	common
	Prompt   promptField `json:"prompt"`
	Logprobs *int        `json:"logprobs"`
	Echo     bool        `json:"echo"`
	Suffix   *string     `json:"suffix"`
	BestOf   *int        `json:"best_of"`
	// vLLM's scoring extensions (score.go).
	PromptLogprobs         *int  `json:"prompt_logprobs"`
	ReturnTokensAsTokenIDs *bool `json:"return_tokens_as_token_ids"`
	ReturnTokenIDs         *bool `json:"return_token_ids"`
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	req := completionRequest{Prompt: promptField{lim: &s.lim}}
	release, herr := s.readRequest(r, &req)
	if herr != nil {
		s.write(w, herr)
		return
	}
	var p plan
	e := s.planCompletion(&req, &p)
	release()
	if e != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", e.msg, e.param)
		return
	}
	if o := p.score; o != nil && o.wantsScores() {
		var herr *httpError
		if o.scored, herr = s.scorePrompts(r.Context(), p.prompts, o.topK()); herr != nil {
			s.write(w, herr)
			return
		}
	}
	if p.score != nil && p.score.scoreOnly {
		s.scoreOnly(w, &p)
		return
	}
	s.respond(w, r, &p, false)
}

func (s *Server) planCompletion(req *completionRequest, p *plan) *reqError {
	if e := planScoring(req, p); e != nil {
		return e
	}
	if e := s.checkCommon(&req.common, p, 16); e != nil {
		return e
	}
	if req.Suffix != nil && *req.Suffix != "" {
		return badf("suffix", "suffix is not supported")
	}
	if req.BestOf != nil && *req.BestOf > 1 {
		return badf("best_of", "best_of is not supported")
	}
	if req.Logprobs != nil {
		if *req.Logprobs < 0 || *req.Logprobs > 20 {
			return badf("logprobs", "logprobs is %d: want 0 to 20", *req.Logprobs)
		}
		p.logprobs, p.topLP = true, *req.Logprobs
	}
	pr := &req.Prompt
	if !pr.set {
		return badf("prompt", "prompt is required")
	}
	// Counts first: nothing is tokenized for a request that asks too much.
	if n := max(len(pr.texts), len(pr.ids)); n*p.n > maxChoices {
		return badf("prompt", "%d prompts × n %d: at most %d completions a request", n, p.n, maxChoices)
	}
	sp := s.tok.Special()
	for _, t := range pr.texts {
		var ids []int32
		if sp.AddBOS && sp.BOS >= 0 {
			ids = append(ids, sp.BOS)
		}
		p.texts = append(p.texts, t)
		p.prompts = append(p.prompts, append(ids, s.tok.Encode(t)...))
	}
	for _, ids := range pr.ids {
		p.prompts = append(p.prompts, ids)
		p.texts = append(p.texts, s.tok.Decode(ids))
	}
	return s.fit(p, "prompt")
}

// chatRequest is POST /v1/chat/completions.
type chatRequest struct {
	common
	Messages            chatMessages    `json:"messages"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Logprobs            *bool           `json:"logprobs"`
	TopLogprobs         *int            `json:"top_logprobs"`
	Tools               json.RawMessage `json:"tools"`
	ResponseFormat      *struct {
		Type string `json:"type"`
	} `json:"response_format"`
}

type chatMessage struct {
	Role      *string         `json:"role"`
	Content   json.RawMessage `json:"content"`
	Reasoning string          `json:"reasoning_content"`
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	req := chatRequest{Messages: chatMessages{lim: &s.lim}}
	release, herr := s.readRequest(r, &req)
	if herr != nil {
		s.write(w, herr)
		return
	}
	var p plan
	e := s.planChat(&req, &p)
	release()
	if e != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", e.msg, e.param)
		return
	}
	s.respond(w, r, &p, true)
}

func (s *Server) planChat(req *chatRequest, p *plan) *reqError {
	if req.MaxCompletionTokens != nil {
		if req.MaxTokens != nil && *req.MaxTokens != *req.MaxCompletionTokens {
			return badf("max_completion_tokens", "max_tokens and max_completion_tokens differ: give one")
		}
		if *req.MaxCompletionTokens < 1 {
			return badf("max_completion_tokens", "max_completion_tokens is %d: want at least 1", *req.MaxCompletionTokens)
		}
		req.MaxTokens = req.MaxCompletionTokens
	}
	if e := s.checkCommon(&req.common, p, 0); e != nil {
		return e
	}
	if req.TopLogprobs != nil {
		if *req.TopLogprobs < 0 || *req.TopLogprobs > 20 {
			return badf("top_logprobs", "top_logprobs is %d: want 0 to 20", *req.TopLogprobs)
		}
		if req.Logprobs == nil || !*req.Logprobs {
			return badf("top_logprobs", "top_logprobs needs logprobs true")
		}
		p.topLP = *req.TopLogprobs
	}
	p.logprobs = req.Logprobs != nil && *req.Logprobs
	if len(req.Tools) > 0 && string(req.Tools) != "null" && string(req.Tools) != "[]" {
		return badf("tools", "tools are not supported")
	}
	if rf := req.ResponseFormat; rf != nil && rf.Type != "" && rf.Type != "text" {
		return badf("response_format", "response_format %q is not supported (only text)", rf.Type)
	}
	if s.tmpl == nil {
		return badf("messages", "chat completions are unavailable: %v", s.tmplErr)
	}
	if len(req.Messages.msgs) == 0 {
		return badf("messages", "messages is required: want at least one {role, content}")
	}
	msgs := make([]data.Message, len(req.Messages.msgs))
	textBytes := 0
	for i, m := range req.Messages.msgs {
		param := fmt.Sprintf("messages[%d]", i)
		if m.Role == nil {
			return badf(param+".role", "%s.role is required", param)
		}
		role := *m.Role
		if role == "developer" {
			role = "system"
		}
		switch role {
		case "system", "user", "assistant":
		default:
			return badf(param+".role", "%s.role %q: want system, developer, user or assistant", param, *m.Role)
		}
		text, e := contentText(m.Content, param+".content")
		if e != nil {
			return e
		}
		msgs[i] = data.Message{Role: role, Content: text, Reasoning: m.Reasoning}
		if textBytes += len(text) + len(m.Reasoning); textBytes > s.lim.maxBytes {
			return badf("messages", "messages hold more than %d bytes of text: more than fits in the model's %d positions", s.lim.maxBytes, s.lim.positions)
		}
	}
	ids, err := s.tmpl.GenerationPrompt(msgs)
	if err != nil {
		return badf("messages", "messages: %v", err)
	}
	p.prompts, p.texts = [][]int32{ids}, []string{""}
	// The chat template's end of turn (<|im_end|>, <|eot_id|>, …).
	p.stopIDs = append(p.stopIDs, s.tmpl.StopTokens()...)
	return s.fit(p, "messages")
}

// contentText is a message's content: a string, or text parts.
func contentText(raw json.RawMessage, param string) (string, *reqError) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", badf(param, "%s is required", param)
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return "", badf(param, "%s: want a string or an array of text parts", param)
	}
	var b strings.Builder
	for i, pt := range parts {
		if pt.Type != "text" || pt.Text == nil {
			return "", badf(param, "%s[%d]: only text parts are supported, got type %q", param, i, pt.Type)
		}
		b.WriteString(*pt.Text)
	}
	return b.String(), nil
}

func now() int64 { return time.Now().Unix() }
