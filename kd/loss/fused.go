package loss

import (
	"errors"
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// Head is an lm_head: W [V, C] and, when a gradient is wanted, G (same shape),
// into which the losses accumulate.
type Head struct{ W, G *kdrt.Tensor }

// DefaultMemoryBudget bounds the per-chunk buffers of the fused losses when
// Options say nothing: 256 MiB.
const DefaultMemoryBudget = 256 << 20

// Options control the chunking of the fused losses.
type Options struct {
	// MemoryBudget bounds the bytes of the per-chunk buffers (student logits,
	// their gradient, teacher logits); ≤ 0 means DefaultMemoryBudget.
	MemoryBudget int64
	// ChunkRows, when > 0, fixes the rows per chunk instead. ChunkRows ≥ N
	// is the plain, unfused computation that materializes every logit.
	ChunkRows int
	// Sums, when set, receives CrossEntropy's and KD's values on the
	// device: they read nothing back and return NaN for the loss, which
	// Sums.Last gives once the caller has Read the sums. Without it each
	// call reads its value back once, at its end.
	Sums *Sums
}

// gradRowBytes is the bytes per row of the logits' gradient: F32, and its
// rounding to the hidden states' dtype when that is not F32.
func gradRowBytes(V int, dt kdrt.DType) int {
	if dt == kdrt.F32 {
		return 4 * V
	}
	return (4 + dt.Size()) * V
}

// chunkRows is how many rows fit the budget, at least 1 and at most N.
func (o Options) chunkRows(N, bytesPerRow int) int {
	r := o.ChunkRows
	if r <= 0 {
		budget := o.MemoryBudget
		if budget <= 0 {
			budget = DefaultMemoryBudget
		}
		r = int(budget / int64(bytesPerRow))
	}
	return max(1, min(r, N))
}

// chunkBufs are one chunk's buffers, sliced to the chunk's rows. Logits,
// their gradient and the teacher's logits are F32 whatever the hidden
// states' dtype: under BF16 storage the head's product writes them from its
// float32 accumulator, so no logit is ever rounded to bf16 before a softmax
// (the fault Liger-Kernel#1432 found in a fused JSD).
type chunkBufs struct {
	be                       kdrt.Backend
	rows                     int
	logits, dlogits, teacher *kdrt.Tensor // F32 [R, V], [R, V], [R, Vt] (nil when unused)
	// dlow is the logits' gradient rounded to the hidden states' dtype
	// (BF16): the operand of the head's backward products, which multiply
	// operands of one dtype. Nil under F32.
	dlow            *kdrt.Tensor
	losses, weights *kdrt.Tensor // F32 [R]
	targets         *kdrt.Tensor // I32 [R] (nil when unused)
	hostW           []float32
	hostL           []float32
	all             []*kdrt.Tensor
}

// newChunkBufs allocates a chunk's buffers for R rows of a vocabulary of V
// (Vt > 0: and the teacher's logits), with the gradient's (grad) and
// targets' buffers; low is the hidden states' dtype.
func newChunkBufs(be kdrt.Backend, R, V, Vt int, grad, targets bool, low kdrt.DType) (*chunkBufs, error) {
	c := &chunkBufs{be: be, rows: R, hostW: make([]float32, R), hostL: make([]float32, R)}
	var err error
	alloc := func(name string, dt kdrt.DType, shape ...int) *kdrt.Tensor {
		if err != nil {
			return nil
		}
		var t *kdrt.Tensor
		t, err = be.Alloc(name, dt, shape...)
		c.all = append(c.all, t)
		return t
	}
	c.logits = alloc("loss.logits", kdrt.F32, R, V)
	if grad {
		c.dlogits = alloc("loss.dlogits", kdrt.F32, R, V)
		if low != kdrt.F32 {
			c.dlow = alloc("loss.dlogits."+low.String(), low, R, V)
		}
	}
	if Vt > 0 {
		c.teacher = alloc("loss.teacher_logits", kdrt.F32, R, Vt)
	}
	c.losses = alloc("loss.rows", kdrt.F32, R)
	c.weights = alloc("loss.weights", kdrt.F32, R)
	if targets {
		c.targets = alloc("loss.targets", kdrt.I32, R)
	}
	if err != nil {
		c.free()
		return nil, fmt.Errorf("loss: allocating chunk buffers (%d rows × %d vocabulary): %w", R, V, err)
	}
	return c, nil
}

// free releases the buffers in the reverse order of their allocation, so
// that a caching allocator that reuses the last freed block first gives the
// next call the same memory (and a device's recorded step, the same
// addresses).
func (c *chunkBufs) free() {
	for i := len(c.all) - 1; i >= 0; i-- {
		if t := c.all[i]; t != nil {
			c.be.Free(t)
		}
	}
}

// view slices a chunk buffer to n rows (nil stays nil).
func (c *chunkBufs) view(t *kdrt.Tensor, n int) *kdrt.Tensor {
	if t == nil {
		return nil
	}
	return c.be.Slice(t, 0, n)
}

// sumLosses downloads the chunk's per-row losses and adds them in float64.
func (c *chunkBufs) sumLosses(n int) (float64, error) {
	if err := c.be.Download(c.view(c.losses, n), c.hostL[:n]); err != nil {
		return 0, err
	}
	var s float64
	for _, v := range c.hostL[:n] {
		s += float64(v)
	}
	return s, nil
}

// headForward computes the chunk's student logits = hidden[r0:r1]·Wᵀ (F32,
// from BF16 operands too).
func headForward(be kdrt.Backend, logits, hidden *kdrt.Tensor, head Head, r0, r1 int) *kdrt.Tensor {
	hs := be.Slice(hidden, r0, r1)
	be.MatMul(logits, hs, head.W, false, true, 1, 0)
	return hs
}

// headBackward accumulates dHidden[r0:r1] += dlogits·W and head.G += dlogitsᵀ·hidden.
// Under BF16 storage the F32 dlogits are first rounded into low (a chunk
// buffer of n rows), as autocast and Liger round the gradient entering a
// bf16 product; head.G stays F32 from the product's accumulator.
func headBackward(be kdrt.Backend, dlogits, low, hs, dHidden *kdrt.Tensor, head Head, r0, r1 int) {
	if low != nil {
		be.Cast(low, dlogits)
		dlogits = low
	}
	if dHidden != nil {
		be.MatMul(be.Slice(dHidden, r0, r1), dlogits, head.W, false, false, 1, 1)
	}
	if head.G != nil {
		be.MatMul(head.G, dlogits, hs, true, false, 1, 1)
	}
}

func checkHidden(hidden *kdrt.Tensor, head Head, dHidden *kdrt.Tensor) error {
	if hidden == nil || head.W == nil {
		return errors.New("loss: hidden states and lm_head are required")
	}
	if hidden.Cols() != head.W.Cols() {
		return fmt.Errorf("loss: hidden states %v and lm_head %v differ in width", hidden, head.W)
	}
	if hidden.DType != head.W.DType {
		return fmt.Errorf("loss: hidden states %v and lm_head %v differ in dtype", hidden, head.W)
	}
	if dHidden != nil && !kdrt.SameShape(dHidden.Shape, hidden.Shape) {
		return fmt.Errorf("loss: gradient %v does not match hidden states %v", dHidden, hidden)
	}
	if head.G != nil && !kdrt.SameShape(head.G.Shape, head.W.Shape) {
		return fmt.Errorf("loss: lm_head gradient %v does not match %v", head.G, head.W)
	}
	if head.G != nil && head.G.DType != kdrt.F32 && head.G.DType != head.W.DType {
		return fmt.Errorf("loss: lm_head gradient %v should be F32 (or %s)", head.G, head.W.DType)
	}
	return nil
}

func checkScale(scale float64) error {
	if math.IsNaN(scale) || math.IsInf(scale, 0) {
		return fmt.Errorf("loss: scale %g is not finite", scale)
	}
	return nil
}
