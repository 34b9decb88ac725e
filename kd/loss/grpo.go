package loss

import (
	"errors"
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// Group-relative policy optimization (GRPO; Shao et al. 2024, as TRL's
// GRPOTrainer computes it): every prompt is answered G times, each answer i
// gets a reward R_i, and every token of answer i the advantage
//
//	A_i = (R_i − mean_g R) / (std_g R + ε)        (std: Bessel-corrected, ε = 1e-4)
//
// (or R_i − mean_g R with the scaling off, as Dr. GRPO has it). The student
// π_θ is trained on
//
//	L = Σ_t w_t · ℓ_t,
//	ℓ_t = −min(r_t·A_t, clip(r_t, 1−ε_low, 1+ε_high)·A_t) + β·c_t·(e^{ref_t − lp_t} − (ref_t − lp_t) − 1),
//
// where lp_t = log π_θ(y_t), r_t = exp(lp_t − old_t) the ratio to the policy
// that sampled the answers (old_t its log-probability of y_t), ref_t the
// frozen reference's log-probability (the KL term is Schulman's k3
// estimator of KL(π_θ ‖ π_ref), as GRPOTrainer uses it; c_t is r_t under
// KLRatio — TRL's use_bias_correction_kl, its default since DeepSeek-V3.2,
// which makes the KL gradient the unbiased reverse-KL gradient — else 1),
// and w_t the
// normalization: 1/(|o_i|·B) per token of answer i of B answers (GRPO's
// per-sequence mean, GRPOTokenWeights) or 1/n over all n tokens.
//
// The gradient, per token, is ∂ℓ_t/∂lp_t = −r_t·A_t where the unclipped
// term is the minimum (0 where the clip is active: the ratio has left the
// trust region in the direction the advantage pushes it) plus
// β·(1 − e^{ref_t − lp_t}), or under KLRatio β·r_t·(k3_t + 1 − e^{ref_t − lp_t})
// (r_t carries a gradient too); times ∂lp_t/∂logits = onehot − softmax.

// GRPOConfig are the loss's constants.
type GRPOConfig struct {
	// EpsLow and EpsHigh bound the ratio to [1 − EpsLow, 1 + EpsHigh]
	// (PPO's ε; DAPO raises EpsHigh).
	EpsLow, EpsHigh float64
	// Beta weighs the KL penalty to the reference (0: none, and no
	// reference log-probabilities are needed).
	Beta float64
	// KLRatio multiplies each token's KL term by its ratio r_t (TRL's
	// use_bias_correction_kl).
	KLRatio bool
}

// GRPOResult is what GRPO computed.
type GRPOResult struct {
	// Loss is Σ_t w_t·ℓ_t.
	Loss float64
	// Tokens counts the rows with a target.
	Tokens int
	// LogProbs[i] is log π_θ(targets[i]) (0 where there is no target).
	LogProbs []float64
	// KL is the mean k3 estimate of KL(π_θ ‖ π_ref) per token (0 when
	// Beta is 0), MeanRatio the mean r_t, and ClipFraction the fraction of
	// tokens whose clipped term was the minimum (no gradient through r_t).
	KL, MeanRatio, ClipFraction float64
}

// GroupAdvantages are GRPO's advantages of rewards laid out as groups of g
// consecutive answers to one prompt: reward minus its group's mean, divided
// by the group's standard deviation (Bessel-corrected, as torch.std) plus
// 1e-4 when scale is set. A NaN reward is an answer that could not be
// scored: as in TRL's GRPOTrainer it is left out of its group's mean and
// std and gets advantage 0; so does every answer of a group with fewer than
// two scored answers. A group whose rewards are all equal gets 0 (it
// teaches nothing).
func GroupAdvantages(rewards []float64, g int, scale bool) ([]float64, error) {
	if g < 2 {
		return nil, fmt.Errorf("loss: group size %d: GRPO compares answers to one prompt and needs 2 or more", g)
	}
	if len(rewards)%g != 0 {
		return nil, fmt.Errorf("loss: %d rewards are not groups of %d", len(rewards), g)
	}
	out := make([]float64, len(rewards))
	for s := 0; s < len(rewards); s += g {
		grp := rewards[s : s+g]
		var mean float64
		n := 0
		for i, r := range grp {
			if math.IsInf(r, 0) {
				return nil, fmt.Errorf("loss: reward %g of answer %d is not finite", r, s+i)
			}
			if !math.IsNaN(r) {
				mean += r
				n++
			}
		}
		if n < 2 {
			continue
		}
		mean /= float64(n)
		var ss float64
		for _, r := range grp {
			if !math.IsNaN(r) {
				ss += (r - mean) * (r - mean)
			}
		}
		std := math.Sqrt(ss / float64(n-1))
		for i, r := range grp {
			if math.IsNaN(r) {
				continue
			}
			a := r - mean
			if scale {
				a /= std + 1e-4
			}
			out[s+i] = a
		}
	}
	return out, nil
}

// GRPOTokenWeights are the per-row weights w_t of the loss for the rows of
// B sequences of T positions (row b·T + t), times scale: under perSequence,
// 1/(n_b·B') for the n_b targets of sequence b, B' counting the sequences
// with a target (GRPO's mean over each answer's tokens, then over the
// answers); otherwise 1/n over all n targets (the token-level mean of DAPO
// and TRL's bnpo). Rows without a target get 0.
func GRPOTokenWeights(targets []int32, T int, perSequence bool, scale float64) ([]float64, error) {
	N := len(targets)
	if T <= 0 || N%T != 0 {
		return nil, fmt.Errorf("loss: %d rows are not sequences of %d positions", N, T)
	}
	w := make([]float64, N)
	count := func(b int) int {
		n := 0
		for _, t := range targets[b : b+T] {
			if t != kdrt.IgnoreIndex {
				n++
			}
		}
		return n
	}
	total, seqs := 0, 0
	for b := 0; b < N; b += T {
		if n := count(b); n > 0 {
			total += n
			seqs++
		}
	}
	if total == 0 {
		return nil, errors.New("loss: GRPO over a batch with no sampled tokens (every position is masked)")
	}
	for b := 0; b < N; b += T {
		n := count(b)
		for i := b; i < b+T; i++ {
			if targets[i] == kdrt.IgnoreIndex {
				continue
			}
			if perSequence {
				w[i] = scale / float64(n*seqs)
			} else {
				w[i] = scale / float64(total)
			}
		}
	}
	return w, nil
}

// GRPO computes the loss above for the student whose final hidden states
// [N, C] and lm_head are given, a chunk of rows at a time, accumulating the
// gradient into dHidden and head.G (either may be nil). targets [N] holds
// the sampled token each row predicts (runtime.IgnoreIndex: no loss); old
// [N] is its log-probability under the sampling policy, or nil when the
// policy being trained is the one that sampled (the first of GRPO's μ
// optimizer steps on a batch of answers: r_t is then exactly 1, as TRL's
// per_token_logps.detach(), and the step's own LogProbs are the old ones
// for the steps after); ref [N] under the reference (nil when cfg.Beta is
// 0), advantage [N] its advantage and weight [N] its w_t
// (GRPOTokenWeights); all are ignored where the target is IgnoreIndex.
func GRPO(be kdrt.Backend, hidden *kdrt.Tensor, head Head, dHidden *kdrt.Tensor, targets []int32, old, ref, advantage, weight []float64, cfg GRPOConfig, opt Options) (GRPOResult, error) {
	var res GRPOResult
	if err := checkTargetRows(hidden, head, targets); err != nil {
		return res, err
	}
	if err := checkHidden(hidden, head, dHidden); err != nil {
		return res, err
	}
	if !(cfg.EpsLow >= 0 && cfg.EpsLow < 1) || !(cfg.EpsHigh >= 0) || math.IsInf(cfg.EpsHigh, 0) {
		return res, fmt.Errorf("loss: GRPO clip range [1 − %g, 1 + %g]: want 0 ≤ ε_low < 1 and a finite ε_high ≥ 0", cfg.EpsLow, cfg.EpsHigh)
	}
	if !(cfg.Beta >= 0) || math.IsInf(cfg.Beta, 0) {
		return res, fmt.Errorf("loss: GRPO KL coefficient %g must be finite and ≥ 0", cfg.Beta)
	}
	N := hidden.Rows()
	if old != nil && len(old) != N || len(advantage) != N || len(weight) != N {
		return res, fmt.Errorf("loss: GRPO: %d sampling log-probabilities, %d advantages and %d weights for %d rows", len(old), len(advantage), len(weight), N)
	}
	if cfg.Beta > 0 && len(ref) != N {
		return res, fmt.Errorf("loss: GRPO with a KL penalty: %d reference log-probabilities for %d rows", len(ref), N)
	}
	logProb := func(v float64) bool { return !math.IsNaN(v) && v <= 1e-6 && !math.IsInf(v, 0) }
	for i, t := range targets {
		if t == kdrt.IgnoreIndex {
			continue
		}
		res.Tokens++
		if old != nil && !logProb(old[i]) {
			return res, fmt.Errorf("loss: GRPO: sampling log-probability %g at row %d is not the log of a probability (want a finite value ≤ 0)", old[i], i)
		}
		if cfg.Beta > 0 && !logProb(ref[i]) {
			return res, fmt.Errorf("loss: GRPO: reference log-probability %g at row %d is not the log of a probability (want a finite value ≤ 0)", ref[i], i)
		}
		if a := advantage[i]; math.IsNaN(a) || math.IsInf(a, 0) {
			return res, fmt.Errorf("loss: GRPO: advantage %g at row %d is not finite", a, i)
		}
		if w := weight[i]; math.IsNaN(w) || math.IsInf(w, 0) {
			return res, fmt.Errorf("loss: GRPO: weight %g at row %d is not finite", w, i)
		}
	}
	if res.Tokens == 0 {
		return res, errors.New("loss: GRPO over a batch with no sampled tokens (every position is masked)")
	}
	lo, hi := 1-cfg.EpsLow, 1+cfg.EpsHigh
	var kl, ratios float64
	clipped := 0
	total, lps, err := sampledTokenLoss(be, hidden, head, dHidden, targets, opt, func(row int, lp float64) (float64, float64) {
		A := advantage[row]
		r := 1.0 // the sampling policy's own log-probability: lp − lp
		if old != nil {
			r = math.Exp(lp - old[row])
		}
		ratios += r
		rc := min(max(r, lo), hi)
		l := -min(r*A, rc*A)
		// dℓ/dlp: the unclipped term's −r·A when it is the minimum.
		var d float64
		if r*A <= rc*A {
			d = -r * A
		} else {
			clipped++
		}
		if cfg.Beta > 0 {
			x := ref[row] - lp
			k3 := math.Exp(x) - x - 1
			kl += k3
			if cfg.KLRatio {
				l += cfg.Beta * r * k3
				d += cfg.Beta * r * (k3 + 1 - math.Exp(x))
			} else {
				l += cfg.Beta * k3
				d += cfg.Beta * (1 - math.Exp(x))
			}
		}
		// ∂L/∂logits = w·d·(onehot − softmax) = (−w·d)·(softmax − onehot).
		return weight[row] * l, -weight[row] * d
	})
	if err != nil {
		return res, err
	}
	res.LogProbs = lps
	res.Loss = total
	res.KL = kl / float64(res.Tokens)
	res.MeanRatio = ratios / float64(res.Tokens)
	res.ClipFraction = float64(clipped) / float64(res.Tokens)
	return res, nil
}
