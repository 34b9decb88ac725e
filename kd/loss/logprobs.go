package loss

import (
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// TokenLogProbs returns, for each row n, log q_n(targets[n]) with q_n =
// softmax(hidden[n]·headᵀ), computed a chunk at a time with no gradient; rows
// whose target is runtime.IgnoreIndex get 0. Sequence log-likelihoods (DPO's
// log π(y|x)) are sums of these over a sequence's response rows.
func TokenLogProbs(be kdrt.Backend, hidden *kdrt.Tensor, head Head, targets []int32, opt Options) ([]float64, error) {
	if err := checkTargetRows(hidden, head, targets); err != nil {
		return nil, err
	}
	N, V := hidden.Rows(), head.W.Rows()
	R := opt.chunkRows(N, 4*V)
	c, err := newChunkBufs(be, R, V, 0, false, true, hidden.DType)
	if err != nil {
		return nil, err
	}
	defer c.free()
	out := make([]float64, N)
	for r0 := 0; r0 < N; r0 += R {
		r1 := min(r0+R, N)
		n := r1 - r0
		logits, tg, losses := c.view(c.logits, n), c.view(c.targets, n), c.view(c.losses, n)
		if err := be.UploadInt32(tg, targets[r0:r1]); err != nil {
			return nil, err
		}
		headForward(be, logits, hidden, head, r0, r1)
		be.CrossEntropy(losses, logits, tg)
		if err := be.Download(losses, c.hostL[:n]); err != nil {
			return nil, err
		}
		for i, l := range c.hostL[:n] {
			out[r0+i] = -float64(l)
		}
	}
	return out, be.Sync()
}

// TokenLogProbsBackward accumulates into dHidden and head.G the gradient of
// Σ_n coef[n]·log q_n(targets[n]), recomputing each chunk's logits (the
// second pass of a two-pass loss such as DPO, whose per-row coefficients
// depend on whole-sequence sums that the first pass, TokenLogProbs, gives).
func TokenLogProbsBackward(be kdrt.Backend, hidden *kdrt.Tensor, head Head, dHidden *kdrt.Tensor, targets []int32, coef []float64, opt Options) error {
	if err := checkTargetRows(hidden, head, targets); err != nil {
		return err
	}
	if err := checkHidden(hidden, head, dHidden); err != nil {
		return err
	}
	N, V := hidden.Rows(), head.W.Rows()
	if len(coef) != N {
		return fmt.Errorf("loss: %d coefficients for %d rows", len(coef), N)
	}
	R := opt.chunkRows(N, 4*V+gradRowBytes(V, hidden.DType))
	c, err := newChunkBufs(be, R, V, 0, true, true, hidden.DType)
	if err != nil {
		return err
	}
	defer c.free()
	for r0 := 0; r0 < N; r0 += R {
		r1 := min(r0+R, N)
		n := r1 - r0
		logits, tg, dl, w := c.view(c.logits, n), c.view(c.targets, n), c.view(c.dlogits, n), c.view(c.weights, n)
		if err := be.UploadInt32(tg, targets[r0:r1]); err != nil {
			return err
		}
		// ∂ log q(t)/∂logits = onehot(t) − softmax: cross-entropy's backward
		// with the coefficient negated.
		for i := range n {
			c.hostW[i] = float32(-coef[r0+i])
		}
		if err := be.Upload(w, c.hostW[:n]); err != nil {
			return err
		}
		hs := headForward(be, logits, hidden, head, r0, r1)
		be.Zero(dl)
		be.CrossEntropyBackward(dl, logits, tg, w, 1)
		headBackward(be, dl, c.view(c.dlow, n), hs, dHidden, head, r0, r1)
	}
	return be.Sync()
}

func checkTargetRows(hidden *kdrt.Tensor, head Head, targets []int32) error {
	if err := checkHidden(hidden, head, nil); err != nil {
		return err
	}
	N, V := hidden.Rows(), head.W.Rows()
	if len(targets) != N {
		return fmt.Errorf("loss: %d targets for %d rows of hidden states", len(targets), N)
	}
	for i, t := range targets {
		if t != kdrt.IgnoreIndex && (t < 0 || int(t) >= V) {
			return fmt.Errorf("loss: target %d at row %d is outside the vocabulary [0, %d)", t, i, V)
		}
	}
	return nil
}
