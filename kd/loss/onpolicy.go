package loss

import (
	"errors"
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// On-policy distillation's token-level policy gradient (the form Tinker's
// cookbook and Qwen3's recipe use): the student sampled the response
// tokens, the teacher scored each, and every sampled token t gets an
// advantage A_t, for reverse-KL distillation
//
//	A_t = −Σ_{s ≥ t} γ^{s−t} · (log π_old(y_s) − log p_teacher(y_s))
//
// (γ = 0: each token's own −(log π_old − log p_teacher)). The student
// π_θ is then trained on
//
//	L = (scale / n) · Σ_t −r_t · A_t,   r_t = exp(log π_θ(y_t) − log μ(y_t)),
//
// where μ is the sampling policy (the log-probabilities recorded when the
// tokens were drawn) and n the number of sampled tokens: an importance-
// weighted REINFORCE whose gradient is −(scale/n)·Σ r_t·A_t·∇log π_θ(y_t).
// When π_θ is the sampling policy, r_t = 1 and the gradient is the one of
// the sequence-level reverse KL(π_θ ‖ p_teacher) (the advantages do not
// carry a gradient). Only the teacher's log-probability of each sampled
// token is needed, so any teacher that can score tokens works.

// PGResult is what PolicyGradient computed.
type PGResult struct {
	// Loss is (scale/n)·Σ −r_t·A_t over the rows with a target.
	Loss float64
	// Tokens is n, the rows with a target.
	Tokens int
	// LogProbs[i] is log π_θ(targets[i]) under the current student (0 where
	// the target is IgnoreIndex).
	LogProbs []float64
	// MeanRatio is the mean importance weight r_t (1 when the student is the
	// sampling policy).
	MeanRatio float64
}

// PolicyGradient computes the importance-weighted policy-gradient loss
// above for the student whose final hidden states [N, C] and lm_head are
// given, a chunk of rows at a time: each chunk's logits [R, V], their
// log-softmax at the targets, the importance weights and the gradient
// (advantage·weight·(onehot − softmax)) into dHidden and head.G (either may
// be nil). targets [N] holds the sampled token that row n predicts
// (runtime.IgnoreIndex: no loss); behaviour [N] is log μ of that token
// under the sampling policy and advantage [N] its advantage (both ignored
// where the target is IgnoreIndex).
func PolicyGradient(be kdrt.Backend, hidden *kdrt.Tensor, head Head, dHidden *kdrt.Tensor, targets []int32, behaviour, advantage []float64, scale float64, opt Options) (PGResult, error) {
	var res PGResult
	if err := checkTargetRows(hidden, head, targets); err != nil {
		return res, err
	}
	if err := checkHidden(hidden, head, dHidden); err != nil {
		return res, err
	}
	if err := checkScale(scale); err != nil {
		return res, err
	}
	N := hidden.Rows()
	if len(behaviour) != N || len(advantage) != N {
		return res, fmt.Errorf("loss: policy gradient: %d behaviour log-probabilities and %d advantages for %d rows", len(behaviour), len(advantage), N)
	}
	for i, t := range targets {
		if t == kdrt.IgnoreIndex {
			continue
		}
		res.Tokens++
		if b := behaviour[i]; math.IsNaN(b) || b > 1e-6 || math.IsInf(b, 0) {
			return res, fmt.Errorf("loss: policy gradient: behaviour log-probability %g at row %d is not the log of a probability (want a finite value ≤ 0)", b, i)
		}
		if a := advantage[i]; math.IsNaN(a) || math.IsInf(a, 0) {
			return res, fmt.Errorf("loss: policy gradient: advantage %g at row %d is not finite", a, i)
		}
	}
	if res.Tokens == 0 {
		return res, errors.New("loss: policy gradient over a batch with no sampled tokens (every position is masked)")
	}
	factor := scale / float64(res.Tokens)
	var ratios float64
	total, lps, err := sampledTokenLoss(be, hidden, head, dHidden, targets, opt, func(row int, lp float64) (float64, float64) {
		ratio := math.Exp(lp - behaviour[row])
		ratios += ratio
		// ∂L/∂logits = −factor·r·A·(onehot − softmax): cross-entropy's
		// backward (softmax − onehot) with weight factor·r·A.
		return -ratio * advantage[row], factor * ratio * advantage[row]
	})
	if err != nil {
		return res, err
	}
	res.LogProbs = lps
	res.Loss = factor * total
	res.MeanRatio = ratios / float64(res.Tokens)
	return res, nil
}

// sampledTokenLoss runs a loss that depends on each row's log-probability
// of its target (a sampled token), a chunk of rows at a time: the chunk's
// logits, their log-softmax at the targets, then for every row with a
// target term(row, lp), which returns the row's loss and the weight w of
// its gradient, ∂L/∂logits = w·(softmax − onehot) (so w = −∂L/∂lp), taken
// to dHidden and head.G (either may be nil) by cross-entropy's backward.
// It returns the sum of the rows' losses and every row's log-probability
// (0 where the target is IgnoreIndex). The policy-gradient losses
// (PolicyGradient, GRPO) are this with their own terms.
func sampledTokenLoss(be kdrt.Backend, hidden *kdrt.Tensor, head Head, dHidden *kdrt.Tensor, targets []int32, opt Options, term func(row int, lp float64) (loss, w float64)) (float64, []float64, error) {
	N, V := hidden.Rows(), head.W.Rows()
	grad := dHidden != nil || head.G != nil
	perRow := 4 * V
	if grad {
		perRow *= 2
	}
	R := opt.chunkRows(N, perRow)
	c, err := newChunkBufs(be, R, V, 0, grad, true, hidden.DType)
	if err != nil {
		return 0, nil, err
	}
	defer c.free()
	lps := make([]float64, N)
	var total float64
	for r0 := 0; r0 < N; r0 += R {
		r1 := min(r0+R, N)
		n := r1 - r0
		logits, tg, losses := c.view(c.logits, n), c.view(c.targets, n), c.view(c.losses, n)
		if err := be.UploadInt32(tg, targets[r0:r1]); err != nil {
			return 0, nil, err
		}
		hs := headForward(be, logits, hidden, head, r0, r1)
		be.CrossEntropy(losses, logits, tg)
		if err := be.Download(losses, c.hostL[:n]); err != nil {
			return 0, nil, err
		}
		for i := range n {
			row := r0 + i
			c.hostW[i] = 0
			if targets[row] == kdrt.IgnoreIndex {
				continue
			}
			lp := -float64(c.hostL[i])
			lps[row] = lp
			l, w := term(row, lp)
			total += l
			c.hostW[i] = float32(w)
		}
		if grad {
			w, dl := c.view(c.weights, n), c.view(c.dlogits, n)
			if err := be.Upload(w, c.hostW[:n]); err != nil {
				return 0, nil, err
			}
			be.Zero(dl)
			be.CrossEntropyBackward(dl, logits, tg, w, 1)
			headBackward(be, dl, c.view(c.dlow, n), hs, dHidden, head, r0, r1)
		}
	}
	return total, lps, be.Sync()
}

// ReverseKLAdvantages are on-policy distillation's per-token advantages
// for the rows of a batch laid out as B sequences of T positions (row
// b·T + t): A = −(student − teacher) at each row with a target, plus γ
// times the advantage of the next row with a target in the same sequence
// (a discounted sum of the future tokens' negative reverse KL; γ = 0: each
// token alone). student and teacher are the log-probabilities of each
// row's target under the sampling policy and the teacher; rows whose
// target is IgnoreIndex get 0.
func ReverseKLAdvantages(student, teacher []float64, targets []int32, T int, gamma float64) ([]float64, error) {
	N := len(targets)
	if len(student) != N || len(teacher) != N {
		return nil, fmt.Errorf("loss: advantages: %d student and %d teacher log-probabilities for %d rows", len(student), len(teacher), N)
	}
	if T <= 0 || N%T != 0 {
		return nil, fmt.Errorf("loss: advantages: %d rows are not sequences of %d positions", N, T)
	}
	if !(gamma >= 0 && gamma <= 1) {
		return nil, fmt.Errorf("loss: advantages: discount %g must be in [0, 1]", gamma)
	}
	adv := make([]float64, N)
	for b := 0; b < N; b += T {
		next := 0.0
		for i := b + T - 1; i >= b; i-- {
			if targets[i] == kdrt.IgnoreIndex {
				continue
			}
			s, t := student[i], teacher[i]
			if math.IsNaN(s) || math.IsNaN(t) || math.IsInf(s, 0) || math.IsInf(t, 0) {
				return nil, fmt.Errorf("loss: advantages: row %d has log-probabilities %g (student) and %g (teacher); want finite values", i, s, t)
			}
			adv[i] = -(s - t) + gamma*next
			next = adv[i]
		}
	}
	return adv, nil
}
