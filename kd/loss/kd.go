package loss

import (
	"errors"
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// KDConfig chooses the divergence between the teacher's next-token
// distribution p and the student's q, both at temperature τ.
type KDConfig struct {
	Divergence kdrt.DivergenceKind
	// Temperature τ divides both models' logits (must be > 0).
	Temperature float64
	// Beta is JSD's β and Alpha the skew divergences' α, both in [0, 1].
	Beta, Alpha float64
	// NoTSquared turns off the Hinton convention of multiplying the loss by
	// τ² (which keeps gradient magnitudes comparable across temperatures).
	NoTSquared bool
	// Tail is how a top-k teacher's remaining mass is treated.
	Tail kdrt.TailMode
}

// Validate reports a configuration outside the divergences' domains.
func (c KDConfig) Validate() error {
	switch {
	case !(c.Temperature > 0) || math.IsInf(c.Temperature, 0):
		return fmt.Errorf("kd: temperature %g must be positive", c.Temperature)
	case !(c.Beta >= 0 && c.Beta <= 1):
		return fmt.Errorf("kd: beta %g must be in [0, 1]", c.Beta)
	case !(c.Alpha >= 0 && c.Alpha <= 1):
		return fmt.Errorf("kd: alpha %g must be in [0, 1]", c.Alpha)
	case int(c.Divergence) >= 6:
		return fmt.Errorf("kd: unknown divergence %v", c.Divergence)
	case c.Tail != kdrt.Renormalize && c.Tail != kdrt.TailBucket:
		return fmt.Errorf("kd: unknown tail mode %d", c.Tail)
	}
	return nil
}

func (c KDConfig) params(vocab int) kdrt.DivergenceParams {
	return kdrt.DivergenceParams{Kind: c.Divergence, Temperature: float32(c.Temperature),
		Beta: float32(c.Beta), Alpha: float32(c.Alpha), Vocab: vocab, Tail: c.Tail}
}

// Teacher is where the teacher's distribution for each row comes from:
// TeacherLogits, TeacherHidden or TeacherTopK.
type Teacher interface{ teacher() }

// TeacherLogits is a dense teacher given as logits [N, Vt].
type TeacherLogits struct{ Logits *kdrt.Tensor }

// TeacherHidden is a dense teacher given as its final hidden states [N, Ct]
// and lm_head [Vt, Ct]; its logits are computed a chunk at a time, like the
// student's, so an online teacher's [N × Vt] logits never exist either.
type TeacherHidden struct{ Hidden, Head *kdrt.Tensor }

// TeacherTopK is a sparse teacher: per row, K distinct token ids I32 [N, K]
// and their log-probabilities F32 [N, K] (−Inf for an unused slot), as a
// teacher cache or an API's top_logprobs gives them. Host copies are kept
// for validation.
type TeacherTopK struct {
	IDs, LogProbs *kdrt.Tensor
	// Tail F32 [N], optional, is the log of the teacher's mass outside the
	// top-k as measured when the top-k was taken (a teacher cache stores it);
	// without it the tail is 1 − Σ top-k.
	Tail *kdrt.Tensor
}

func (TeacherLogits) teacher() {}
func (TeacherHidden) teacher() {}
func (TeacherTopK) teacher()   {}

// KDResult reports a KD loss and what its inputs forced it to leave out.
type KDResult struct {
	// Loss is the mean divergence over the rows with a nonzero mask, times
	// τ² (unless NoTSquared) and times the caller's scale; NaN when
	// Options.Sums holds it (Sums.Last).
	Loss float64
	// Tokens is the number of rows with a nonzero mask.
	Tokens int
	// DroppedStudent and DroppedTeacher count the vocabulary ids of each model
	// outside the shared range when their vocabulary sizes differ.
	DroppedStudent, DroppedTeacher int
}

// KD computes the distillation divergence between a teacher and the student
// whose final hidden states [N, C] and lm_head are given, a chunk of rows at
// a time, averaged over the rows whose mask entry is nonzero (mask nil: all
// rows). With dHidden or head.G set it accumulates the gradient, times scale.
func KD(be kdrt.Backend, hidden *kdrt.Tensor, head Head, dHidden *kdrt.Tensor, teacher Teacher, mask []float32, cfg KDConfig, scale float64, opt Options) (KDResult, error) {
	var res KDResult
	if err := cfg.Validate(); err != nil {
		return res, err
	}
	if err := checkHidden(hidden, head, dHidden); err != nil {
		return res, err
	}
	if err := checkScale(scale); err != nil {
		return res, err
	}
	N, V := hidden.Rows(), head.W.Rows()
	if mask != nil && len(mask) != N {
		return res, fmt.Errorf("kd: mask of %d entries for %d rows", len(mask), N)
	}
	for i, m := range mask {
		if m < 0 || math.IsNaN(float64(m)) || math.IsInf(float64(m), 0) {
			return res, fmt.Errorf("kd: mask entry %g at row %d must be a finite weight ≥ 0", m, i)
		}
		if m != 0 {
			res.Tokens++
		}
	}
	if mask == nil {
		res.Tokens = N
	}
	if res.Tokens == 0 {
		return res, errors.New("kd: no tokens to distill (the mask is all zero)")
	}

	var Vt, shared int
	var sparse *TeacherTopK
	switch t := teacher.(type) {
	case TeacherLogits:
		if t.Logits == nil || t.Logits.Rows() != N {
			return res, fmt.Errorf("kd: teacher logits %v for %d student rows", t.Logits, N)
		}
		Vt = t.Logits.Cols()
	case TeacherHidden:
		if t.Hidden == nil || t.Head == nil || t.Hidden.Rows() != N || t.Hidden.Cols() != t.Head.Cols() || t.Hidden.DType != t.Head.DType {
			return res, fmt.Errorf("kd: teacher hidden states %v and lm_head %v do not fit %d student rows", t.Hidden, t.Head, N)
		}
		Vt = t.Head.Rows()
	case TeacherTopK:
		if err := validateTopK(be, t, N, V); err != nil {
			return res, err
		}
		sparse = &t
	default:
		return res, fmt.Errorf("kd: unknown teacher type %T", teacher)
	}
	if sparse == nil {
		// Teacher and student of one tokenizer family can have padded
		// vocabularies of different sizes; compare the shared leading ids.
		shared = min(V, Vt)
		res.DroppedStudent, res.DroppedTeacher = V-shared, Vt-shared
		if shared == V && shared == Vt {
			shared = 0
		}
	}

	grad := dHidden != nil || head.G != nil
	perRow := 4 * V
	if grad {
		perRow += gradRowBytes(V, hidden.DType)
	}
	if _, ok := teacher.(TeacherHidden); ok {
		perRow += 4 * Vt
	}
	R := opt.chunkRows(N, perRow)
	tv := 0
	if _, ok := teacher.(TeacherHidden); ok {
		tv = Vt
	}
	c, err := newChunkBufs(be, R, V, tv, grad, false, hidden.DType)
	if err != nil {
		return res, err
	}
	defer c.free()

	factor := scale / float64(res.Tokens)
	if !cfg.NoTSquared {
		factor *= cfg.Temperature * cfg.Temperature
	}
	p := cfg.params(shared)
	sums, err := openSums(be, opt, 1, 1)
	if err != nil {
		return res, err
	}
	defer sums.close()
	for r0 := 0; r0 < N; r0 += R {
		r1 := min(r0+R, N)
		n := r1 - r0
		for i := range n {
			w := float32(factor)
			if mask != nil {
				w = float32(float64(mask[r0+i]) * factor)
			}
			c.hostW[i] = w
		}
		weights, losses, logits := c.view(c.weights, n), c.view(c.losses, n), c.view(c.logits, n)
		if err := be.Upload(weights, c.hostW[:n]); err != nil {
			return res, err
		}
		hs := headForward(be, logits, hidden, head, r0, r1)
		var dl *kdrt.Tensor
		if grad {
			dl = c.view(c.dlogits, n)
			be.Zero(dl)
		}
		switch t := teacher.(type) {
		case TeacherLogits:
			be.Divergence(losses, dl, logits, be.Slice(t.Logits, r0, r1), weights, p)
		case TeacherHidden:
			tl := c.view(c.teacher, n)
			be.MatMul(tl, be.Slice(t.Hidden, r0, r1), t.Head, false, true, 1, 0)
			be.Divergence(losses, dl, logits, tl, weights, p)
		case TeacherTopK:
			var tail *kdrt.Tensor
			if t.Tail != nil {
				tail = be.Slice(t.Tail, r0, r1)
			}
			be.SparseDivergence(losses, dl, logits, be.Slice(t.IDs, r0, r1), be.Slice(t.LogProbs, r0, r1), tail, weights, p)
		}
		sums.add(be, losses)
		if grad {
			headBackward(be, dl, c.view(c.dlow, n), hs, dHidden, head, r0, r1)
		}
	}
	res.Loss, err = sums.finish(be)
	return res, err
}

// sparseMassTolerance is how far above 1 a row's top-k probabilities may sum
// before the teacher is refused (quantized caches round).
const sparseMassTolerance = 1e-3

// validateTopK checks a sparse teacher on the host: shapes, ids inside the
// student's vocabulary and distinct within a row, log-probabilities ≤ 0 and
// not NaN, and a total probability of at most 1.
func validateTopK(be kdrt.Backend, t TeacherTopK, N, V int) error {
	if t.IDs == nil || t.LogProbs == nil || t.IDs.DType != kdrt.I32 || t.IDs.Rows() != N || !kdrt.SameShape(t.IDs.Shape, t.LogProbs.Shape) {
		return fmt.Errorf("kd: top-k teacher ids %v and log-probabilities %v do not fit %d rows", t.IDs, t.LogProbs, N)
	}
	K := t.IDs.Cols()
	if K > V {
		return fmt.Errorf("kd: top-k teacher has k = %d, more than the vocabulary of %d", K, V)
	}
	ids := make([]int32, t.IDs.Numel())
	lps := make([]float32, t.LogProbs.Numel())
	if err := be.DownloadInt32(t.IDs, ids); err != nil {
		return err
	}
	if err := be.Download(t.LogProbs, lps); err != nil {
		return err
	}
	seen := map[int32]bool{}
	for n := range N {
		clear(seen)
		var mass float64
		for k := range K {
			id, lp := ids[n*K+k], lps[n*K+k]
			if id < 0 || int(id) >= V {
				return fmt.Errorf("kd: top-k teacher id %d at row %d, slot %d is outside the student's vocabulary [0, %d)", id, n, k, V)
			}
			if seen[id] {
				return fmt.Errorf("kd: top-k teacher repeats id %d in row %d", id, n)
			}
			seen[id] = true
			if math.IsNaN(float64(lp)) || lp > 1e-6 {
				return fmt.Errorf("kd: top-k teacher log-probability %g at row %d, slot %d is not a log-probability (must be ≤ 0)", lp, n, k)
			}
			mass += math.Exp(float64(lp))
		}
		if mass > 1+sparseMassTolerance {
			return fmt.Errorf("kd: top-k teacher probabilities of row %d sum to %.6f, more than 1", n, mass)
		}
	}
	if t.Tail != nil {
		if t.Tail.Numel() != N {
			return fmt.Errorf("kd: top-k teacher tail %v for %d rows", t.Tail, N)
		}
		tails := make([]float32, N)
		if err := be.Download(t.Tail, tails); err != nil {
			return err
		}
		for n, v := range tails {
			if math.IsNaN(float64(v)) || v > 1e-6 {
				return fmt.Errorf("kd: top-k teacher tail %g at row %d is not the log of a mass (must be ≤ 0)", v, n)
			}
		}
	}
	return nil
}
