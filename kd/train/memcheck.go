package train

import (
	"errors"
	"fmt"
	"github.com/kdnative/kdnative/kd/loss"
	"io"
	"math"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/optim"
	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/plan"
)

// checkBatchMemory refuses, before the first step, a batch_size ×
// data.max_len whose step cannot fit in the backend's free memory. The need
// is the plan of the run's own step (planStep), at the run's precision: the
// student's buffers (in its storage dtype, with F32 gradients, master
// weights and AdamW moments), the online teacher's and the DPO reference's
// inference forwards (one layer's buffers each), the losses' chunks, at the
// longest batch the data can make. The models are loaded by then, so their
// weights are already out of the free memory; the rest must fit in it. The
// error gives the plan's breakdown and the largest batch_size that fits.
// batch_size=10¹² used to panic in make (or be killed by the kernel) in the
// first step.
func (t *trainer) checkBatchMemory() error {
	if !t.planned() {
		return t.checkBatchMemoryFormula()
	}
	free, total, ok := kdrt.FreeMemory(t.be)
	if !ok {
		return nil
	}
	need := func(p MemoryPlan) uint64 { return p.PeakBytes - min(p.PeakBytes, residentBytes(p)) }
	at := memo(t.stepPlanner())
	p, err := t.planStep(t.r.BatchSize, at)
	if err != nil {
		return err
	}
	if need(p) <= uint64(free) {
		return nil
	}
	fit, err := fitBatch(t.r.BatchSize-1, uint64(free), func(B int) (uint64, error) {
		q, err := t.planStep(B, at)
		return need(q), err
	})
	if err != nil {
		return err
	}
	p.FreeBytes, p.FitBatch = free, fit
	return &PlanError{Plan: p, Free: free, Total: total, Resident: residentBytes(p), Backend: t.be.Name(),
		What: fmt.Sprintf("training with batch_size %d × data.max_len %d", t.r.BatchSize, t.r.Data.MaxLen),
		Hint: "lower batch_size (in the recipe or with --set batch_size=N; raise grad_accum to keep the tokens per step) or data.max_len"}
}

// planned reports whether stepPlanner models this run's step. The
// on-policy term's sampling (objectives.onpolicy) and a teacher of another
// tokenizer (objectives.kd.cross_tokenizer) have their own buffers, which
// the planner's copy of the trainer does not run.
func (t *trainer) planned() bool { return t.op == nil && t.xt == nil && t.rl == nil }

// checkBatchMemoryFormula is the check of a run the planner does not model
// (planned): the student's activations on a full micro-batch in its storage
// dtype, its gradients and AdamW moments (F32, with the master weights
// under BF16: 3 F32 copies of the weights are a lower bound), and the
// online teacher's and the DPO reference's inference forwards.
func (t *trainer) checkBatchMemoryFormula() error {
	r := &t.r
	B, T := r.BatchSize, r.Data.MaxLen
	if r.Objectives.DPO != nil {
		// A preference batch holds the chosen and the rejected sequence of
		// each pair.
		B = int(min(kdrt.MulBytes(2, int64(B)), int64(^uint(0)>>1)))
	}
	need := t.student.Config.ActivationBytesAs(t.student.DType(), B, T)
	need = kdrt.AddBytes(need, kdrt.MulBytes(3, t.student.Config.WeightBytes()))
	if t.teacher != nil {
		need = kdrt.AddBytes(need, t.teacher.Config.InferenceBytes(t.teacher.DType(), B, T))
	}
	if t.ref != nil {
		need = kdrt.AddBytes(need, t.ref.Config.InferenceBytes(t.ref.DType(), B, T))
	}
	what := fmt.Sprintf("training with batch_size %d × data.max_len %d", r.BatchSize, T)
	return kdrt.CheckFree(t.be, what, need,
		"lower batch_size (in the recipe or with --set batch_size=N; raise grad_accum to keep the tokens per step) or data.max_len")
}

// residentBytes is the part of a plan that loading the models allocates:
// their weights.
func residentBytes(p MemoryPlan) uint64 {
	return p.Breakdown[plan.Weights.Key()] + p.Breakdown[plan.MasterWeights.Key()] + p.Breakdown[plan.TeacherWeights.Key()]
}

// planStep plans the memory of one optimizer step of this run at micro-batch
// size B and data.max_len tokens, with at (stepPlanner) or, for batches too
// large to run through the planner, by extension from two it can run.
func (t *trainer) planStep(B int, at planner) (MemoryPlan, error) {
	if !t.planned() {
		return MemoryPlan{}, errors.New("the memory planner does not model on-policy, RL or cross-tokenizer steps")
	}
	rowsPer := 1
	if t.pairs != nil {
		rowsPer = 2
	}
	return planBatch(B, t.r.Data.MaxLen, rowsPer, at)
}

