package data

import (
	"encoding/json"
	"fmt"
	"math"
)

// TopK is a sparse teacher carried by the data (pre-tokenized lines with
// "teacher_topk_ids" and "teacher_topk_logprobs"): for each token i, the
// teacher's K most likely tokens at that position — the distribution that
// predicted token i from the tokens before it — and their log-probabilities.
// Entry 0 and prompt tokens usually have none ("null" in the line).
type TopK struct {
	K        int
	IDs      []int32   // [len(Tokens)·K]
	LogProbs []float32 // [len(Tokens)·K]
	Has      []bool    // [len(Tokens)]
	// Tail, when not nil, is per token the log of the teacher's mass outside
	// the top-k as the teacher measured it (a teacher cache stores it).
	Tail []float32 // [len(Tokens)]
}

// sliceTo keeps the first n tokens' entries.
func (t *TopK) sliceTo(n int) *TopK {
	if t == nil {
		return nil
	}
	out := &TopK{K: t.K, IDs: t.IDs[: n*t.K : n*t.K], LogProbs: t.LogProbs[: n*t.K : n*t.K], Has: t.Has[:n:n]}
	if t.Tail != nil {
		out.Tail = t.Tail[:n:n]
	}
	return out
}

// topKMassTolerance is how far above 1 a position's top-k probabilities may
// sum (rounded API logprobs) before the line is refused.
const topKMassTolerance = 1e-3

// parseTopK reads the teacher fields of a pre-tokenized line: two lists as
// long as input_ids whose entries are null (no teacher there) or lists of K
// ids and K log-probabilities, K the same for every entry of the line.
func parseTopK(obj map[string]json.RawMessage, n, vocab int) (*TopK, error) {
	rawIDs, hasIDs := obj["teacher_topk_ids"]
	rawLPs, hasLPs := obj["teacher_topk_logprobs"]
	// null is no teacher, as a missing field is (a Parquet row has every
	// column, null where the record has no value).
	hasIDs = hasIDs && !isNull(rawIDs)
	hasLPs = hasLPs && !isNull(rawLPs)
	if !hasIDs && !hasLPs {
		return nil, nil
	}
	if hasIDs != hasLPs {
		return nil, fmt.Errorf(`"teacher_topk_ids" and "teacher_topk_logprobs" go together`)
	}
	var ids [][]int64
	var lps [][]float64
	if err := json.Unmarshal(rawIDs, &ids); err != nil {
		return nil, fmt.Errorf(`"teacher_topk_ids" must be a list of id lists (or null): %v`, err)
	}
	if err := json.Unmarshal(rawLPs, &lps); err != nil {
		return nil, fmt.Errorf(`"teacher_topk_logprobs" must be a list of number lists (or null): %v`, err)
	}
	if len(ids) != n || len(lps) != n {
		return nil, fmt.Errorf(`teacher top-k has %d id and %d logprob entries for %d input_ids`, len(ids), len(lps), n)
	}
	t := &TopK{Has: make([]bool, n)}
	for i := range n {
		if len(ids[i]) != len(lps[i]) {
			return nil, fmt.Errorf("teacher top-k entry %d has %d ids and %d logprobs", i, len(ids[i]), len(lps[i]))
		}
		if len(ids[i]) == 0 {
			continue
		}
		if t.K == 0 {
			t.K = len(ids[i])
			t.IDs, t.LogProbs = make([]int32, n*t.K), make([]float32, n*t.K)
		}
		if len(ids[i]) != t.K {
			return nil, fmt.Errorf("teacher top-k entry %d has %d entries, earlier ones %d", i, len(ids[i]), t.K)
		}
		seen := map[int64]bool{}
		var mass float64
		for k, id := range ids[i] {
			if id < 0 || (vocab > 0 && id >= int64(vocab)) || id > math.MaxInt32 {
				return nil, fmt.Errorf("teacher top-k id %d at entry %d is outside the vocabulary", id, i)
			}
			if seen[id] {
				return nil, fmt.Errorf("teacher top-k entry %d repeats id %d", i, id)
			}
			seen[id] = true
			lp := lps[i][k]
			if math.IsNaN(lp) || lp > 1e-6 {
				return nil, fmt.Errorf("teacher top-k logprob %g at entry %d is not a log-probability (must be ≤ 0)", lp, i)
			}
			mass += math.Exp(lp)
			t.IDs[i*t.K+k], t.LogProbs[i*t.K+k] = int32(id), float32(min(lp, 0))
		}
		if mass > 1+topKMassTolerance {
			return nil, fmt.Errorf("teacher top-k probabilities of entry %d sum to %.6f, more than 1", i, mass)
		}
		t.Has[i] = true
	}
	if t.K == 0 {
		return nil, nil // every entry null: no teacher on this line
	}
	return t, nil
}

// filterTopK keeps the entries whose mask is 1 (attention_mask).
func filterTopK(t *TopK, mask []int32) *TopK {
	if t == nil {
		return nil
	}
	out := &TopK{K: t.K}
	for i, m := range mask {
		if m == 1 {
			out.IDs = append(out.IDs, t.IDs[i*t.K:(i+1)*t.K]...)
			out.LogProbs = append(out.LogProbs, t.LogProbs[i*t.K:(i+1)*t.K]...)
			out.Has = append(out.Has, t.Has[i])
		}
	}
	return out
}

// MakeTopK lays out the sparse teacher of the rows of a batch made by
// MakeBatch with the same rows and length T: batch position j of a row, whose
// target is token j+1, gets token j+1's entry. mask[n] is 1 where the row has
// an entry there; elsewhere the ids are 0…K−1 and the log-probabilities −Inf,
// and mask 0 keeps them out of the loss. K is 0 when no row has a teacher.
// tails is nil unless every row with a teacher also has its stored tails.
func MakeTopK(rows []Example, T int) (ids []int32, logprobs, tails []float32, mask []float32, K int, err error) {
	for _, r := range rows {
		if r.TopK != nil {
			if K != 0 && r.TopK.K != K {
				return nil, nil, nil, nil, 0, fmt.Errorf("data: rows with teacher top-k of %d and %d in one batch", K, r.TopK.K)
			}
			K = r.TopK.K
		}
	}
	if K == 0 {
		return nil, nil, nil, nil, 0, nil
	}
	withTails := true
	for _, r := range rows {
		if r.TopK != nil && r.TopK.Tail == nil {
			withTails = false
		}
	}
	N := len(rows) * T
	ids, logprobs, mask = make([]int32, N*K), make([]float32, N*K), make([]float32, N)
	if withTails {
		tails = make([]float32, N)
	}
	negInf := float32(math.Inf(-1))
	for b, r := range rows {
		for j := range T {
			p := b*T + j
			src := j + 1
			if r.TopK != nil && src < len(r.Tokens) && r.TopK.Has[src] {
				copy(ids[p*K:(p+1)*K], r.TopK.IDs[src*K:(src+1)*K])
				copy(logprobs[p*K:(p+1)*K], r.TopK.LogProbs[src*K:(src+1)*K])
				mask[p] = 1
				if tails != nil {
					tails[p] = r.TopK.Tail[src]
				}
				continue
			}
			if tails != nil {
				tails[p] = negInf
			}
			for k := range K {
				ids[p*K+k], logprobs[p*K+k] = int32(k), negInf
			}
		}
	}
	return ids, logprobs, tails, mask, K, nil
}
