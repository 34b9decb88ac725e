package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"time"

	"github.com/kdnative/kdnative/kd/cache"
	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/kd/optim"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// Options are how a run is driven, beyond its recipe.
type Options struct {
	// Resume continues from the newest intact checkpoint in the output
	// folder, with a recipe that may differ from the checkpoint's only in
	// ResumableKeys.
	Resume bool
	// Overwrite replaces the earlier run in the output folder. Without it
	// (or Resume) a folder that holds anything is refused.
	Overwrite bool
	// Log receives progress and summaries; Terminal makes progress a
	// redrawn line rather than one line per log step.
	Log      io.Writer
	Terminal bool
	// observeRL, when set (this package's tests), is shown each RL
	// micro-batch's GRPO inputs and result.
	observeRL func(rlObservation)
}

// ErrInterrupted is returned when the context was cancelled (Ctrl-C): the
// run saved a checkpoint first and can be resumed.
var ErrInterrupted = errors.New("interrupted")

// Summary is what a finished run reports.
type Summary struct {
	Steps          int
	Before, After  Eval // validation before the first and after the last step
	FinalDir       string
	CheckpointDirs []string
}

// trainer holds a run's state.
type trainer struct {
	r       Recipe
	be      kdrt.Backend
	log     io.Writer
	term    bool
	tok     *tokenizer.Tokenizer
	student *model.Model
	teacher *model.Model
	ref     *model.Model // DPO's frozen reference
	opt     *optim.AdamW
	loader  *data.Loader
	pairs   *data.PairLoader
	val     []data.Example
	valP    []data.Pair
	total   int
	step    int
	// startStep is where this process began (0, or the resumed step).
	startStep int
	kd        loss.KDConfig
	dpo       loss.DPOConfig
	lossOpt   loss.Options
	metrics   *metricsLog
	start     time.Time
	pace      pace // steps' speed and time left (progress.go)
	tokens    int64
	pad       int32
	train     []data.Example
	// sparse: the kd term's teacher is the top-k the data carries.
	sparse bool
	// slots are what the optimizer updates: the student's parameters, then
	// the feature projections (not part of the student's checkpoint).
	slots []optim.Slot
	feat  loss.FeatureConfig
	projs []*loss.Projection
	// The teacher's last forward: for which batch ids, and its output.
	teacherFor *int32
	teacherOut *kdrt.Tensor
	saidVocab  bool
	cache      *cache.Reader
	evalTasks  evalTaskSet // the recipe's eval_tasks (evaltasks.go)
	op         *onpolicy   // objectives.onpolicy (onpolicy.go)
	rl         *rlRun      // objectives.rl (rl.go)
	// xt is set when the kd term's teacher has another tokenizer
	// (objectives.kd.cross_tokenizer; xtok.go).
	xt *xtokState
	// prec is the run's precision; the student trains in it with F32
	// master weights, the teacher and the reference run inference in it.
	prec kdrt.Precision
	// teacherKeep are the teacher's hidden states the feature term reads
	// (the inference forward keeps only those).
	teacherKeep []int
	// sums hold a step's loss values and gradient norm on the device,
	// read once at its end: one host round-trip per step.
	sums *loss.Sums
}

// Run trains as the recipe says and returns what happened. Progress goes to
// opt.Log; metrics to <output>/metrics.jsonl; checkpoints to
// <output>/checkpoint-<step>; the final student to <output>.
func Run(ctx context.Context, be kdrt.Backend, r Recipe, opt Options) (*Summary, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("recipe: %w", err)
	}
	if opt.Log == nil {
		opt.Log = io.Discard
	}
	if err := checkOutput(&r, opt); err != nil {
		return nil, err
	}
	t := &trainer{r: r, be: be, log: opt.Log, term: opt.Terminal, start: time.Now()}
	var err error
	if t.prec, err = kdrt.UsePrecision(be, r.Precision); err != nil {
		return nil, fmt.Errorf("precision: %w", err)
	}
	if err := t.setup(opt); err != nil {
		t.closeRL() // a local judge server setup started
		return nil, err
	}
	defer t.closeRL() // on every way out (the normal end closes it first and reports its error)
	return t.run(ctx)
}

