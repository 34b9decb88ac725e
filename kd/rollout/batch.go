package rollout

import (
	"errors"
	"fmt"
	"math"

	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// Batch is rollouts laid out for a training step: row b holds prompt b
// followed by its response, right-padded to T; the targets are the
// response tokens at the positions that predict them (the prompt and the
// padding get runtime.IgnoreIndex), so the loss is taken on the response
// only.
type Batch struct {
	model.Batch
	// Behaviour[i] is log μ of Targets[i] under the policy that drew it
	// (Rollout.SampleLogProbs), and Sampled[i] the sampling model's
	// log-probability of it at temperature 1 (Rollout.LogProbs): 0 where
	// there is no target, NaN for a response that was not sampled.
	Behaviour, Sampled []float64
	// Starts[b] is row b's prompt length and Lens[b] its prompt + response
	// length.
	Starts, Lens []int
}

// MakeBatch lays rollouts out as a Batch, padded with pad to the longest
// row, or to fixedT when > 0 (a longer row is an error). Every response
// must have at least one token.
func MakeBatch(rs []Rollout, pad int32, fixedT int) (Batch, error) {
	if len(rs) == 0 {
		return Batch{}, errors.New("rollout: a batch needs at least one rollout")
	}
	T := 0
	for i, r := range rs {
		if len(r.Prompt) == 0 || len(r.Response) == 0 {
			return Batch{}, fmt.Errorf("rollout: rollout %d has %d prompt and %d response tokens; both must be non-empty", i, len(r.Prompt), len(r.Response))
		}
		if (r.SampleLogProbs != nil && len(r.SampleLogProbs) != len(r.Response)) || (r.LogProbs != nil && len(r.LogProbs) != len(r.Response)) {
			return Batch{}, fmt.Errorf("rollout: rollout %d has %d response tokens but %d sampling and %d model log-probabilities",
				i, len(r.Response), len(r.SampleLogProbs), len(r.LogProbs))
		}
		T = max(T, len(r.Prompt)+len(r.Response))
	}
	if fixedT > 0 {
		if T > fixedT {
			return Batch{}, fmt.Errorf("rollout: a row of %d tokens is longer than the fixed batch length %d", T, fixedT)
		}
		T = fixedT
	}
	B := len(rs)
	b := Batch{Batch: model.Batch{B: B, T: T, IDs: make([]int32, B*T), Targets: make([]int32, B*T)},
		Behaviour: make([]float64, B*T), Sampled: make([]float64, B*T), Starts: make([]int, B), Lens: make([]int, B)}
	for i := range b.Targets {
		b.Targets[i] = kdrt.IgnoreIndex
		b.IDs[i] = pad
	}
	for r, ro := range rs {
		row := r * T
		copy(b.IDs[row:], ro.Prompt)
		copy(b.IDs[row+len(ro.Prompt):], ro.Response)
		b.Starts[r], b.Lens[r] = len(ro.Prompt), len(ro.Prompt)+len(ro.Response)
		for j, tok := range ro.Response {
			at := row + len(ro.Prompt) + j - 1 // the position that predicts response token j
			b.Targets[at] = tok
			b.Behaviour[at], b.Sampled[at] = math.NaN(), math.NaN()
			if ro.SampleLogProbs != nil {
				b.Behaviour[at] = float64(ro.SampleLogProbs[j])
			}
			if ro.LogProbs != nil {
				b.Sampled[at] = float64(ro.LogProbs[j])
			}
		}
	}
	return b, nil
}

// AllSampled reports whether every target of the batch was drawn by a
// sampler (so its behaviour log-probabilities are known).
func (b Batch) AllSampled() bool {
	for i, t := range b.Targets {
		if t != kdrt.IgnoreIndex && math.IsNaN(b.Behaviour[i]) {
			return false
		}
	}
	return true
}

// Sequences are the batch's rows without padding, each to be scored from
// its first response token on.
func (b Batch) Sequences() []Sequence {
	out := make([]Sequence, b.B)
	for r := range b.B {
		out[r] = Sequence{Tokens: b.IDs[r*b.T : r*b.T+b.Lens[r]], Start: b.Starts[r]}
	}
	return out
}

// Scatter places per-sequence scores (scores[r][j] for response token j of
// row r, as a Scorer returns them) at the batch positions that predict
// those tokens, [B·T] with 0 elsewhere.
func (b Batch) Scatter(scores [][]float64) ([]float64, error) {
	if len(scores) != b.B {
		return nil, fmt.Errorf("rollout: %d scored sequences for %d rows", len(scores), b.B)
	}
	out := make([]float64, b.B*b.T)
	for r, s := range scores {
		if n := b.Lens[r] - b.Starts[r]; len(s) != n {
			return nil, fmt.Errorf("rollout: row %d: %d scores for %d response tokens", r, len(s), n)
		}
		for j, v := range s {
			out[r*b.T+b.Starts[r]+j-1] = v
		}
	}
	return out, nil
}
