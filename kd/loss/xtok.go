package loss

import (
	"errors"
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// Cross-tokenizer distillation (objectives.kd.cross_tokenizer): the student
// and the teacher tokenize the text differently, so their rows do not pair
// one to one. kd/xtok aligns the two token sequences into spans of equal
// text; for each span this loss compares the distribution that predicted
// the span's last token on each side, each scaled by the probabilities its
// model gave the span's earlier tokens — the span's joint probability by the
// chain rule, GOLD's "bayesian" merge (TRL GOLDTrainer,
// uld_token_merge_strategy="bayesian") — with runtime's
// CrossTokenizerDivergence: forward KL over the ids both vocabularies have
// and Universal Logit Distillation (sorted L1) over the rest.

// CrossTokenizerConfig configures CrossTokenizer.
type CrossTokenizerConfig struct {
	// Temperature τ divides both models' logits (must be > 0).
	Temperature float64
	// NoTSquared turns off the τ² factor (KDConfig's Hinton convention).
	NoTSquared bool
	// MatchedWeight multiplies the forward KL over the matched ids,
	// UnmatchedWeight the sorted L1 over the rest (ULD alone: 0 and 1;
	// GOLD's adaptive weights: M/Vt and 1 − M/Vt for M matched ids). The
	// sorted term is left out, as GOLD leaves it out, when every id of
	// either side is matched.
	MatchedWeight, UnmatchedWeight float64
}

// Validate reports a configuration outside the loss's domain.
func (c CrossTokenizerConfig) Validate() error {
	switch {
	case !(c.Temperature > 0) || math.IsInf(c.Temperature, 0):
		return fmt.Errorf("kd: temperature %g must be positive", c.Temperature)
	case !(c.MatchedWeight >= 0) || math.IsInf(c.MatchedWeight, 0) || !(c.UnmatchedWeight >= 0) || math.IsInf(c.UnmatchedWeight, 0):
		return fmt.Errorf("kd: cross-tokenizer weights %g (matched) and %g (unmatched) must be finite and ≥ 0", c.MatchedWeight, c.UnmatchedWeight)
	case c.MatchedWeight == 0 && c.UnmatchedWeight == 0:
		return errors.New("kd: cross-tokenizer weights are both 0: nothing to distill")
	}
	return nil
}

// Prefix is one of a span's earlier tokens: Row is the row whose
// distribution predicted it and Token the token.
type Prefix struct{ Span, Row, Token int32 }

// AlignedRows are the rows CrossTokenizer compares: for span g, the student
// row Student[g] and the teacher row Teacher[g] that predicted the span's
// last token on each side, and the spans' earlier tokens on each side
// (StudentPrefix, TeacherPrefix), whose probabilities scale the compared
// distributions.
type AlignedRows struct {
	Student, Teacher             []int32
	StudentPrefix, TeacherPrefix []Prefix
}

// VocabMatch is a student–teacher vocabulary match on a backend (see
// runtime.VocabMatch), made once per run by NewVocabMatch.
type VocabMatch struct {
	kdrt.VocabMatch
	// M is the number of matched pairs, Vs and Vt the vocabularies.
	M, Vs, Vt int
	be        kdrt.Backend
}

// NewVocabMatch uploads a vocabulary match: pairs (student id, teacher id)
// and each side's other ids in increasing order, together covering [0, Vs)
// and [0, Vt) once (kd/xtok's MatchVocab makes them).
func NewVocabMatch(be kdrt.Backend, pairs [][2]int32, studentFree, teacherFree []int32) (*VocabMatch, error) {
	m := &VocabMatch{M: len(pairs), Vs: len(pairs) + len(studentFree), Vt: len(pairs) + len(teacherFree), be: be}
	seenS, seenT := make([]bool, m.Vs), make([]bool, m.Vt)
	mark := func(seen []bool, id int32, side string) error {
		if id < 0 || int(id) >= len(seen) || seen[id] {
			return fmt.Errorf("kd: the vocabulary match lists %s id %d outside [0, %d) or twice", side, id, len(seen))
		}
		seen[id] = true
		return nil
	}
	flat := make([]int32, 0, 2*len(pairs))
	for _, p := range pairs {
		if err := mark(seenS, p[0], "student"); err != nil {
			return nil, err
		}
		if err := mark(seenT, p[1], "teacher"); err != nil {
			return nil, err
		}
		flat = append(flat, p[0], p[1])
	}
	for k, id := range studentFree {
		if err := mark(seenS, id, "student"); err != nil {
			return nil, err
		}
		if k > 0 && studentFree[k-1] > id {
			return nil, errors.New("kd: the vocabulary match's free student ids must increase")
		}
	}
	for k, id := range teacherFree {
		if err := mark(seenT, id, "teacher"); err != nil {
			return nil, err
		}
		if k > 0 && teacherFree[k-1] > id {
			return nil, errors.New("kd: the vocabulary match's free teacher ids must increase")
		}
	}
	up := func(name string, vals []int32, shape ...int) (*kdrt.Tensor, error) {
		t, err := be.Alloc(name, kdrt.I32, shape...)
		if err != nil {
			return nil, err
		}
		if err := be.UploadInt32(t, vals); err != nil {
			be.Free(t)
			return nil, err
		}
		return t, nil
	}
	var err error
	if m.M > 0 {
		if m.Pairs, err = up("xtok.pairs", flat, m.M, 2); err != nil {
			return nil, err
		}
	}
	if m.StudentFree, err = up("xtok.student_free", studentFree, len(studentFree)); err != nil {
		m.Free()
		return nil, err
	}
	if m.TeacherFree, err = up("xtok.teacher_free", teacherFree, len(teacherFree)); err != nil {
		m.Free()
		return nil, err
	}
	return m, nil
}

// Free releases the match's tensors.
func (m *VocabMatch) Free() {
	for _, t := range []*kdrt.Tensor{m.Pairs, m.StudentFree, m.TeacherFree} {
		if t != nil {
			m.be.Free(t)
		}
	}
}

// TeacherTopKHost is a sparse teacher held on the host, row by row: K ids
// and their log-probabilities (at the loss's temperature; −Inf marks an
// unused slot), and optionally the log of the mass outside them as the
// teacher measured it (a teacher cache stores it; without it 1 − Σ top-k).
// Vocab is the teacher's vocabulary size. Cross-tokenizer distillation
// needs the teacher's whole distribution and spreads the tail's mass evenly
// over the ids outside the top-k.
type TeacherTopKHost struct {
	K, Vocab int
	IDs      []int32   // [Nt·K]
	LogProbs []float32 // [Nt·K]
	Tail     []float32 // [Nt] or nil
}

func (TeacherTopKHost) teacher() {}

// tailShareFloor is the least total mass the ids outside a sparse teacher's
// top-k are given (as SparseDivergence floors its tail bin).
const tailShareFloor = 1e-10

// rowDist returns a top-k row's normalizer: Z = Σ exp(lp) + tail mass, the
// log of each outside id's share (log(tail/(V − k))), the number of used
// slots, and whether the row is usable.
func (t TeacherTopKHost) rowDist(r int) (logZ, logShare float64, used int) {
	var sum float64
	for k := range t.K {
		if lp := t.LogProbs[r*t.K+k]; !math.IsInf(float64(lp), -1) {
			sum += math.Exp(float64(lp))
			used++
		}
	}
	outside := t.Vocab - used
	if outside == 0 {
		return math.Log(sum), math.Inf(-1), used
	}
	var tail float64
	if t.Tail != nil {
		tail = math.Exp(float64(t.Tail[r]))
	} else {
		tail = 1 - sum
	}
	tail = math.Max(tail, tailShareFloor)
	return math.Log(sum + tail), math.Log(tail / float64(outside)), used
}

// logProb is the log-probability of token id under row r's distribution as
// the loss sees it (top-k entry, or an even share of the tail).
func (t TeacherTopKHost) logProb(r int, id int32) float64 {
	logZ, logShare, _ := t.rowDist(r)
	for k := range t.K {
		if t.IDs[r*t.K+k] == id {
			if lp := t.LogProbs[r*t.K+k]; !math.IsInf(float64(lp), -1) {
				return float64(lp) - logZ
			}
		}
	}
	return logShare - logZ
}

// CrossTokenizer is the cross-tokenizer distillation loss between the
// student, whose final hidden states [Ns, C] and lm_head are given, and a
// teacher of another tokenizer — TeacherHidden or TeacherLogits over the
// teacher's own Nt rows, or TeacherTopKHost — over the aligned spans of
// rows, averaged over the spans, times τ² (unless NoTSquared) and times
// scale. With dHidden or head.G set it accumulates the gradient, which
// reaches the rows of the spans' last tokens through the compared
// distribution and the rows of their earlier tokens through the merge
// scale. Buffers are a chunk of spans at a time: no [N × V] tensor exists.
func CrossTokenizer(be kdrt.Backend, hidden *kdrt.Tensor, head Head, dHidden *kdrt.Tensor, teacher Teacher, rows AlignedRows,
	match *VocabMatch, cfg CrossTokenizerConfig, scale float64, opt Options) (KDResult, error) {
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
	Ns, Vs := hidden.Rows(), head.W.Rows()
	G := len(rows.Student)
	if G == 0 || len(rows.Teacher) != G {
		return res, fmt.Errorf("kd: %d student and %d teacher rows for the aligned spans (need the same number, at least one)", G, len(rows.Teacher))
	}
	var Nt, Vt int
	switch t := teacher.(type) {
	case TeacherHidden:
		if t.Hidden == nil || t.Head == nil || t.Hidden.Cols() != t.Head.Cols() {
			return res, fmt.Errorf("kd: teacher hidden states %v and lm_head %v do not fit", t.Hidden, t.Head)
		}
		Nt, Vt = t.Hidden.Rows(), t.Head.Rows()
	case TeacherLogits:
		if t.Logits == nil {
			return res, errors.New("kd: no teacher logits")
		}
		Nt, Vt = t.Logits.Rows(), t.Logits.Cols()
	case TeacherTopKHost:
		if t.K <= 0 || t.K > t.Vocab || len(t.IDs) != len(t.LogProbs) || len(t.IDs)%t.K != 0 || (t.Tail != nil && len(t.Tail) != len(t.IDs)/t.K) {
			return res, fmt.Errorf("kd: top-k teacher of k = %d over %d ids: %d ids, %d log-probabilities and %d tails do not fit", t.K, t.Vocab, len(t.IDs), len(t.LogProbs), len(t.Tail))
		}
		Nt, Vt = len(t.IDs)/t.K, t.Vocab
	default:
		return res, fmt.Errorf("kd: cross-tokenizer distillation cannot use a teacher of type %T", teacher)
	}
	if match == nil || match.Vs != Vs || match.Vt != Vt {
		return res, fmt.Errorf("kd: the vocabulary match does not fit a student vocabulary of %d and a teacher vocabulary of %d", Vs, Vt)
	}
	for g := range G {
		if s, tr := rows.Student[g], rows.Teacher[g]; s < 0 || int(s) >= Ns || tr < 0 || int(tr) >= Nt {
			return res, fmt.Errorf("kd: span %d compares student row %d and teacher row %d, outside [0, %d) and [0, %d)", g, s, tr, Ns, Nt)
		}
	}
	for _, side := range []struct {
		name    string
		pre     []Prefix
		rows, V int
	}{{"student", rows.StudentPrefix, Ns, Vs}, {"teacher", rows.TeacherPrefix, Nt, Vt}} {
		for _, p := range side.pre {
			if p.Span < 0 || int(p.Span) >= G || p.Row < 0 || int(p.Row) >= side.rows || p.Token < 0 || int(p.Token) >= side.V {
				return res, fmt.Errorf("kd: a %s prefix token (span %d, row %d, token %d) is outside %d spans, %d rows or a vocabulary of %d", side.name, p.Span, p.Row, p.Token, G, side.rows, side.V)
			}
		}
	}
	if tk, ok := teacher.(TeacherTopKHost); ok {
		if err := validateTopKHost(tk, rows); err != nil {
			return res, err
		}
	}
	res.Tokens = G

	grad := dHidden != nil || head.G != nil
	C := hidden.Cols()
	perRow := 4*Vs + 4*Vt + hidden.DType.Size()*C + 64
	if grad {
		perRow += 4*Vs + 4*C
	}
	var tHidden *kdrt.Tensor
	if t, ok := teacher.(TeacherHidden); ok {
		tHidden = t.Hidden
		perRow += t.Hidden.DType.Size() * t.Hidden.Cols()
	}
	maxRows := max(G, len(rows.StudentPrefix), len(rows.TeacherPrefix))
	R := opt.chunkRows(maxRows, perRow)
	if tk, ok := teacher.(TeacherTopKHost); ok {
		// The top-k is scattered through a [R·Vt, 1] view with I32 indices.
		R = max(1, min(R, math.MaxInt32/Vt-1, math.MaxInt32/max(tk.K, 1)-1))
	}
	x, err := newXTokBufs(be, R, Vs, Vt, hidden, tHidden, grad, teacher)
	if err != nil {
		return res, err
	}
	defer x.free()

	invT := 1 / cfg.Temperature
	factor := scale / float64(G)
	if !cfg.NoTSquared {
		factor *= cfg.Temperature * cfg.Temperature
	}
	// The merge scales: log c = Σ log p(earlier token) per span and side.
	slog, tlog := make([]float64, G), make([]float64, G)
	studentOf := func(r []int32) (*kdrt.Tensor, error) {
		l, _, err := x.studentLogits(r, hidden, head.W)
		return l, err
	}
	if err := x.prefixLogProbs(slog, rows.StudentPrefix, studentOf, invT); err != nil {
		return res, err
	}
	if tk, ok := teacher.(TeacherTopKHost); ok {
		for _, p := range rows.TeacherPrefix {
			tlog[p.Span] += tk.logProb(int(p.Row), p.Token)
		}
	} else {
		teacherOf := func(r []int32) (*kdrt.Tensor, error) { return x.teacherRows(teacher, r, invT) }
		if err := x.prefixLogProbs(tlog, rows.TeacherPrefix, teacherOf, invT); err != nil {
			return res, err
		}
	}

	// The spans.
	p := kdrt.CrossTokenizerParams{Temperature: float32(cfg.Temperature), MatchedWeight: float32(cfg.MatchedWeight), UnmatchedWeight: float32(cfg.UnmatchedWeight)}
	if match.M == match.Vs || match.M == match.Vt {
		// As GOLD: the sorted term only when both sides have ids outside
		// the shared vocabulary. With one side empty it would be the other
		// side's unshared mass alone: a constant for the teacher's, and for
		// the student's a push of its own unshared tokens (a BPE student's
		// merges, against a byte-level teacher) towards zero.
		p.UnmatchedWeight = 0
	}
	dslog := make([]float32, G)
	needScaleGrad := grad && len(rows.StudentPrefix) > 0
	for g0 := 0; g0 < G; g0 += R {
		g1 := min(g0+R, G)
		n := g1 - g0
		for i := range n {
			x.hostW[i] = float32(factor)
		}
		weights, losses := x.view(x.weights, n), x.view(x.losses, n)
		sl, tl := x.view(x.slog, n), x.view(x.tlog, n)
		if err := firstErr(be.Upload(weights, x.hostW[:n]), be.Upload(sl, to32(slog[g0:g1])), be.Upload(tl, to32(tlog[g0:g1]))); err != nil {
			return res, err
		}
		logits, gathered, err := x.studentLogits(rows.Student[g0:g1], hidden, head.W)
		if err != nil {
			return res, err
		}
		tlogits, err := x.teacherRows(teacher, rows.Teacher[g0:g1], invT)
		if err != nil {
			return res, err
		}
		var dl, dsl *kdrt.Tensor
		if grad {
			dl = x.view(x.dlogits, n)
			be.Zero(dl)
		}
		if needScaleGrad {
			dsl = x.view(x.dslog, n)
		}
		be.CrossTokenizerDivergence(losses, dl, dsl, logits, tlogits, sl, tl, weights, match.VocabMatch, p)
		s, err := x.sumLosses(n)
		if err != nil {
			return res, err
		}
		res.Loss += s
		if needScaleGrad {
			if err := be.Download(dsl, dslog[g0:g1]); err != nil {
				return res, err
			}
		}
		if grad {
			x.backward(dl, gathered, dHidden, head, n)
		}
	}
	if needScaleGrad {
		if err := x.prefixBackward(rows.StudentPrefix, dslog, hidden, dHidden, head, invT); err != nil {
			return res, err
		}
	}
	return res, be.Sync()
}

// validateTopKHost checks the sparse teacher's rows that the spans use.
func validateTopKHost(t TeacherTopKHost, rows AlignedRows) error {
	check := func(r int32) error {
		seen := map[int32]bool{}
		for k := range t.K {
			id, lp := t.IDs[int(r)*t.K+k], t.LogProbs[int(r)*t.K+k]
			if id < 0 || int(id) >= t.Vocab {
				return fmt.Errorf("kd: top-k teacher id %d at row %d is outside its vocabulary [0, %d)", id, r, t.Vocab)
			}
			if seen[id] {
				return fmt.Errorf("kd: top-k teacher repeats id %d in row %d", id, r)
			}
			seen[id] = true
			if math.IsNaN(float64(lp)) || lp > 1e-6 {
				return fmt.Errorf("kd: top-k teacher log-probability %g at row %d is not a log-probability", lp, r)
			}
		}
		if t.Tail != nil && (math.IsNaN(float64(t.Tail[r])) || t.Tail[r] > 1e-6) {
			return fmt.Errorf("kd: top-k teacher tail %g at row %d is not the log of a mass", t.Tail[r], r)
		}
		return nil
	}
	for _, r := range rows.Teacher {
		if err := check(r); err != nil {
			return err
		}
	}
	for _, p := range rows.TeacherPrefix {
		if err := check(p.Row); err != nil {
			return err
		}
	}
	return nil
}

func to32(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// xtokBufs are CrossTokenizer's per-chunk buffers.
type xtokBufs struct {
	*chunkBufs
	be                         kdrt.Backend
	ids, tids                  *kdrt.Tensor // I32 [R]: gathered rows
	gathered, dgathered, tgath *kdrt.Tensor // [R, C] and [R, Ct] in the hidden states' dtypes
	slog, tlog, dslog          *kdrt.Tensor // F32 [R]
	scatterIDs, scatterVals    *kdrt.Tensor // I32 [R·K], F32 [R·K]: a sparse teacher's top-k
	hostIDs, hostT, hostTopIDs []int32
	hostF                      []float32
	extra                      []*kdrt.Tensor
}

func newXTokBufs(be kdrt.Backend, R, Vs, Vt int, hidden, tHidden *kdrt.Tensor, grad bool, teacher Teacher) (*xtokBufs, error) {
	c, err := newChunkBufs(be, R, Vs, Vt, grad, true, hidden.DType)
	if err != nil {
		return nil, err
	}
	x := &xtokBufs{chunkBufs: c, be: be, hostIDs: make([]int32, R), hostT: make([]int32, R)}
	alloc := func(name string, dt kdrt.DType, shape ...int) *kdrt.Tensor {
		if err != nil {
			return nil
		}
		var t *kdrt.Tensor
		t, err = be.Alloc(name, dt, shape...)
		x.extra = append(x.extra, t)
		return t
	}
	x.ids = alloc("xtok.rows", kdrt.I32, R)
	x.tids = alloc("xtok.teacher_rows", kdrt.I32, R)
	x.gathered = alloc("xtok.hidden", hidden.DType, R, hidden.Cols())
	if grad {
		x.dgathered = alloc("xtok.grad_hidden", hidden.DType, R, hidden.Cols())
	}
	if tHidden != nil {
		x.tgath = alloc("xtok.teacher_hidden", tHidden.DType, R, tHidden.Cols())
	}
	x.slog = alloc("xtok.slog", kdrt.F32, R)
	x.tlog = alloc("xtok.tlog", kdrt.F32, R)
	x.dslog = alloc("xtok.dslog", kdrt.F32, R)
	if tk, ok := teacher.(TeacherTopKHost); ok {
		x.scatterIDs = alloc("xtok.topk_ids", kdrt.I32, R*tk.K)
		x.scatterVals = alloc("xtok.topk_vals", kdrt.F32, R*tk.K, 1)
		x.hostF, x.hostTopIDs = make([]float32, R*tk.K), make([]int32, R*tk.K)
	}
	if err != nil {
		x.free()
		return nil, fmt.Errorf("loss: allocating cross-tokenizer buffers (%d rows): %w", R, err)
	}
	return x, nil
}

func (x *xtokBufs) free() {
	x.chunkBufs.free()
	for _, t := range x.extra {
		if t != nil {
			x.be.Free(t)
		}
	}
}

// studentLogits gathers the student's hidden rows and computes their
// logits: logits [n, Vs] = hidden[rows]·Wᵀ.
func (x *xtokBufs) studentLogits(rows []int32, hidden, W *kdrt.Tensor) (logits, gathered *kdrt.Tensor, err error) {
	n := len(rows)
	ids := x.view(x.ids, n)
	if err := x.be.UploadInt32(ids, rows); err != nil {
		return nil, nil, err
	}
	gathered = x.view(x.gathered, n)
	x.be.Embedding(gathered, ids, hidden)
	logits = x.view(x.logits, n)
	x.be.MatMul(logits, gathered, W, false, true, 1, 0)
	return logits, gathered, nil
}

// teacherRows fills the teacher buffer with the given teacher rows' logits
// (a sparse teacher's as logits whose softmax at temperature τ is its
// distribution with the tail spread evenly).
func (x *xtokBufs) teacherRows(teacher Teacher, rows []int32, invT float64) (*kdrt.Tensor, error) {
	n := len(rows)
	be := x.be
	out := x.view(x.teacher, n)
	tids := x.view(x.tids, n)
	switch t := teacher.(type) {
	case TeacherHidden:
		if err := be.UploadInt32(tids, rows); err != nil {
			return nil, err
		}
		tg := x.view(x.tgath, n)
		be.Embedding(tg, tids, t.Hidden)
		be.MatMul(out, tg, t.Head, false, true, 1, 0)
	case TeacherLogits:
		if err := be.UploadInt32(tids, rows); err != nil {
			return nil, err
		}
		be.Embedding(out, tids, t.Logits)
	case TeacherTopKHost:
		// Logits τ·(lp − log share) at the top-k ids and 0 elsewhere: their
		// softmax at τ gives each top-k id exp(lp)/Z and every other id the
		// tail's even share. Scattered by EmbeddingBackward on a [n·Vt, 1]
		// view of the zeroed buffer.
		be.Zero(out)
		T := 1 / invT
		K, Vt := t.K, t.Vocab
		ids, vals := x.hostTopIDs[:0], x.hostF[:0]
		for i, r := range rows {
			_, logShare, _ := t.rowDist(int(r))
			for k := range K {
				lp := t.LogProbs[int(r)*K+k]
				if math.IsInf(float64(lp), -1) {
					continue // an unused slot: its id shares the tail
				}
				v := float64(lp)
				if !math.IsInf(logShare, -1) { // K = V: no tail to share
					v -= logShare
				}
				ids = append(ids, int32(i*Vt)+t.IDs[int(r)*K+k])
				vals = append(vals, float32(T*v))
			}
		}
		if len(ids) == 0 {
			return out, nil
		}
		si, sv := be.Slice(x.scatterIDs, 0, len(ids)), be.Slice(x.scatterVals, 0, len(ids))
		if err := firstErr(be.UploadInt32(si, ids), be.Upload(sv, vals)); err != nil {
			return nil, err
		}
		flat := &kdrt.Tensor{Shape: []int{n * Vt, 1}, DType: kdrt.F32, Storage: out.Storage, Name: out.Name + ".flat"}
		be.EmbeddingBackward(flat, sv, si)
	}
	return out, nil
}

// backward takes the chunk's logit gradient to the gathered student rows
// (scattered into dHidden) and to the lm_head.
func (x *xtokBufs) backward(dl, gathered, dHidden *kdrt.Tensor, head Head, n int) {
	if x.dlow != nil { // BF16 hidden states: the gradient is rounded only as the products' operand
		low := x.view(x.dlow, n)
		x.be.Cast(low, dl)
		dl = low
	}
	if dHidden != nil {
		dg := x.view(x.dgathered, n)
		x.be.MatMul(dg, dl, head.W, false, false, 1, 0)
		x.be.EmbeddingBackward(dHidden, dg, x.view(x.ids, n))
	}
	if head.G != nil {
		x.be.MatMul(head.G, dl, gathered, true, false, 1, 1)
	}
}

// prefixLogProbs adds, for each prefix token, log softmax(row/τ)[token] to
// its span's entry of out; logitsOf computes the raw logits of n rows.
func (x *xtokBufs) prefixLogProbs(out []float64, pre []Prefix, logitsOf func(rows []int32) (*kdrt.Tensor, error), invT float64) error {
	be := x.be
	R := x.rows
	for p0 := 0; p0 < len(pre); p0 += R {
		p1 := min(p0+R, len(pre))
		n := p1 - p0
		chunk := pre[p0:p1]
		for i, p := range chunk {
			x.hostIDs[i], x.hostT[i] = p.Row, p.Token
		}
		logits, err := logitsOf(x.hostIDs[:n])
		if err != nil {
			return err
		}
		be.Scale(logits, float32(invT))
		tg := x.view(x.targets, n)
		if err := be.UploadInt32(tg, x.hostT[:n]); err != nil {
			return err
		}
		ls := x.view(x.losses, n)
		be.CrossEntropy(ls, logits, tg)
		if err := be.Download(ls, x.hostL[:n]); err != nil {
			return err
		}
		for i, p := range chunk {
			out[p.Span] -= float64(x.hostL[i])
		}
	}
	return nil
}

// prefixBackward takes the gradient of the loss with respect to each span's
// student merge scale, dslog[span], to the rows of the span's earlier
// tokens: ∂ log q(token)/∂s = (onehot − softmax(s/τ))/τ, which
// CrossEntropyBackward gives with weight dslog and scale −1/τ.
func (x *xtokBufs) prefixBackward(pre []Prefix, dslog []float32, hidden, dHidden *kdrt.Tensor, head Head, invT float64) error {
	be := x.be
	R := x.rows
	for p0 := 0; p0 < len(pre); p0 += R {
		p1 := min(p0+R, len(pre))
		n := p1 - p0
		chunk := pre[p0:p1]
		for i, p := range chunk {
			x.hostIDs[i], x.hostT[i] = p.Row, p.Token
			x.hostW[i] = dslog[p.Span]
		}
		logits, gathered, err := x.studentLogits(x.hostIDs[:n], hidden, head.W)
		if err != nil {
			return err
		}
		be.Scale(logits, float32(invT))
		tg, w := x.view(x.targets, n), x.view(x.weights, n)
		if err := firstErr(be.UploadInt32(tg, x.hostT[:n]), be.Upload(w, x.hostW[:n])); err != nil {
			return err
		}
		dl := x.view(x.dlogits, n)
		be.Zero(dl)
		be.CrossEntropyBackward(dl, logits, tg, w, float32(-invT))
		x.backward(dl, gathered, dHidden, head, n)
	}
	return nil
}