func (t *trainer) logf(format string, a ...any) { fmt.Fprintf(t.log, format+"\n", a...) }

func (t *trainer) setup(opt Options) error {
	r := &t.r
	tokDir := t.tokDir()
	tok, err := tokenizer.LoadDir(tokDir)
	if err != nil {
		return err
	}
	t.tok = tok
	var ckpt string
	if opt.Resume {
		if err := t.cleanOutput(); err != nil {
			return err
		}
		if ckpt, err = resumePoint(r.Output, t.logf); err != nil {
			return err
		}
		if err := t.checkResumeRecipe(ckpt); err != nil {
			return err
		}
	}
	studentDir := r.Student
	if ckpt != "" {
		studentDir = ckpt
	}
	if t.student, err = model.LoadDir(studentDir, t.be, model.ForPrecision(t.prec, true)...); err != nil {
		return err
	}
	t.logf("%s", describePrecision(t.prec, t.be))
	cfg := t.student.Config
	if tok.VocabSize() > cfg.Vocab {
		return fmt.Errorf("tokenizer %s has %d tokens but the student's vocabulary is %d", tokDir, tok.VocabSize(), cfg.Vocab)
	}
	if r.Data.MaxLen > cfg.MaxPositions {
		return fmt.Errorf("data.max_len %d is longer than the student allows (%d positions, max_position_embeddings in %s)",
			r.Data.MaxLen, cfg.MaxPositions, filepath.Join(r.Student, "config.json"))
	}
	if k := r.Objectives.KD; k != nil && k.CrossTokenizer != "" {
		t.xt = &xtokState{mode: k.CrossTokenizer}
	}
	if r.Teacher != "" {
		if err := t.loadTeacher(tok); err != nil {
			return err
		}
	}
	if r.Objectives.KD != nil && r.Objectives.KD.Cache != "" {
		if err := t.openCache(); err != nil {
			return err
		}
		defer t.cache.Close() // the entries are attached to the examples while loading
	}
	if err := t.loadData(); err != nil {
		return err
	}
	if err := t.loadEvalTasks(); err != nil {
		return err
	}
	if r.Objectives.KD != nil {
		if t.kd, err = r.Objectives.KD.Config(); err != nil {
			return err
		}
		if t.xt != nil {
			if err := t.setupXTok(t.dataOptions()); err != nil {
				return err
			}
		} else if t.teacher == nil {
			if t.loader == nil || !hasTopK(t.train) {
				return errors.New("objectives.kd needs a teacher: set teacher to a model folder, or give data that carries a sparse teacher: pre-tokenized rows with teacher_topk_ids and teacher_topk_logprobs, or elicit label records made with --top-logprobs and --student-tokenizer")
			}
			t.sparse = true
		}
	}
	if r.Objectives.DPO != nil {
		if t.dpo, err = r.Objectives.DPO.Config(); err != nil {
			return err
		}
		if t.dpo.Kind.NeedsReference() {
			refDir := r.Objectives.DPO.Reference
			if refDir == "" {
				refDir = r.Student
			}
			if t.ref, err = model.LoadDir(refDir, t.be, model.ForPrecision(t.prec, false)...); err != nil {
				return fmt.Errorf("dpo reference: %w", err)
			}
		}
	}
	if err := t.setupOnPolicy(); err != nil {
		return err
	}
	if err := t.setupRL(); err != nil {
		return err
	}
	if t.rl != nil {
		t.rl.observe = opt.observeRL
	}
	if err := t.checkBatchMemory(); err != nil {
		return err
	}
	if err := t.student.ZeroGrad(); err != nil {
		return err
	}
	for _, p := range t.student.Params() {
		t.slots = append(t.slots, optim.Slot{Name: p.Name, W: p.W, G: p.G, Master: p.Master, Decay: !p.NoDecay})
	}
	if r.Objectives.Feature != nil {
		if err := t.setupFeatures(); err != nil {
			return err
		}
	}
	t.opt, err = optim.NewAdamW(t.be, t.slots, optim.AdamWConfig{Beta1: r.Optim.Beta1, Beta2: r.Optim.Beta2,
		Eps: r.Optim.Eps, WeightDecay: r.Optim.WeightDecay, MaxGradNorm: r.Optim.MaxGradNorm})
	if err != nil {
		return err
	}
	// Room for the sft and kd terms of every micro-batch.
	if t.sums, err = loss.NewSums(t.be, 2*max(1, r.GradAccum)); err != nil {
		return err
	}
	t.total = t.totalSteps()
	if err := t.prepareOutput(opt.Overwrite); err != nil {
		return err
	}
	if ckpt != "" {
		if err := t.restore(ckpt); err != nil {
			return err
		}
		t.logf("resumed from %s at step %d of %d", ckpt, t.step, t.total)
	}
	if err := t.saveRecipe(); err != nil {
		return err
	}
	if t.metrics, err = openMetrics(filepath.Join(r.Output, "metrics.jsonl"), t.step); err != nil {
		return err
	}
	return t.openSamples()
}