// stepPlanner plans a step of this run by running it: a copy of the
// trainer whose models are built anew on the planner from the run's
// configs (no weights are read) runs the run's own setup (gradients,
// feature projections, optimizer) and two of its steps, on rows of the
// longest length the data allows (with the teacher top-k the data carries,
// or as preference pairs).
func (t *trainer) stepPlanner() planner {
	T := t.r.Data.MaxLen
	return func(B int) (MemoryPlan, error) {
		pb := plan.New(planRounding(t.be))
		r := planRoles(pb)
		s := &trainer{r: t.r, be: r.step, log: io.Discard, tok: t.tok, kd: t.kd, dpo: t.dpo, lossOpt: t.lossOpt,
			sparse: t.sparse, pad: t.pad, total: 1, prec: t.prec}
		s.r.BatchSize, s.r.GradAccum = B, 1
		var p MemoryPlan
		err := plan.Run(func() error {
			r.phase(plan.PhaseModel)
			var err error
			if s.student, err = model.New(t.student.Config, r.student, model.ForPrecision(t.prec, true)...); err != nil {
				return err
			}
			if t.teacher != nil {
				if s.teacher, err = model.New(t.teacher.Config, r.frozen, model.ForPrecision(t.prec, false)...); err != nil {
					return err
				}
			}
			if t.ref != nil {
				if s.ref, err = model.New(t.ref.Config, r.frozen, model.ForPrecision(t.prec, false)...); err != nil {
					return err
				}
			}
			r.phase(plan.PhaseGradients)
			if err := s.student.ZeroGrad(); err != nil {
				return err
			}
			for _, p := range s.student.Params() {
				s.slots = append(s.slots, optim.Slot{Name: p.Name, W: p.W, G: p.G, Master: p.Master, Decay: !p.NoDecay})
			}
			if t.r.Objectives.Feature != nil {
				r.phase(plan.PhaseModel)
				if err := s.setupFeatures(); err != nil {
					return err
				}
			}
			r.phase(plan.PhaseOptimizer)
			o := t.r.Optim
			if s.opt, err = optim.NewAdamW(s.be, s.slots, optim.AdamWConfig{Beta1: o.Beta1, Beta2: o.Beta2, Eps: o.Eps,
				WeightDecay: o.WeightDecay, MaxGradNorm: o.MaxGradNorm}); err != nil {
				return err
			}
			if s.sums, err = loss.NewSums(s.be, 2); err != nil { // as setup makes them
				return err
			}
			r.phase(plan.PhaseStep)
			lc := data.LoaderConfig{PadID: t.pad, NoShuffle: true, Buckets: t.r.Data.LengthBuckets, MaxLen: T}
			if t.pairs != nil {
				if s.pairs, err = data.NewPairLoader(planPairs(B, T), lc); err != nil {
					return err
				}
			} else if s.loader, err = data.NewLoader(planRows(B, T, t.train), lc); err != nil {
				return err
			}
			for range 2 {
				if _, err := s.trainStep(); err != nil {
					return err
				}
			}
			p = newMemoryPlan(pb.Report())
			p.Step, p.Model, p.layers, p.Storage = "train", describeModel(s.student.Config), s.student.Config.Layers, precision(s.student)
			p.Precision = t.prec.String()
			if s.teacher != nil {
				p.Step, p.Teacher = "kd", describeModel(s.teacher.Config)
			}
			return nil
		})
		p.Batch, p.Seq = B, T
		return p, err
	}
}

// planRows are B rows of T tokens, every position a target, carrying a
// teacher top-k of the data's width when the data has one (with the tail
// masses when all its rows have them).
func planRows(B, T int, like []data.Example) []data.Example {
	K, tails := 0, true
	for _, e := range like {
		if e.TopK != nil {
			K = max(K, e.TopK.K)
			tails = tails && e.TopK.Tail != nil
		}
	}
	rows := make([]data.Example, B)
	for i := range rows {
		e := data.Example{Tokens: make([]int32, T), Labels: make([]int32, T)}
		if K > 0 {
			e.TopK = &data.TopK{K: K, IDs: make([]int32, T*K), LogProbs: make([]float32, T*K), Has: make([]bool, T)}
			for j := range e.TopK.IDs {
				e.TopK.IDs[j] = int32(j % K) // distinct within a row
				e.TopK.LogProbs[j] = float32(-math.Log(float64(K)))
			}
			for j := range e.TopK.Has {
				e.TopK.Has[j] = true
			}
			if tails {
				e.TopK.Tail = make([]float32, T)
			}
		}
		rows[i] = e
	}
	return rows
}

// planPairs are B preference pairs whose sequences are T tokens long.
func planPairs(B, T int) []data.Pair {
	pairs := make([]data.Pair, B)
	for i := range pairs {
		pairs[i] = data.Pair{Prompt: make([]int32, 1), Chosen: make([]int32, max(T-1, 1)), Rejected: make([]int32, max(T-1, 1))}
	}
	return pairs
}
