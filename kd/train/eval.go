package train

import (
	"fmt"
	"math"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// Eval is a validation pass: the student's cross-entropy and perplexity on
// the validation responses and, with a teacher, the forward KL from the
// teacher to the student at temperature 1 (nats per token).
type Eval struct {
	Loss, PPL float64
	KL        float64
	HasKL     bool
	Tokens    int
	// DPO runs report the preference metrics instead.
	DPO *loss.DPOMetrics
}

func (e Eval) String() string {
	if e.DPO != nil {
		m := e.DPO
		return fmt.Sprintf("val dpo loss %.4f, reward accuracy %.3f, margin %.4f (chosen %.4f, rejected %.4f) over %d pairs",
			m.Loss, m.Accuracy, m.Margin, m.ChosenReward, m.RejectedReward, m.Pairs)
	}
	if e.Tokens == 0 {
		return "no validation data"
	}
	s := fmt.Sprintf("val loss %.4f, perplexity %.2f", e.Loss, e.PPL)
	if e.HasKL {
		s += fmt.Sprintf(", KL(teacher‖student) %.4f", e.KL)
	}
	return s + fmt.Sprintf(" over %d tokens", e.Tokens)
}

func (e Eval) fields() map[string]any {
	f := map[string]any{"tokens": e.Tokens}
	if e.DPO != nil {
		f["dpo_loss"], f["reward_accuracy"], f["reward_margin"] = e.DPO.Loss, e.DPO.Accuracy, e.DPO.Margin
		return f
	}
	if e.Tokens > 0 {
		f["loss"], f["perplexity"] = e.Loss, e.PPL
	}
	if e.HasKL {
		f["kl"] = e.KL
	}
	return f
}

// evaluate runs the validation set once, in order, without gradients: the
// models' inference forwards, which leave the training activations alone.
func (t *trainer) evaluate() (Eval, error) {
	if t.pairs != nil {
		return t.evaluatePairs()
	}
	teacher := t.teacher
	if t.xt != nil {
		teacher = nil // its rows are not the student's: no KL per token
	}
	opt := t.lossOpt
	opt.Sums = t.sums // free between steps
	return evaluateSFT(t.be, t.student, teacher, t.val, t.r.BatchSize, t.pad, opt, nil, func(line string) {
		t.endLine()
		t.logf("%s", line)
	})
}

// EvaluateSFT measures a student's mean cross-entropy (and perplexity) on
// rows, and its forward KL to a teacher when one is given, token-weighted
// over all rows. opt.Sums, when set (capacity ≥ 2), are where each batch's
// losses wait on the device for the batch's one read; a caller that
// evaluates again and again passes the same ones (see evaluateSFT).
func EvaluateSFT(be kdrt.Backend, student, teacher *model.Model, rows []data.Example, batch int, pad int32, opt loss.Options) (Eval, error) {
	return evaluateSFT(be, student, teacher, rows, batch, pad, opt, nil, nil)
}

// evaluateSFT is EvaluateSFT calling progress (when not nil) with the rows
// done after each batch, and log (nil: standard error) with the line a
// backend with step graphs gives when a batch shape's graphs are turned off.
//
// A batch's losses stay on the device until one read per batch, so that on
// a backend with step graphs (CUDA) each batch's forwards and losses are one
// recorded graph, replayed for every later batch of its shape (in this pass
// and the next evaluations). Rows that carry the teacher's top-k (a sparse
// teacher) upload a different amount per batch and run as usual.
func evaluateSFT(be kdrt.Backend, student, teacher *model.Model, rows []data.Example, batch int, pad int32, opt loss.Options, progress func(done int), log func(string)) (Eval, error) {
	var e Eval
	var ce, kl float64
	klTokens := 0
	// The sums the caller gives are used for every batch, so that each
	// evaluation's work is the same as the last one's (a trainer passes
	// its own); otherwise the pass makes its own.
	sums := opt.Sums
	if sums == nil {
		var err error
		if sums, err = loss.NewSums(be, 2); err != nil {
			return e, err
		}
		defer sums.Free()
	}
	dev := opt
	dev.Sums, opt.Sums = sums, nil
	for i := 0; i < len(rows); i += batch {
		chunk := rows[i:min(i+batch, len(rows))]
		b, err := data.MakeBatch(chunk, pad, 0)
		if err != nil {
			return e, err
		}
		n := 0
		for _, tg := range b.Targets {
			if tg != kdrt.IgnoreIndex {
				n++
			}
		}
		if n == 0 {
			continue
		}
		sparse := teacher == nil && hasTopK(chunk)
		end := func() {}
		if !sparse {
			end = kdrt.BeginGraph(be, fmt.Sprintf("eval %d×%d", b.B, b.T), log)
		}
		l, klv, klN, err := evalBatch(be, student, teacher, chunk, b, n, sums, opt, dev, sparse, end)
		end()
		if err != nil {
			return e, err
		}
		ce += l * float64(n)
		if klN > 0 {
			kl += klv * float64(klN)
			klTokens += klN
			e.HasKL = true
		}
		e.Tokens += n
		if progress != nil {
			progress(min(i+batch, len(rows)))
		}
	}
	if e.Tokens > 0 {
		e.Loss = ce / float64(e.Tokens)
		e.PPL = math.Exp(e.Loss)
		e.KL = kl / float64(max(klTokens, 1))
	}
	return e, nil
}

// evalBatch runs one validation batch of n target tokens: the student's
// cross-entropy and, with a teacher (the model, or the top-k the rows
// carry when sparse), the forward KL and the tokens it is over. The losses
// go to sums (dev has them), which it resets first and reads once at the
// end, after end (which ends the batch's graph).
func evalBatch(be kdrt.Backend, student, teacher *model.Model, rows []data.Example, b model.Batch, n int, sums *loss.Sums,
	opt, dev loss.Options, sparse bool, end func()) (ce, kl float64, klTokens int, err error) {
	sums.Reset()
	h, err := student.InferHidden(b)
	if err != nil {
		return 0, 0, 0, err
	}
	head := loss.Head{W: student.Head().W}
	if _, _, err := loss.CrossEntropy(be, h, head, nil, b.Targets, 1, dev); err != nil {
		return 0, 0, 0, err
	}
	ceD := sums.Last()
	var klD *loss.Deferred
	if sparse {
		// A teacher cache or API logprobs carried by the data.
		tk, mask, free, ok, err := sparseTeacher(be, rows, b.Targets, b.T)
		if err != nil {
			return 0, 0, 0, err
		}
		defer free()
		if ok && anyTokens(mask) {
			res, err := loss.KD(be, h, head, nil, tk, mask, loss.KDConfig{Divergence: kdrt.ForwardKL, Temperature: 1, Tail: kdrt.TailBucket}, 1, opt)
			if err != nil {
				return 0, 0, 0, err
			}
			kl, klTokens = res.Loss, res.Tokens
		}
	}
	if teacher != nil {
		th, err := teacher.InferHidden(b)
		if err != nil {
			return 0, 0, 0, err
		}
		if _, err := loss.KD(be, h, head, nil, loss.TeacherHidden{Hidden: th, Head: teacher.Head().W},
			targetMask(b.Targets), loss.KDConfig{Divergence: kdrt.ForwardKL, Temperature: 1}, 1, dev); err != nil {
			return 0, 0, 0, err
		}
		d := sums.Last()
		klD, klTokens = &d, n
	}
	end()
	if _, err := sums.Read(); err != nil {
		return 0, 0, 0, err
	}
	ce = ceD.Value()
	if klD != nil {
		kl = klD.Value()
	}
	return ce, kl, klTokens, nil
}

func (t *trainer) evaluatePairs() (Eval, error) {
	var e Eval
	if len(t.valP) == 0 {
		return e, nil
	}
	var pol, ref loss.SequenceLogProbs
	for i := 0; i < len(t.valP); i += t.r.BatchSize {
		chunk := t.valP[i:min(i+t.r.BatchSize, len(t.valP))]
		b, err := data.MakePairBatch(chunk, t.pad, 0)
		if err != nil {
			return e, err
		}
		layout := loss.ConcatPairLayout(len(chunk), b.T)
		h, err := t.student.InferHidden(b)
		if err != nil {
			return e, err
		}
		p, err := loss.SequenceSums(t.be, h, loss.Head{W: t.student.Head().W}, b.Targets, layout, t.lossOpt)
		if err != nil {
			return e, err
		}
		appendSums(&pol, p)
		if t.ref != nil {
			rh, err := t.ref.InferHidden(b)
			if err != nil {
				return e, err
			}
			r, err := loss.SequenceSums(t.be, rh, loss.Head{W: t.ref.Head().W}, b.Targets, layout, t.lossOpt)
			if err != nil {
				return e, err
			}
			appendSums(&ref, r)
		}
	}
	var refp *loss.SequenceLogProbs
	if t.ref != nil {
		refp = &ref
	}
	_, _, _, m, err := loss.DPOLoss(&pol, refp, t.dpo)
	if err != nil {
		return e, err
	}
	e.DPO = &m
	return e, nil
}

func appendSums(dst, src *loss.SequenceLogProbs) {
	dst.Chosen = append(dst.Chosen, src.Chosen...)
	dst.Rejected = append(dst.Rejected, src.Rejected...)
	dst.ChosenTokens = append(dst.ChosenTokens, src.ChosenTokens...)
	dst.RejectedTokens = append(dst.RejectedTokens, src.RejectedTokens...)
}