func (t *trainer) loadTeacher(tok *tokenizer.Tokenizer) error {
	if t.xt != nil {
		return t.loadXTokTeacher()
	}
	var err error
	if t.teacher, err = model.LoadDir(t.r.Teacher, t.be, model.ForPrecision(t.prec, false)...); err != nil {
		return fmt.Errorf("teacher: %w", err)
	}
	ttok, err := tokenizer.LoadDir(t.r.Teacher)
	if err != nil {
		return fmt.Errorf("teacher: %w", err)
	}
	if ttok.Hash() != tok.Hash() {
		return fmt.Errorf("the teacher's tokenizer (%s) differs from the student's: token ids would not mean the same thing; distill between models of one tokenizer family, or set objectives.kd.cross_tokenizer (align or uld) to align the two tokenizations by their text", t.r.Teacher)
	}
	t.noteTemplates("the teacher", t.r.Teacher, ttok)
	return nil
}

// dataOptions are the recipe's data options for the student's tokenizer.
func (t *trainer) dataOptions() data.Options {
	r := &t.r
	opts := data.Options{MaxLen: r.Data.MaxLen, Overflow: r.Data.Overflow, Pack: r.Data.Pack, Template: r.Data.Template,
		SystemPrompt: r.Data.SystemPrompt, Seed: r.Seed, ValFraction: r.Data.ValFraction, ValFile: r.Data.Val,
		OnBadLine: r.Data.OnBadLine, Vocab: t.student.Config.Vocab}
	if opts.ValFile != "" {
		opts.ValFraction = 0
	}
	return opts
}

func (t *trainer) loadData() error {
	r := &t.r
	opts := t.dataOptions()
	if t.cache != nil && t.xt == nil { // a cross-tokenizer cache belongs to the teacher's examples
		opts.BeforeSplit = attachCache(t.cache)
	}
	sp := t.tok.Special()
	t.pad = max(sp.PAD, 0)
	if sp.PAD < 0 && sp.EOS >= 0 {
		t.pad = sp.EOS
	}
	lc := data.LoaderConfig{Seed: r.Seed, PadID: t.pad, Buckets: r.Data.LengthBuckets, MaxLen: r.Data.MaxLen}
	var rep data.Report
	var err error
	if r.Objectives.DPO != nil {
		var train []data.Pair
		if train, t.valP, rep, err = data.LoadPairs(r.Data.Train, t.tok, opts); err != nil {
			return err
		}
		if len(train) == 0 {
			return fmt.Errorf("data %s: no usable preference pairs", r.Data.Train)
		}
		if t.pairs, err = data.NewPairLoader(train, lc); err != nil {
			return err
		}
	} else {
		var train []data.Example
		if train, t.val, rep, err = data.LoadSFT(r.Data.Train, t.tok, opts); err != nil {
			return err
		}
		if len(train) == 0 {
			return fmt.Errorf("data %s: no usable examples", r.Data.Train)
		}
		t.train = train
		if t.loader, err = data.NewLoader(train, lc); err != nil {
			return err
		}
	}
	t.logf("%s", rep.String())
	return nil
}

