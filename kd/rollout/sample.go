package rollout

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/kdnative/kdnative/model"
)

// Params say how responses are drawn.
type Params struct {
	// Temperature divides the logits (0: greedy).
	Temperature float64
	// TopP, in (0, 1), samples from the nucleus; 0 or 1 is the whole
	// distribution.
	TopP float64
	// TopK, when > 0, samples among the TopK most likely tokens only.
	TopK int
	// MaxNewTokens bounds each response; a prompt that leaves less room in
	// the model's positions (or in MaxLen) gets what is left.
	MaxNewTokens int
	// MaxLen, when > 0, bounds prompt + response (the training length, or
	// what the teacher can score); the model's positions bound it anyway.
	MaxLen int
	// StopTokens end a response (EOS, the chat template's end of turn); the
	// stop token is kept as the response's last token, a target like any
	// other, so the student learns where to stop.
	StopTokens []int32
}

// Validate reports parameters no sampler can use.
func (p Params) Validate() error {
	switch {
	case math.IsNaN(p.Temperature) || p.Temperature < 0 || math.IsInf(p.Temperature, 0):
		return fmt.Errorf("rollout: temperature %g must be a finite number ≥ 0", p.Temperature)
	case math.IsNaN(p.TopP) || p.TopP < 0 || p.TopP > 1:
		return fmt.Errorf("rollout: top_p %g must be in [0, 1]", p.TopP)
	case p.TopK < 0:
		return fmt.Errorf("rollout: top_k %d must be ≥ 0", p.TopK)
	case p.MaxNewTokens <= 0:
		return fmt.Errorf("rollout: max_new_tokens %d must be positive", p.MaxNewTokens)
	case p.MaxLen < 0:
		return fmt.Errorf("rollout: max length %d must be ≥ 0", p.MaxLen)
	}
	return nil
}

// Rollout is one sampled response to a prompt.
type Rollout struct {
	Prompt []int32
	// Response are the drawn tokens, ending with the stop token when one
	// ended it (Finish "stop") or cut at the length limit ("length").
	Response []int32
	// SampleLogProbs[i] is log μ(Response[i]): the log-probability under the
	// distribution the token was drawn from (temperature, top-k, top-p
	// applied) — the sampling policy an importance weight divides by. Nil
	// when the response was not sampled (the data's own).
	SampleLogProbs []float32
	// LogProbs[i] is the sampling model's log-probability of Response[i] at
	// temperature 1, when it was drawn. Nil when not sampled.
	LogProbs []float32
	Finish   string
}

// Sampler draws responses with one model, every prompt of a call decoded
// together in one model.Engine (continuous batching with a key/value cache
// per row: one forward pass per step for all rows), which it keeps
// between calls. A Sampler is not safe for concurrent use, and the model
// must not run anything else while Sample runs.
type Sampler struct {
	m   *model.Model
	e   *model.Engine
	cfg model.EngineConfig
}

// NewSampler makes a sampler for m; its engine is sized at the first call.
func NewSampler(m *model.Model) *Sampler { return &Sampler{m: m} }

// Close frees the engine.
func (s *Sampler) Close() {
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}

// maxStepTokens bounds the prompt tokens one engine step reads in (its
// buffers are [StepTokens, hidden] and [StepTokens, intermediate]); longer
// batches of prompts are read in chunks over several steps.
const maxStepTokens = 4096

// engine returns an engine that holds rows sequences of at most maxLen
// tokens at once, with the prompts read in at the first step when they fit
// maxStepTokens: every row at full length fits the cache budget, so no row
// ever gives its cache up.
func (s *Sampler) engine(rows, promptTokens, maxLen int) (*model.Engine, error) {
	want := model.EngineConfig{MaxRows: rows, StepTokens: min(max(promptTokens, rows, 64), maxStepTokens)}
	if s.e != nil && s.cfg.MaxRows >= want.MaxRows && s.cfg.StepTokens >= want.StepTokens &&
		s.cfg.KVBytes >= int64(rows*maxLen)*s.e.KVBytesPerToken() {
		return s.e, nil
	}
	s.Close()
	probe, err := s.m.NewEngine(model.EngineConfig{MaxRows: 1, StepTokens: 1})
	if err != nil {
		return nil, err
	}
	perToken := probe.KVBytesPerToken()
	probe.Close()
	if s.e != nil {
		want.MaxRows, want.StepTokens = max(want.MaxRows, s.cfg.MaxRows), max(want.StepTokens, s.cfg.StepTokens)
	}
	want.KVBytes = int64(want.MaxRows*maxLen) * perToken
	e, err := s.m.NewEngine(want)
	if err != nil {
		return nil, fmt.Errorf("rollout: sampler for %d rows: %w", rows, err)
	}
	s.e, s.cfg = e, e.Config()
	return e, nil
}

