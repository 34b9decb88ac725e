package rollout

import (
	"context"
	"errors"
	"fmt"

	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// Sequence is a token sequence whose tokens from Start on are scored
// (Start ≥ 1: the first token has no context to be scored in).
type Sequence struct {
	Tokens []int32
	Start  int
}

func (s Sequence) check(i int) error {
	if s.Start < 1 || s.Start >= len(s.Tokens) {
		return fmt.Errorf("rollout: sequence %d of %d tokens is scored from token %d; want 1 ≤ start < length", i, len(s.Tokens), s.Start)
	}
	return nil
}

// Scorer gives a teacher's log-probability of each scored token:
// out[i][j] = log p(Tokens[Start+j] | Tokens[:Start+j]) for sequence i, at
// temperature 1.
type Scorer interface {
	Score(ctx context.Context, seqs []Sequence) ([][]float64, error)
}

// Local scores with a model on this machine, without gradients: one
// forward pass over the sequences (right-padded) and the log-softmax of
// its logits at each scored token, a chunk of rows at a time.
type Local struct {
	Model *model.Model
	// Pad fills the padding (its value does not change the scores:
	// attention is causal and the padding is on the right).
	Pad  int32
	Loss loss.Options
}

// Score implements Scorer.
func (l Local) Score(ctx context.Context, seqs []Sequence) ([][]float64, error) {
	if len(seqs) == 0 {
		return nil, errors.New("rollout: nothing to score")
	}
	T := 0
	for i, s := range seqs {
		if err := s.check(i); err != nil {
			return nil, err
		}
		T = max(T, len(s.Tokens))
	}
	B := len(seqs)
	b := model.Batch{B: B, T: T, IDs: make([]int32, B*T), Targets: make([]int32, B*T)}
	for i := range b.IDs {
		b.IDs[i], b.Targets[i] = l.Pad, kdrt.IgnoreIndex
	}
	for r, s := range seqs {
		copy(b.IDs[r*T:], s.Tokens)
		for j := s.Start; j < len(s.Tokens); j++ {
			b.Targets[r*T+j-1] = s.Tokens[j]
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h, err := l.Model.InferHidden(b)
	if err != nil {
		return nil, fmt.Errorf("teacher: %w", err)
	}
	lps, err := loss.TokenLogProbs(l.Model.Backend(), h, loss.Head{W: l.Model.Head().W}, b.Targets, l.Loss)
	if err != nil {
		return nil, fmt.Errorf("teacher: %w", err)
	}
	out := make([][]float64, B)
	for r, s := range seqs {
		out[r] = make([]float64, len(s.Tokens)-s.Start)
		for j := range out[r] {
			out[r][j] = lps[r*T+s.Start+j-1]
		}
	}
	return out, nil
}