func (t *trainer) rows() int {
	if t.pairs != nil {
		return t.pairs.Len()
	}
	return t.loader.Len()
}

func (t *trainer) totalSteps() int {
	if t.r.MaxSteps > 0 {
		return t.r.MaxSteps
	}
	perStep := t.r.BatchSize * t.r.GradAccum
	n := max(1, int(math.Ceil(t.r.Epochs*float64(t.rows())/float64(perStep))))
	if o := t.r.Objectives.RL; o != nil {
		n *= o.iterations() // each sampling is trained on μ times: an epoch still samples every row once (TRL's)
	}
	return n
}

func (t *trainer) run(ctx context.Context) (*Summary, error) {
	sum := &Summary{}
	before, err := t.evaluate()
	if err != nil {
		return nil, err
	}
	sum.Before = before
	if t.step == 0 {
		t.logf("step 0: %s", before)
		if err := t.writeEval(0, before); err != nil {
			return nil, err
		}
	}
	for t.step < t.total {
		if ctx.Err() != nil {
			dir, err := t.checkpoint()
			if err != nil {
				return nil, fmt.Errorf("interrupted, and the checkpoint failed: %w", err)
			}
			t.logf("\ninterrupted at step %d: checkpoint %s; continue with --resume", t.step, dir)
			return nil, ErrInterrupted
		}
		stats, err := t.trainStep()
		if err != nil {
			// An out-of-memory error gets the step's plan by category; an
			// on-policy endpoint failure a checkpoint (stepFailed).
			err = withPlan(err, func() (MemoryPlan, error) { return t.planStep(t.r.BatchSize, t.stepPlanner()) })
			return nil, t.stepFailed(err)
		}
		t.step++
		t.report(stats)
		if t.r.EvalEvery > 0 && t.step%t.r.EvalEvery == 0 && t.step < t.total {
			ev, err := t.evaluate()
			if err != nil {
				return nil, err
			}
			t.endLine()
			t.logf("step %d: %s", t.step, ev)
			if err := t.writeEval(t.step, ev); err != nil {
				return nil, err
			}
		}
		if t.r.SaveEvery > 0 && t.step%t.r.SaveEvery == 0 && t.step < t.total {
			dir, err := t.checkpoint()
			if err != nil {
				return nil, err
			}
			sum.CheckpointDirs = append(sum.CheckpointDirs, dir)
		}
	}
	t.endLine()
	after, err := t.evaluate()
	if err != nil {
		return nil, err
	}
	sum.After, sum.Steps = after, t.step
	t.logf("step %d: %s", t.step, after)
	if err := t.writeEval(t.step, after); err != nil {
		return nil, err
	}
	dir, err := t.checkpoint()
	if err != nil {
		return nil, err
	}
	sum.CheckpointDirs = append(sum.CheckpointDirs, dir)
	if err := t.saveFinal(); err != nil {
		return nil, err
	}
	sum.FinalDir = t.r.Output
	if err := t.metrics.close(); err != nil {
		return nil, err
	}
	if err := t.closeOnPolicy(); err != nil {
		return nil, err
	}
	if err := t.closeRL(); err != nil {
		return nil, err
	}
	if err := plotLosses(filepath.Join(t.r.Output, "metrics.jsonl"), filepath.Join(t.r.Output, "loss.png")); err != nil {
		t.logf("loss curve: %v", err)
	}
	t.plotEvalTasks()
	return sum, nil
}