// Sample draws one response per prompt; row i samples with seeds[i], so a
// row's response depends only on its prompt, its seed and the model (the
// same on a resumed run). The context is checked between decoding steps.
func (s *Sampler) Sample(ctx context.Context, prompts [][]int32, seeds []uint64, p Params) ([]Rollout, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if len(prompts) == 0 {
		return nil, errors.New("rollout: no prompts to sample from")
	}
	if len(seeds) != len(prompts) {
		return nil, fmt.Errorf("rollout: %d seeds for %d prompts", len(seeds), len(prompts))
	}
	positions := s.m.Config.MaxPositions
	if p.MaxLen > 0 {
		positions = min(positions, p.MaxLen)
	}
	seqs := make([]*model.Seq, len(prompts))
	promptTokens, maxLen := 0, 0
	for i, pr := range prompts {
		if len(pr) == 0 {
			return nil, fmt.Errorf("rollout: prompt %d is empty", i)
		}
		room := positions - len(pr)
		if room < 1 {
			return nil, fmt.Errorf("rollout: prompt %d has %d tokens, and sequences have %d positions at most: no room for a response", i, len(pr), positions)
		}
		gp := model.GenerateParams{MaxTokens: min(p.MaxNewTokens, room), Temperature: p.Temperature, TopK: p.TopK,
			TopP: p.TopP, Seed: seeds[i], StopTokens: p.StopTokens}
		seqs[i] = &model.Seq{Prompt: pr, Params: gp}
		promptTokens += len(pr)
		maxLen = max(maxLen, len(pr)+gp.MaxTokens)
	}
	e, err := s.engine(len(prompts), promptTokens, maxLen)
	if err != nil {
		return nil, err
	}
	next, done := 0, 0
	for done < len(seqs) {
		for next < len(seqs) {
			ok, err := e.Add(seqs[next])
			if err != nil {
				s.cancel(seqs)
				return nil, fmt.Errorf("rollout: prompt %d: %w", next, err)
			}
			if !ok {
				break
			}
			next++
		}
		if err := ctx.Err(); err != nil {
			s.cancel(seqs)
			return nil, err
		}
		got, err := e.Step()
		if err != nil {
			s.cancel(seqs)
			return nil, fmt.Errorf("rollout: sampling: %w", err)
		}
		for _, sq := range got {
			if sq.Done {
				done++
			}
		}
		if len(got) == 0 && e.Rows() == 0 && next == len(seqs) {
			break
		}
	}
	out := make([]Rollout, len(seqs))
	for i, sq := range seqs {
		g := sq.Gen
		out[i] = Rollout{Prompt: prompts[i], Response: g.Tokens, SampleLogProbs: g.SampleLogProbs, LogProbs: g.LogProbs, Finish: g.Finish}
	}
	return out, nil
}

// cancel takes every sequence of a failed call out of the engine.
func (s *Sampler) cancel(seqs []*model.Seq) {
	for _, sq := range seqs {
		if !sq.Done {
			s.e.Cancel(sq)
		}
	}
}

// SampleGroups draws g responses per prompt (the groups of group-relative
// policy gradients), all prompts × g rows decoded together: out[i][k] is
// prompt i's k-th response, sampled with seeds[i·g + k].
func (s *Sampler) SampleGroups(ctx context.Context, prompts [][]int32, g int, seeds []uint64, p Params) ([][]Rollout, error) {
	if g <= 0 {
		return nil, fmt.Errorf("rollout: group size %d must be positive", g)
	}
	flat := make([][]int32, 0, len(prompts)*g)
	for _, pr := range prompts {
		for range g {
			flat = append(flat, pr)
		}
	}
	rs, err := s.Sample(ctx, flat, seeds, p)
	if err != nil {
		return nil, err
	}
	out := make([][]Rollout, len(prompts))
	for i := range prompts {
		out[i] = rs[i*g : (i+1)*g]
	}
	return out, nil
}
