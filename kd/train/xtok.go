package train

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/kdnative/kdnative/kd/cache"
	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/kd/xtok"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/gguf"
	"github.com/kdnative/kdnative/model/tokenizer"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// Cross-tokenizer distillation (objectives.kd.cross_tokenizer): the teacher's
// tokenizer differs from the student's. The data is read twice, once with
// each tokenizer (each model's own chat template under "auto"), and each
// example's two token sequences are aligned by their text (kd/xtok); the kd
// term is loss.CrossTokenizer over the aligned spans. The teacher is an
// online model (folder or GGUF) run on its own token sequences, or a teacher
// cache made over them by cache-teacher with the teacher's tokenizer.
//
// A future on-policy path (the student samples, the teacher scores) plugs
// in at xtokPair: the sample's student ids and the teacher's encoding of the
// same text make a pair like any example's, aligned the same way.

// xtokState is a cross-tokenizer run's setup.
type xtokState struct {
	mode string // uld or align
	ttok *tokenizer.Tokenizer
	// tdir is where the teacher's tokenizer came from (for messages).
	tdir   string
	vocab  int // the teacher's logits
	maxLen int // the teacher's longest sequence
	pad    int32
	cfg    loss.CrossTokenizerConfig
	match  *loss.VocabMatch
	// pairs maps a student example (by its token storage) to its teacher
	// counterpart and the spans the loss uses.
	pairs map[*int32]*xtokPair
	stats xtok.Stats
}

// xtokPair is one example as the teacher tokenized it, and its spans.
type xtokPair struct {
	teacher data.Example
	spans   []xtok.Span
}

// loadXTokTeacher loads the teacher's tokenizer and, unless a teacher
// cache stands in for it, the teacher model.
func (t *trainer) loadXTokTeacher() error {
	var err error
	if t.r.Objectives.KD.Cache == "" {
		if t.teacher, err = model.LoadDir(t.r.Teacher, t.be, model.ForPrecision(t.prec, false)...); err != nil {
			return fmt.Errorf("teacher: %w", err)
		}
		t.xt.vocab, t.xt.maxLen = t.teacher.Config.Vocab, t.teacher.Config.MaxPositions
	}
	if t.xt.ttok, err = tokenizer.LoadDir(t.r.Teacher); err != nil {
		return fmt.Errorf("teacher: %w", err)
	}
	t.xt.tdir = t.r.Teacher
	return nil
}

// openXTokCache opens a teacher cache for a cross-tokenizer run: made by the
// recipe's teacher (when it names one) with that teacher's tokenizer, at
// the recipe's temperature. The teacher's tokenizer is the recipe teacher's
// or, without one, that of the folder the cache names.
func (t *trainer) openXTokCache() error {
	k := t.r.Objectives.KD
	r, err := cache.Open(k.Cache)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		r.Close()
		return err
	}
	h := r.Header()
	if t.r.Teacher != "" && filepath.Clean(h.Teacher) != filepath.Clean(t.r.Teacher) {
		return fail(fmt.Errorf("the teacher cache %s was made by teacher %s, but the recipe names teacher %s", k.Cache, h.Teacher, t.r.Teacher))
	}
	if t.xt.ttok == nil {
		if t.xt.ttok, err = tokenizer.LoadDir(h.Teacher); err != nil {
			return fail(fmt.Errorf("the teacher cache %s needs its teacher's tokenizer to align the data, and %s gives none (set teacher: to the teacher's folder or GGUF file): %w", k.Cache, h.Teacher, err))
		}
		t.xt.tdir = h.Teacher
	}
	if h.TokenizerHash != t.xt.ttok.Hash() {
		return fail(fmt.Errorf("the teacher cache %s was made with another tokenizer than the teacher's (%s)", k.Cache, t.xt.tdir))
	}
	temp := k.Temperature
	if temp == 0 {
		temp = 1
	}
	if h.Temperature != temp {
		return fail(fmt.Errorf("objectives.kd.temperature %g differs from the teacher cache's %g (%s)", temp, h.Temperature, k.Cache))
	}
	t.xt.vocab = h.Vocab
	if k.TeacherMaxLen > 0 {
		t.xt.maxLen = k.TeacherMaxLen
	} else if gguf.IsGGUFPath(h.Teacher) {
		return fail(fmt.Errorf("objectives.kd.teacher_max_len: set it to the --max-len the teacher cache %s was made with (the teacher %s is a GGUF file, whose maximum length kdnative reads only with its weights)", k.Cache, h.Teacher))
	} else if cfg, err := model.LoadConfig(filepath.Join(h.Teacher, "config.json")); err == nil {
		t.xt.maxLen = cfg.MaxPositions // cache-teacher's default
	} else {
		return fail(fmt.Errorf("objectives.kd.teacher_max_len: set it to the --max-len the teacher cache %s was made with (%v)", k.Cache, err))
	}
	t.cache = r
	return nil
}