// stepStats are one optimizer step's numbers.
type stepStats struct {
	loss, sft, kd, dpo float64
	feature            float64
	gradNorm, lr       float64
	tokens             int
	dpoMetrics         loss.DPOMetrics
	op                 onpolicyStats // objectives.onpolicy's (onpolicy.go)
	rl                 rlStats       // objectives.rl's (rl.go)
	wall               time.Duration // the step's time
	// terms are the step's loss terms in the order they were computed,
	// some still on the device (loss.Sums) until the step's one read;
	// resolve adds them up in that order.
	terms []stepTerm
}

// stepTerm is one loss term of a step: the term's total it adds to (times
// 1/weight) and its value, known now or after the step's read.
type stepTerm struct {
	total  *float64
	weight float64
	value  float64
	later  *loss.Deferred
}

// add records a term's value l (already weighted) for total and the loss.
func (st *stepStats) add(total *float64, weight, l float64) {
	st.terms = append(st.terms, stepTerm{total: total, weight: weight, value: l})
}

// addLater records a term whose value is still on the device.
func (st *stepStats) addLater(total *float64, weight float64, d loss.Deferred) {
	st.terms = append(st.terms, stepTerm{total: total, weight: weight, later: &d})
}

// resolve adds every term into its total and the loss, in the order they
// were computed (so the sums are the same, bit for bit, whichever terms
// were deferred).
func (st *stepStats) resolve() {
	for _, tm := range st.terms {
		v := tm.value
		if tm.later != nil {
			v = tm.later.Value()
		}
		*tm.total += v / tm.weight
		st.loss += v
	}
	st.terms = nil
}

// trainStep runs GradAccum micro-batches and one optimizer update.
func (t *trainer) trainStep() (stepStats, error) {
	var st stepStats
	t0 := time.Now()
	if err := t.beginStep(&st); err != nil { // on-policy sampling (onpolicy.go)
		return st, err
	}
	if err := t.rlBeginStep(&st); err != nil { // RL sampling and rewards (rl.go)
		return st, err
	}
	// On a backend with step graphs (CUDA) the steady-state step's work is
	// recorded once and replayed as one launch; a step that cannot be
	// (one that reads from the device midway) runs as usual.
	end := kdrt.BeginGraph(t.be, "train", func(line string) {
		t.endLine()
		t.logf("%s", line)
	})
	defer end() // an error ended the step early
	if err := t.student.ZeroGrad(); err != nil {
		return st, err
	}
	for _, p := range t.projs {
		if p != nil {
			p.ZeroGrad(t.be)
		}
	}
	t.sums.Reset()
	accum := float64(t.r.GradAccum)
	for range t.r.GradAccum {
		var err error
		if t.pairs != nil {
			err = t.dpoMicroBatch(&st, 1/accum)
		} else {
			err = t.sftMicroBatch(&st, 1/accum)
		}
		if err != nil {
			return st, err
		}
	}
	st.lr = t.r.Schedule.LR(t.r.Optim.LR, t.step+1, t.total)
	// The update, then the step's one read: the gradient norm and every
	// deferred loss value in one download.
	t.opt.Launch(st.lr, t.sums.Head())
	end()
	head, err := t.sums.Read()
	norm, err := t.opt.Finish(float64(head), err)
	if err != nil {
		return st, err
	}
	st.resolve()
	st.gradNorm = norm
	t.tokens += int64(st.tokens)
	st.wall = time.Since(t0)
	return st, nil
}

