package tasks

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"unicode"

	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
)

// lmRequest is one log-likelihood to compute: log p(cont | ctx), summed over
// the continuation's tokens.
type lmRequest struct {
	ctx, cont []int32
}

// scorer computes log-likelihoods with one model, a batch of rows at a time.
type scorer struct {
	m      *model.Model
	tok    *tokenizer.Tokenizer
	maxLen int // the longest input, in tokens
	batch  int
	pad    int32
	// prefix is the token an empty context becomes (BOS, else EOS), as the
	// harness's prefix_token_id.
	prefix    int32
	hasPrefix bool
}

func newScorer(m *model.Model, tok *tokenizer.Tokenizer, maxLen, batch int) *scorer {
	if maxLen <= 0 || maxLen > m.Config.MaxPositions {
		maxLen = m.Config.MaxPositions
	}
	s := &scorer{m: m, tok: tok, maxLen: maxLen, batch: max(batch, 1)}
	sp := tok.Special()
	switch {
	case sp.BOS >= 0:
		s.prefix, s.hasPrefix = sp.BOS, true
	case sp.EOS >= 0:
		s.prefix, s.hasPrefix = sp.EOS, true
	}
	s.pad = max(sp.PAD, sp.EOS, 0)
	return s
}

// encode is the harness's tok_encode for a causal model: the tokenizer's
// default special tokens (a BOS where it adds one), added tokens recognized.
func (s *scorer) encode(text string) []int32 {
	ids := s.tok.Encode(text)
	if sp := s.tok.Special(); sp.AddBOS && sp.BOS >= 0 {
		ids = append([]int32{sp.BOS}, ids...)
	}
	return ids
}

// encodePair is lm-evaluation-harness's _encode_pair for causal models (and
// its empty-context rule in loglikelihood): trailing whitespace of the
// context moves to the continuation, the whole is encoded, and the
// continuation is what follows the context's own tokens.
func (s *scorer) encodePair(context, continuation string) (lmRequest, error) {
	if context == "" {
		cont := s.tok.Encode(continuation)
		if len(cont) == 0 {
			return lmRequest{}, fmt.Errorf("the continuation %q has no tokens", continuation)
		}
		if !s.hasPrefix {
			return lmRequest{}, fmt.Errorf("an empty context needs a BOS or EOS token to condition on, and the tokenizer has neither")
		}
		if cont[0] == s.prefix {
			return lmRequest{ctx: cont[:1], cont: cont[1:]}, nil
		}
		return lmRequest{ctx: []int32{s.prefix}, cont: cont}, nil
	}
	trimmed := strings.TrimRightFunc(context, unicode.IsSpace)
	continuation = context[len(trimmed):] + continuation
	context = trimmed
	whole := s.encode(context + continuation)
	ctx := s.encode(context)
	if len(ctx) > len(whole) {
		ctx = ctx[:len(whole)]
	}
	r := lmRequest{ctx: ctx, cont: whole[len(ctx):]}
	if len(r.cont) == 0 {
		return r, fmt.Errorf("the continuation %q adds no tokens to the context", continuation)
	}
	return r, nil
}

// rollingWindows are the harness's loglikelihood_rolling windows
// (get_rolling_token_windows with context_len 1, then make_disjoint_window):
// the first predicts up to maxLen tokens from the prefix token, each later
// one the next maxLen tokens from the tokens before them.
func rollingWindows(tokens []int32, prefix int32, maxLen int) []lmRequest {
	var out []lmRequest
	if len(tokens) == 0 {
		return nil
	}
	first := min(maxLen, len(tokens))
	out = append(out, lmRequest{ctx: []int32{prefix}, cont: tokens[:first]})
	for done := first; done < len(tokens); {
		n := min(len(tokens)-done, maxLen)
		end := done + n
		// input tokens[end−maxLen−1 : end−1]; its last n−1 are the
		// continuation's own, the rest is context.
		lo := max(end-maxLen-1, 0)
		out = append(out, lmRequest{ctx: tokens[lo:done], cont: tokens[done:end]})
		done = end
	}
	return out
}

// loglikelihoods returns Σ log p(cont | ctx) for each request. The input is
// (ctx + cont) without its last token, cut to its last maxLen tokens as the
// harness cuts it; requests run longest first in batches of rows padded at
// the end, and only the continuation's rows go through the output head.
func (s *scorer) loglikelihoods(ctx context.Context, reqs []lmRequest, done func(int)) ([]float64, error) {
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
		if len(reqs[i].cont) > s.maxLen {
			return nil, fmt.Errorf("a continuation of %d tokens is longer than the %d tokens the model can read", len(reqs[i].cont), s.maxLen)
		}
		if len(reqs[i].cont) == 0 {
			return nil, fmt.Errorf("request %d has no continuation tokens", i)
		}
	}
	inLen := func(r lmRequest) int { return min(len(r.ctx)+len(r.cont)-1, s.maxLen) }
	sort.SliceStable(order, func(a, b int) bool { return inLen(reqs[order[a]]) > inLen(reqs[order[b]]) })
	out := make([]float64, len(reqs))
	be := s.m.Backend()
	for b0 := 0; b0 < len(order); b0 += s.batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rows := order[b0:min(b0+s.batch, len(order))]
		B, T := len(rows), inLen(reqs[rows[0]])
		ids := make([]int32, B*T)
		for i := range ids {
			ids[i] = s.pad
		}
		var targets []int32
		type span struct{ from, n int } // rows of the hidden state holding the continuation
		spans := make([]span, B)
		for r, ri := range rows {
			q := reqs[ri]
			full := append(append(make([]int32, 0, len(q.ctx)+len(q.cont)), q.ctx...), q.cont...)
			if len(full) > s.maxLen+1 {
				full = full[len(full)-s.maxLen-1:]
			}
			inp := full[:len(full)-1]
			copy(ids[r*T:], inp)
			n := len(q.cont)
			spans[r] = span{r*T + len(inp) - n, n}
			targets = append(targets, q.cont...)
		}
		h, err := s.m.InferHidden(model.Batch{B: B, T: T, IDs: ids})
		if err != nil {
			return nil, err
		}
		C := s.m.Config.Hidden
		hc, err := be.Alloc("tasks.cont_hidden", h.DType, len(targets), C)
		if err != nil {
			return nil, err
		}
		off := 0
		for _, sp := range spans {
			be.Copy(be.Slice(hc, off, off+sp.n), be.Slice(h, sp.from, sp.from+sp.n))
			off += sp.n
		}
		lps, err := loss.TokenLogProbs(be, hc, loss.Head{W: s.m.Head().W}, targets, loss.Options{})
		be.Free(hc)
		if err != nil {
			return nil, err
		}
		off = 0
		for r, ri := range rows {
			var sum float64
			for _, lp := range lps[off : off+spans[r].n] {
				sum += lp
			}
			out[ri] = sum
			off += spans[r].n
		}
		if done != nil {
			done(B)
		}
	}
	return out, nil
}