// setupXTok reads the data with the teacher's tokenizer, pairs it with the
// student's examples, aligns every pair and pairs the vocabularies.
func (t *trainer) setupXTok(opts data.Options) error {
	k := t.r.Objectives.KD
	x := t.xt
	if k.TeacherMaxLen > 0 {
		x.maxLen = k.TeacherMaxLen
	}
	sp := x.ttok.Special()
	x.pad = max(sp.PAD, 0)
	if sp.PAD < 0 && sp.EOS >= 0 {
		x.pad = sp.EOS
	}
	opts.MaxLen, opts.Vocab, opts.Pack, opts.BeforeSplit = x.maxLen, x.vocab, false, nil
	if t.cache != nil {
		opts.BeforeSplit = attachCache(t.cache)
	}
	ttrain, tval, _, err := data.LoadSFT(t.r.Data.Train, x.ttok, opts)
	if err != nil {
		return fmt.Errorf("objectives.kd.cross_tokenizer: reading %s with the teacher's tokenizer (%s): %w", t.r.Data.Train, x.tdir, err)
	}
	if len(ttrain) != len(t.train) || len(tval) != len(t.val) {
		return fmt.Errorf("objectives.kd.cross_tokenizer: %s gives %d training and %d validation examples with the student's tokenizer but %d and %d with the teacher's (%s); the two must read the same lines",
			t.r.Data.Train, len(t.train), len(t.val), len(ttrain), len(tval), x.tdir)
	}
	al := xtok.Aligner{Student: t.tok, Teacher: x.ttok}
	x.pairs = make(map[*int32]*xtokPair, len(t.train)+len(t.val))
	add := func(which string, s, te []data.Example) error {
		for i := range s {
			p, st, err := xtokAlign(&al, s[i], te[i])
			if err != nil {
				return fmt.Errorf("objectives.kd.cross_tokenizer: %s example %d of %s: %w", which, i, t.r.Data.Train, err)
			}
			x.pairs[&s[i].Tokens[0]] = p
			if which == "training" {
				x.stats.Add(st)
			}
		}
		return nil
	}
	if err := add("training", t.train, ttrain); err != nil {
		return err
	}
	if err := add("validation", t.val, tval); err != nil {
		return err
	}
	if x.stats.Aligned == 0 {
		return fmt.Errorf("objectives.kd.cross_tokenizer: no response token of %s aligns with the teacher's tokens: the two tokenizations share no text", t.r.Data.Train)
	}

	Vs, Vt := t.student.Config.Vocab, x.vocab
	m := xtok.AllFree(Vs, Vt)
	x.cfg = loss.CrossTokenizerConfig{Temperature: t.kd.Temperature, NoTSquared: t.kd.NoTSquared, UnmatchedWeight: 1}
	if x.mode == "align" {
		m = xtok.MatchVocab(t.tok, x.ttok, Vs, Vt)
		a := float64(len(m.Pairs)) / float64(Vt) // GOLD's adaptive weight
		if k.MatchedWeight != nil {
			a = *k.MatchedWeight
		}
		x.cfg.MatchedWeight, x.cfg.UnmatchedWeight = a, 1-a
	}
	if x.match, err = loss.NewVocabMatch(t.be, m.Pairs, m.StudentFree, m.TeacherFree); err != nil {
		return err
	}
	t.logf("kd: cross-tokenizer (%s) from the teacher's tokenizer %s: %s", x.mode, x.tdir, x.stats)
	if x.mode == "align" {
		t.logf("kd: the vocabularies (%d and %d ids) share %d tokens: forward KL on them × %.4g, ULD on the rest × %.4g",
			Vs, Vt, len(m.Pairs), x.cfg.MatchedWeight, x.cfg.UnmatchedWeight)
	}
	return nil
}