// sftMicroBatch runs the token-level objectives (sft, kd, feature, and
// onpolicy on the rows' prompts) on one batch.
func (t *trainer) sftMicroBatch(st *stepStats, w float64) error {
	rows, b, err := t.loader.NextRows(t.r.BatchSize)
	if err != nil {
		return err
	}
	if t.op != nil || t.rl != nil {
		if t.op != nil {
			if err := t.onpolicyMicroBatch(st, w, rows); err != nil {
				return err
			}
		} else if err := t.rlMicroBatch(st, w, rows); err != nil {
			return err
		}
		if o := t.r.Objectives; o.SFT == nil && o.KD == nil && o.Feature == nil {
			return nil
		}
	}
	t.teacherFor = nil // the teacher has not seen this batch
	h, err := t.student.ForwardHidden(b)
	if err != nil {
		return err
	}
	dh, err := t.be.Alloc("grad.hidden", h.DType, h.Shape...)
	if err != nil {
		return err
	}
	defer t.be.Free(dh)
	head := loss.Head{W: t.student.Head().W, G: t.student.Head().G}
	o := t.r.Objectives
	n := 0
	for _, tg := range b.Targets {
		if tg != kdrt.IgnoreIndex {
			n++
		}
	}
	if n == 0 {
		return nil // a batch of prompts only: nothing to learn
	}
	st.tokens += n
	deferred := t.lossOpt
	deferred.Sums = t.sums
	if o.SFT != nil {
		if _, _, err := loss.CrossEntropy(t.be, h, head, dh, b.Targets, o.SFT.Weight*w, deferred); err != nil {
			return err
		}
		st.addLater(&st.sft, o.SFT.Weight, t.sums.Last())
	}
	if o.KD != nil && t.xt != nil {
		if err := t.xtokKD(st, rows, b, h, head, dh, w); err != nil {
			return err
		}
	} else if o.KD != nil {
		var teacher loss.Teacher
		mask := targetMask(b.Targets)
		if t.sparse {
			tk, m, free, ok, err := sparseTeacher(t.be, rows, b.Targets, b.T)
			if err != nil {
				return err
			}
			defer free()
			if ok && anyTokens(m) {
				teacher, mask = tk, m
			}
		} else {
			th, err := t.teacherForward(b)
			if err != nil {
				return err
			}
			teacher = loss.TeacherHidden{Hidden: th, Head: t.teacher.Head().W}
		}
		if teacher != nil { // a batch without teacher entries has no kd term
			res, err := loss.KD(t.be, h, head, dh, teacher, mask, t.kd, o.KD.Weight*w, deferred)
			if err != nil {
				return err
			}
			st.addLater(&st.kd, o.KD.Weight, t.sums.Last())
			if (res.DroppedStudent > 0 || res.DroppedTeacher > 0) && !t.saidVocab {
				t.saidVocab = true
				t.logf("kd: vocabularies differ in size; comparing the %d shared ids (dropped %d student and %d teacher ids)",
					t.student.Config.Vocab-res.DroppedStudent, res.DroppedStudent, res.DroppedTeacher)
			}
		}
	}
	var extra []model.HiddenGrad
	if o.Feature != nil {
		if _, err := t.teacherForward(b); err != nil {
			return err
		}
		var err error
		var l float64
		if extra, l, err = t.featureLosses(b, o.Feature.Weight*w); err != nil {
			return err
		}
		defer func() {
			for _, e := range extra {
				t.be.Free(e.Grad)
			}
		}()
		st.add(&st.feature, o.Feature.Weight, l)
	}
	return t.student.BackwardHidden(dh, extra...)
}

// teacherForward runs the online teacher on b once per micro-batch, for the
// kd and feature terms alike: an inference forward (no gradients, one
// layer's buffers) that keeps the hidden states the feature term reads.
func (t *trainer) teacherForward(b model.Batch) (*kdrt.Tensor, error) {
	if t.teacherFor == &b.IDs[0] {
		return t.teacherOut, nil
	}
	th, err := t.teacher.InferHidden(b, t.teacherKeep...)
	if err != nil {
		return nil, fmt.Errorf("teacher: %w", err)
	}
	t.teacherFor, t.teacherOut = &b.IDs[0], th
	return th, nil
}

