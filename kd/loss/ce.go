package loss

import (
	"errors"
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// CrossEntropy is SFT's loss: the mean over target tokens of −log q(target),
// with q = softmax(hidden·headᵀ), computed a chunk of rows at a time. targets
// [N] holds runtime.IgnoreIndex for positions without loss (prompt, padding).
// The returned loss is multiplied by scale (a mixing weight), and so is the
// gradient accumulated into dHidden and head.G (either may be nil: no
// gradient). With opt.Sums set the loss is NaN: opt.Sums.Last gives it once
// the sums are read.
func CrossEntropy(be kdrt.Backend, hidden *kdrt.Tensor, head Head, dHidden *kdrt.Tensor, targets []int32, scale float64, opt Options) (loss float64, tokens int, err error) {
	if err := checkHidden(hidden, head, dHidden); err != nil {
		return 0, 0, err
	}
	if err := checkScale(scale); err != nil {
		return 0, 0, err
	}
	N, V := hidden.Rows(), head.W.Rows()
	if len(targets) != N {
		return 0, 0, fmt.Errorf("loss: %d targets for %d rows of hidden states", len(targets), N)
	}
	for i, t := range targets {
		if t == kdrt.IgnoreIndex {
			continue
		}
		if t < 0 || int(t) >= V {
			return 0, 0, fmt.Errorf("loss: target %d at row %d is outside the vocabulary [0, %d)", t, i, V)
		}
		tokens++
	}
	if tokens == 0 {
		return 0, 0, errors.New("loss: cross-entropy over a batch with no target tokens (every position is masked)")
	}
	grad := dHidden != nil || head.G != nil
	R := opt.chunkRows(N, 4*V+gradRowBytes(V, hidden.DType))
	c, err := newChunkBufs(be, R, V, 0, grad, true, hidden.DType)
	if err != nil {
		return 0, 0, err
	}
	defer c.free()
	rowScale := float32(scale / float64(tokens))
	sums, err := openSums(be, opt, scale, float64(tokens))
	if err != nil {
		return 0, 0, err
	}
	defer sums.close()
	for r0 := 0; r0 < N; r0 += R {
		r1 := min(r0+R, N)
		n := r1 - r0
		logits, tg := c.view(c.logits, n), c.view(c.targets, n)
		if err := be.UploadInt32(tg, targets[r0:r1]); err != nil {
			return 0, 0, err
		}
		hs := headForward(be, logits, hidden, head, r0, r1)
		be.CrossEntropy(c.view(c.losses, n), logits, tg)
		sums.add(be, c.view(c.losses, n))
		if grad {
			dl := c.view(c.dlogits, n)
			be.Zero(dl)
			be.CrossEntropyBackward(dl, logits, tg, nil, rowScale)
			headBackward(be, dl, c.view(c.dlow, n), hs, dHidden, head, r0, r1)
		}
	}
	loss, err = sums.finish(be)
	return loss, tokens, err
}