// xtokAlign aligns one example's two tokenizations and keeps the spans the
// loss can use: every student token a target, and, for a cached teacher,
// every teacher token with an entry.
func xtokAlign(al *xtok.Aligner, s, te data.Example) (*xtokPair, xtok.Stats, error) {
	spans, err := al.Align(s.Tokens, te.Tokens)
	if err != nil {
		return nil, xtok.Stats{}, err
	}
	target := make([]bool, len(s.Tokens))
	for k := 1; k < len(s.Labels); k++ {
		target[k] = s.Labels[k] != kdrt.IgnoreIndex
	}
	spans, st, err := xtok.Targets(spans, target)
	if err != nil {
		return nil, st, err
	}
	if te.TopK != nil {
		kept := spans[:0]
		st.Spans, st.Aligned, st.MultiStudent, st.MultiTeacher = 0, 0, 0, 0
		for _, sp := range spans {
			ok := true
			for k := sp.T0; ok && k < sp.T1; k++ {
				ok = te.TopK.Has[k]
			}
			if !ok {
				continue
			}
			kept = append(kept, sp)
			st.Count(sp)
		}
		spans = kept
	}
	return &xtokPair{teacher: te, spans: spans}, st, nil
}

// xtokKD adds the cross-tokenizer kd term of one micro-batch: the teacher's
// rows for the batch's examples, and the aligned rows of both sides.
func (t *trainer) xtokKD(st *stepStats, rows []data.Example, b model.Batch, h *kdrt.Tensor, head loss.Head, dh *kdrt.Tensor, w float64) error {
	x := t.xt
	trows := make([]data.Example, len(rows))
	pairs := make([]*xtokPair, len(rows))
	for i, r := range rows {
		p := x.pairs[&r.Tokens[0]]
		if p == nil {
			return errors.New("kd: a batch row has no teacher counterpart (cross-tokenizer pairing lost)")
		}
		trows[i], pairs[i] = p.teacher, p
	}
	tb, err := data.MakeBatch(trows, x.pad, 0)
	if err != nil {
		return err
	}
	var ar loss.AlignedRows
	for i, p := range pairs {
		s, te := rows[i].Tokens, p.teacher.Tokens
		for _, sp := range p.spans {
			g := int32(len(ar.Student))
			// Token k is predicted by row k − 1 of its sequence.
			ar.Student = append(ar.Student, int32(i*b.T+sp.S1-2))
			ar.Teacher = append(ar.Teacher, int32(i*tb.T+sp.T1-2))
			for k := sp.S0; k < sp.S1-1; k++ {
				ar.StudentPrefix = append(ar.StudentPrefix, loss.Prefix{Span: g, Row: int32(i*b.T + k - 1), Token: s[k]})
			}
			for k := sp.T0; k < sp.T1-1; k++ {
				ar.TeacherPrefix = append(ar.TeacherPrefix, loss.Prefix{Span: g, Row: int32(i*tb.T + k - 1), Token: te[k]})
			}
		}
	}
	if len(ar.Student) == 0 {
		return nil // nothing of this batch aligns: no kd term
	}
	var teacher loss.Teacher
	if t.teacher != nil {
		th, err := t.teacher.InferHidden(model.Batch{B: tb.B, T: tb.T, IDs: tb.IDs})
		if err != nil {
			return fmt.Errorf("teacher: %w", err)
		}
		teacher = loss.TeacherHidden{Hidden: th, Head: t.teacher.Head().W}
	} else {
		ids, lps, tails, _, K, err := data.MakeTopK(trows, tb.T)
		if err != nil {
			return err
		}
		if K == 0 {
			return errors.New("kd: the teacher cache gave this batch no entries")
		}
		teacher = loss.TeacherTopKHost{K: K, Vocab: x.vocab, IDs: ids, LogProbs: lps, Tail: tails}
	}
	weight := t.r.Objectives.KD.Weight
	res, err := loss.CrossTokenizer(t.be, h, head, dh, teacher, ar, x.match, x.cfg, weight*w, t.lossOpt)
	if err != nil {
		return err
	}
	st.add(&st.kd, weight, res.Loss)
	return nil
}