// dpoMicroBatch runs the preference objective on one batch of pairs.
func (t *trainer) dpoMicroBatch(st *stepStats, w float64) error {
	P := t.r.BatchSize
	b, err := t.pairs.Next(P)
	if err != nil {
		return err
	}
	layout := loss.ConcatPairLayout(P, b.T)
	var ref *loss.SequenceLogProbs
	if t.ref != nil {
		rh, err := t.ref.InferHidden(b)
		if err != nil {
			return fmt.Errorf("dpo reference: %w", err)
		}
		if ref, err = loss.SequenceSums(t.be, rh, loss.Head{W: t.ref.Head().W}, b.Targets, layout, t.lossOpt); err != nil {
			return err
		}
	}
	h, err := t.student.ForwardHidden(b)
	if err != nil {
		return err
	}
	dh, err := t.be.Alloc("grad.hidden", h.DType, h.Shape...)
	if err != nil {
		return err
	}
	defer t.be.Free(dh)
	weight := t.r.Objectives.DPO.Weight
	res, err := loss.DPO(t.be, h, loss.Head{W: t.student.Head().W, G: t.student.Head().G}, dh, b.Targets, layout, ref, t.dpo, weight*w, t.lossOpt)
	if err != nil {
		return err
	}
	st.add(&st.dpo, weight, res.Loss)
	st.dpoMetrics = res.Metrics
	for _, tg := range b.Targets {
		if tg != kdrt.IgnoreIndex {
			st.tokens++
		}
	}
	return t.student.BackwardHidden(dh)
}

// describePrecision is the run's precision line for the log.
func describePrecision(p kdrt.Precision, be kdrt.Backend) string {
	switch p {
	case kdrt.PrecisionBF16:
		return fmt.Sprintf("precision bf16 on %s: weights and activations bf16; products, gradients, master weights, AdamW moments, logits and losses fp32", be.Name())
	case kdrt.PrecisionTF32:
		return fmt.Sprintf("precision tf32 on %s: fp32 tensors, cuBLAS products in TF32 on the tensor cores", be.Name())
	}
	return fmt.Sprintf("precision fp32 on %s", be.Name())
}

// targetMask is 1 where a position has a target, 0 elsewhere.
func targetMask(targets []int32) []float32 {
	m := make([]float32, len(targets))
	for i, t := range targets {
		if t != kdrt.IgnoreIndex {
			m[i] = 1
		}
	}
	return m
}

// openCache opens the recipe's teacher cache and checks that it was made
// with the student's tokenizer and at the recipe's temperature.
func (t *trainer) openCache() error {
	if t.xt != nil {
		return t.openXTokCache()
	}
	k := t.r.Objectives.KD
	r, err := cache.Open(k.Cache)
	if err != nil {
		return err
	}
	h := r.Header()
	if t.r.Teacher != "" && filepath.Clean(h.Teacher) != filepath.Clean(t.r.Teacher) {
		r.Close()
		return fmt.Errorf("the teacher cache %s was made by teacher %s, but the recipe names teacher %s", k.Cache, h.Teacher, t.r.Teacher)
	}
	if h.TokenizerHash != t.tok.Hash() {
		r.Close()
		return fmt.Errorf("the teacher cache %s was made with another tokenizer (teacher %s): token ids would not mean the same thing; set objectives.kd.cross_tokenizer (align or uld) to distill across tokenizers", k.Cache, h.Teacher)
	}
	// The cache holds the teacher's view of the data as its template
	// rendered it; a student folder with another template renders other
	// tokens, and the cache is refused as made for other data.
	if ttok, err := tokenizer.LoadDir(h.Teacher); err == nil {
		t.noteTemplates("the teacher cache's teacher", h.Teacher, ttok)
	}
	temp := k.Temperature
	if temp == 0 {
		temp = 1
	}
	if h.Temperature != temp {
		r.Close()
		return fmt.Errorf("objectives.kd.temperature %g differs from the teacher cache's %g (%s)", temp, h.Temperature, k.Cache)
	}
	if h.Vocab > t.student.Config.Vocab {
		t.logf("teacher cache: the teacher's vocabulary (%d) is wider than the student's (%d); ids outside the student's are refused", h.Vocab, t.student.Config.Vocab)
	}
	t.cache = r
	return nil
}
