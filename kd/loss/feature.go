package loss

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/kdnative/kdnative/kd/optim"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// Feature distillation matches a student layer's hidden states with a teacher
// layer's, token by token; relation distillation matches, within each
// sequence, the pairwise cosine similarities of the tokens' hidden states.
//
// Hidden states are numbered as transformers' output_hidden_states numbers
// them (and model.Model.Hidden returns them): for a model of L layers, state
// 0 is the embedding output, state i < L the residual stream entering layer i
// (the output of layer i−1), and state L the output of the final norm.

// Feature loss kinds (FeatureConfig.Loss).
const (
	// FeatureMSE is the mean squared error between the projected student
	// hidden states and the teacher's.
	FeatureMSE = "mse"
	// FeatureCosine is the mean over tokens of 1 − cos(projected student,
	// teacher).
	FeatureCosine = "cosine"
)

// LayerPair maps student hidden state Student to teacher hidden state
// Teacher.
type LayerPair struct{ Student, Teacher int }

func (p LayerPair) String() string { return fmt.Sprintf("%d:%d", p.Student, p.Teacher) }

// FeatureConfig configures feature distillation.
type FeatureConfig struct {
	// Loss is FeatureMSE or FeatureCosine.
	Loss string
	// Project asks for a learned projection even when the student and teacher
	// widths are equal (it then starts as the identity). Differing widths
	// always need one.
	Project bool
	// Bias gives the projections a bias (initialized to zero).
	Bias bool
	// LayerMap lists the hidden states matched; ParseLayerMap reads it from
	// a recipe's string.
	LayerMap []LayerPair
}

// Validate checks the loss kind and the layer map against models of
// studentLayers and teacherLayers layers (hidden states 0…L of each).
func (c FeatureConfig) Validate(studentLayers, teacherLayers int) error {
	if err := checkFeatureKind(c.Loss); err != nil {
		return err
	}
	if len(c.LayerMap) == 0 {
		return errors.New("feature: the layer map is empty (give pairs like \"4:8,8:16\" or \"auto\")")
	}
	seen := map[LayerPair]bool{}
	for i, p := range c.LayerMap {
		if err := checkPair(p, i, p.String(), studentLayers, teacherLayers); err != nil {
			return err
		}
		if seen[p] {
			return fmt.Errorf("feature: layer map entry %d %q repeats an earlier pair", i+1, p.String())
		}
		seen[p] = true
	}
	return nil
}

// NeedsProjection reports whether hidden states of widths student and
// teacher are compared through a learned projection.
func (c FeatureConfig) NeedsProjection(student, teacher int) bool {
	return c.Project || student != teacher
}

func checkFeatureKind(kind string) error {
	if kind != FeatureMSE && kind != FeatureCosine {
		return fmt.Errorf("feature: unknown loss %q (want %q or %q)", kind, FeatureMSE, FeatureCosine)
	}
	return nil
}

func checkPair(p LayerPair, i int, entry string, studentLayers, teacherLayers int) error {
	if p.Student < 0 || p.Student > studentLayers {
		return fmt.Errorf("feature: layer map entry %d %q: student hidden state %d is out of range (the student has %d layers: hidden states 0…%d)", i+1, entry, p.Student, studentLayers, studentLayers)
	}
	if p.Teacher < 0 || p.Teacher > teacherLayers {
		return fmt.Errorf("feature: layer map entry %d %q: teacher hidden state %d is out of range (the teacher has %d layers: hidden states 0…%d)", i+1, entry, p.Teacher, teacherLayers, teacherLayers)
	}
	return nil
}

// ParseLayerMap reads a layer map for a student of studentLayers layers and
// a teacher of teacherLayers layers. spec is one of:
//
//   - "s:t,s:t,…": explicit pairs of hidden-state indices, e.g. "4:8,8:16";
//   - "auto": every student layer's output, s = 1…Ls, paired with the teacher
//     state at the same relative depth, t = round(s·Lt/Ls) (halves round up);
//   - "auto:K": K student states evenly spaced over the depth,
//     s_j = round(j·Ls/K) for j = 1…K (1 ≤ K ≤ Ls), each paired as "auto" does.
//
// Both "auto" forms end with the pair Ls:Lt, the final norms' outputs.
func ParseLayerMap(spec string, studentLayers, teacherLayers int) ([]LayerPair, error) {
	if studentLayers < 1 || teacherLayers < 1 {
		return nil, fmt.Errorf("feature: layer map for a student of %d and a teacher of %d layers", studentLayers, teacherLayers)
	}
	spec = strings.TrimSpace(spec)
	Ls, Lt := studentLayers, teacherLayers
	roundDiv := func(a, b int) int { return (2*a + b) / (2 * b) }
	if spec == "auto" || strings.HasPrefix(spec, "auto:") {
		K := Ls
		if k, ok := strings.CutPrefix(spec, "auto:"); ok {
			v, err := strconv.Atoi(strings.TrimSpace(k))
			if err != nil || v < 1 || v > Ls {
				return nil, fmt.Errorf("feature: layer map %q: K must be an integer in 1…%d (the student's layer count)", spec, Ls)
			}
			K = v
		}
		pairs := make([]LayerPair, K)
		for j := 1; j <= K; j++ {
			s := roundDiv(j*Ls, K)
			pairs[j-1] = LayerPair{Student: s, Teacher: roundDiv(s*Lt, Ls)}
		}
		return pairs, nil
	}
	if spec == "" {
		return nil, errors.New("feature: the layer map is empty (give pairs like \"4:8,8:16\" or \"auto\")")
	}
	var pairs []LayerPair
	seen := map[LayerPair]bool{}
	for i, entry := range strings.Split(spec, ",") {
		entry = strings.TrimSpace(entry)
		ss, ts, ok := strings.Cut(entry, ":")
		s, err1 := strconv.Atoi(strings.TrimSpace(ss))
		t, err2 := strconv.Atoi(strings.TrimSpace(ts))
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("feature: layer map entry %d %q: want student:teacher hidden-state indices, like \"4:8\"", i+1, entry)
		}
		p := LayerPair{Student: s, Teacher: t}
		if err := checkPair(p, i, entry, Ls, Lt); err != nil {
			return nil, err
		}
		if seen[p] {
			return nil, fmt.Errorf("feature: layer map entry %d %q repeats an earlier pair", i+1, entry)
		}
		seen[p] = true
		pairs = append(pairs, p)
	}
	return pairs, nil
}

// FormatLayerMap writes pairs as ParseLayerMap reads them ("4:8,8:16").
func FormatLayerMap(pairs []LayerPair) string {
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

// Projection is a learned linear map y = x·Wᵀ + b from the student's width In
// (Cs) to the teacher's Out (Ct), trained with the student: W [Ct, Cs] and the
// optional bias B [Ct], with gradients G and GB that FeatureLoss accumulates.
type Projection struct {
	Name    string
	In, Out int
	W, G    *kdrt.Tensor
	B, GB   *kdrt.Tensor // nil without a bias
}

// projectionStream is the second word of the PCG that initializes
// projections, so that the same seed gives other numbers than the model's.
const projectionStream = 0x6b642d70726f6a // "kd-proj"

// NewProjection allocates a projection from in to out channels. Its
// initialization is deterministic: the identity when in == out (the loss
// then starts as the unprojected one); otherwise W[o, i] ~ N(0, 1/in), drawn
// row-major as math/rand/v2's PCG(seed, 0x6b642d70726f6a).NormFloat64()/√in,
// which keeps E‖Wx‖²/‖x‖² = out/in. The bias starts at zero.
func NewProjection(be kdrt.Backend, name string, in, out int, bias bool, seed uint64) (*Projection, error) {
	if in < 1 || out < 1 {
		return nil, fmt.Errorf("feature: projection %s from %d to %d channels", name, in, out)
	}
	p := &Projection{Name: name, In: in, Out: out}
	var err error
	alloc := func(suffix string, shape ...int) *kdrt.Tensor {
		if err != nil {
			return nil
		}
		var t *kdrt.Tensor
		t, err = be.Alloc(name+suffix, kdrt.F32, shape...)
		return t
	}
	p.W, p.G = alloc(".weight", out, in), alloc(".weight.grad", out, in)
	if bias {
		p.B, p.GB = alloc(".bias", out), alloc(".bias.grad", out)
	}
	if err != nil {
		p.Free(be)
		return nil, fmt.Errorf("feature: allocating projection %s: %w", name, err)
	}
	w := make([]float32, out*in)
	if in == out {
		for i := range in {
			w[i*in+i] = 1
		}
	} else {
		r := rand.New(rand.NewPCG(seed, projectionStream))
		std := 1 / math.Sqrt(float64(in))
		for i := range w {
			w[i] = float32(r.NormFloat64() * std)
		}
	}
	if err := be.Upload(p.W, w); err != nil {
		p.Free(be)
		return nil, err
	}
	return p, nil
}

// NewProjections makes one projection per pair of cfg.LayerMap, named
// "feature.proj.S_T", or nil for a pair compared without one
// (cfg.NeedsProjection). Pair i's seed is seed + i.
func NewProjections(be kdrt.Backend, cfg FeatureConfig, student, teacher int, seed uint64) ([]*Projection, error) {
	ps := make([]*Projection, len(cfg.LayerMap))
	if !cfg.NeedsProjection(student, teacher) {
		return ps, nil
	}
	for i, pair := range cfg.LayerMap {
		p, err := NewProjection(be, fmt.Sprintf("feature.proj.%d_%d", pair.Student, pair.Teacher), student, teacher, cfg.Bias, seed+uint64(i))
		if err != nil {
			for _, q := range ps[:i] {
				q.Free(be)
			}
			return nil, err
		}
		ps[i] = p
	}
	return ps, nil
}

// Slots are the projection's parameters for the optimizer: the weight with
// weight decay, the bias without.
func (p *Projection) Slots() []optim.Slot {
	s := []optim.Slot{{Name: p.Name + ".weight", W: p.W, G: p.G, Decay: true}}
	if p.B != nil {
		s = append(s, optim.Slot{Name: p.Name + ".bias", W: p.B, G: p.GB})
	}
	return s
}

// ZeroGrad sets the projection's gradients to zero.
func (p *Projection) ZeroGrad(be kdrt.Backend) {
	be.Zero(p.G)
	if p.GB != nil {
		be.Zero(p.GB)
	}
}

// Free releases the projection's tensors.
func (p *Projection) Free(be kdrt.Backend) {
	for _, t := range []*kdrt.Tensor{p.W, p.G, p.B, p.GB} {
		if t != nil {
			be.Free(t)
		}
	}
}

// FeatureResult reports a feature or relation loss.
type FeatureResult struct {
	// Loss is the loss times the caller's scale.
	Loss float64
	// Tokens is the number of rows with a nonzero mask.
	Tokens int
	// Pairs is, for RelationLoss, the number of token pairs compared
	// (Σ over sequences of valid tokens²).
	Pairs int
}

// FeatureLoss compares student hidden states [N, Cs] with teacher hidden
// states [N, Ct] of the same tokens, the student's mapped through proj when
// proj is not nil (proj.In = Cs, proj.Out = Ct; nil needs Cs = Ct). With
// p = proj(student) and t = teacher, and mask weights m (nil: all 1; entries
// finite and ≥ 0, 0 leaves a row out), over the M rows with m ≠ 0:
//
//   - "mse": Σ_n m_n·Σ_c (p[n,c] − t[n,c])² / (M·Ct). For a 0/1 mask this is
//     torch.nn.functional.mse_loss(p[sel], t[sel]) (reduction "mean", over
//     the selected rows and all channels).
//   - "cosine": Σ_n m_n·(1 − cos(p[n], t[n])) / M, with cos as
//     torch.nn.functional.cosine_similarity(p, t, dim=-1, eps=1e-8) computes
//     it: each vector divided by max(‖·‖, eps), then their dot product.
//
// The loss is multiplied by scale. When dStudent [N, Cs] is not nil, the
// gradient (times scale) is accumulated into it and into proj.G and proj.GB;
// with dStudent nil nothing is accumulated (evaluation). Hidden states (and
// dStudent) stored in BF16 are widened to F32 first: the loss, its
// reductions and the projection are computed in F32, and the gradient is
// rounded once, when added into dStudent.
func FeatureLoss(be kdrt.Backend, student, dStudent, teacher *kdrt.Tensor, proj *Projection, mask []float32, cfg FeatureConfig, scale float64) (FeatureResult, error) {
	return inF32(be, student, dStudent, teacher, func(student, dStudent, teacher *kdrt.Tensor) (FeatureResult, error) {
		return featureLoss(be, student, dStudent, teacher, proj, mask, cfg, scale)
	})
}

// inF32 runs a feature loss on F32 hidden states: tensors stored in another
// dtype are cast into F32 scratch, and the F32 gradient is added into the
// caller's dStudent afterwards (rounded once).
func inF32(be kdrt.Backend, student, dStudent, teacher *kdrt.Tensor, f func(student, dStudent, teacher *kdrt.Tensor) (FeatureResult, error)) (FeatureResult, error) {
	low := func(t *kdrt.Tensor) bool { return t != nil && t.DType != kdrt.F32 }
	if !low(student) && !low(dStudent) && !low(teacher) {
		return f(student, dStudent, teacher)
	}
	var scratch []*kdrt.Tensor
	defer func() {
		for _, t := range scratch {
			be.Free(t)
		}
	}()
	widen := func(t *kdrt.Tensor, copyValues bool) (*kdrt.Tensor, error) {
		if !low(t) {
			return t, nil
		}
		w, err := be.Alloc(t.Name+".f32", kdrt.F32, t.Shape...)
		if err != nil {
			return nil, err
		}
		scratch = append(scratch, w)
		if copyValues {
			be.Cast(w, t)
		}
		return w, nil
	}
	s, err := widen(student, true)
	if err != nil {
		return FeatureResult{}, err
	}
	tt, err := widen(teacher, true)
	if err != nil {
		return FeatureResult{}, err
	}
	ds, err := widen(dStudent, false) // zero: the loss accumulates into it
	if err != nil {
		return FeatureResult{}, err
	}
	res, err := f(s, ds, tt)
	if err != nil || ds == dStudent || dStudent == nil {
		return res, err
	}
	back, err := be.Alloc(dStudent.Name+".grad", dStudent.DType, dStudent.Shape...)
	if err != nil {
		return res, err
	}
	scratch = append(scratch, back)
	be.Cast(back, ds)
	be.Add(dStudent, dStudent, back)
	return res, be.Sync()
}

func featureLoss(be kdrt.Backend, student, dStudent, teacher *kdrt.Tensor, proj *Projection, mask []float32, cfg FeatureConfig, scale float64) (FeatureResult, error) {
	var res FeatureResult
	if err := checkFeatureKind(cfg.Loss); err != nil {
		return res, err
	}
	if err := checkScale(scale); err != nil {
		return res, err
	}
	if student == nil || teacher == nil {
		return res, errors.New("feature: student and teacher hidden states are required")
	}
	N, Cs, Ct := student.Rows(), student.Cols(), teacher.Cols()
	if teacher.Rows() != N {
		return res, fmt.Errorf("feature: student hidden states %v and teacher hidden states %v differ in rows (tokens)", student, teacher)
	}
	if dStudent != nil && !kdrt.SameShape(dStudent.Shape, student.Shape) {
		return res, fmt.Errorf("feature: gradient %v does not match student hidden states %v", dStudent, student)
	}
	if proj == nil {
		if Cs != Ct {
			return res, fmt.Errorf("feature: student width %d and teacher width %d differ: a projection is needed", Cs, Ct)
		}
		if cfg.Project {
			return res, errors.New("feature: the configuration asks for a projection and none was given")
		}
	} else if proj.In != Cs || proj.Out != Ct || proj.W.Rows() != Ct || proj.W.Cols() != Cs {
		return res, fmt.Errorf("feature: projection %s %v does not map width %d to %d", proj.Name, proj.W, Cs, Ct)
	}
	var err error
	if res.Tokens, err = featureMaskRows("feature", mask, N); err != nil {
		return res, err
	}
	grad := dStudent != nil

	ws := newFeatureScratch(be)
	defer ws.free()
	rows := ws.alloc("feature.rows", N)
	weights := ws.alloc("feature.weights", N)
	host := make([]float32, N)
	var total float64
	switch cfg.Loss {
	case FeatureMSE:
		// d = proj(student) − teacher, built as −teacher + student·Wᵀ (+ b).
		d := ws.alloc("feature.diff", N, Ct)
		if ws.err != nil {
			return res, ws.err
		}
		be.Copy(d, teacher)
		be.Scale(d, -1)
		if proj != nil {
			be.MatMul(d, student, proj.W, false, true, 1, 1)
			if proj.B != nil {
				be.AddBias(d, proj.B)
			}
		} else {
			be.Add(d, d, student)
		}
		be.RowDot(rows, d, d)
		if err := be.Download(rows, host); err != nil {
			return res, err
		}
		for n, v := range host {
			total += featureMaskAt(mask, n) * float64(v)
		}
		total /= float64(res.Tokens) * float64(Ct)
		if grad {
			// ∂/∂p[n] = 2·m_n·d[n]/(M·Ct), times scale.
			f := 2 * scale / (float64(res.Tokens) * float64(Ct))
			if err := uploadFeatureWeights(be, weights, host, mask, f); err != nil {
				return res, err
			}
			if proj == nil {
				be.ScaleRows(dStudent, d, weights, 1)
			} else {
				be.ScaleRows(d, d, weights, 0)
				projBackward(be, proj, d, student, dStudent)
			}
		}
	case FeatureCosine:
		p := student
		if proj != nil {
			p = ws.alloc("feature.projected", N, Ct)
		}
		ph, th := ws.alloc("feature.student_unit", N, Ct), ws.alloc("feature.teacher_unit", N, Ct)
		pn, tn := ws.alloc("feature.student_norms", N), ws.alloc("feature.teacher_norms", N)
		if ws.err != nil {
			return res, ws.err
		}
		if proj != nil {
			be.MatMul(p, student, proj.W, false, true, 1, 0)
			if proj.B != nil {
				be.AddBias(p, proj.B)
			}
		}
		be.RowNormalize(ph, pn, p, kdrt.CosineEps)
		be.RowNormalize(th, tn, teacher, kdrt.CosineEps)
		be.RowDot(rows, ph, th)
		if err := be.Download(rows, host); err != nil {
			return res, err
		}
		for n, v := range host {
			total += featureMaskAt(mask, n) * (1 - float64(v))
		}
		total /= float64(res.Tokens)
		if grad {
			// ∂/∂p̂[n] = −m_n·t̂[n]/M, times scale, written over t̂.
			if err := uploadFeatureWeights(be, weights, host, mask, -scale/float64(res.Tokens)); err != nil {
				return res, err
			}
			be.ScaleRows(th, th, weights, 0)
			if proj == nil {
				be.RowNormalizeBackward(dStudent, th, ph, pn, kdrt.CosineEps)
			} else {
				be.Zero(p) // the projection's output becomes its gradient
				be.RowNormalizeBackward(p, th, ph, pn, kdrt.CosineEps)
				projBackward(be, proj, p, student, dStudent)
			}
		}
	}
	res.Loss = scale * total
	return res, be.Sync()
}

// projBackward accumulates, from dp [N, Ct] = ∂L/∂(x·Wᵀ + b), dx += dp·W,
// proj.G += dpᵀ·x and proj.GB += Σ_rows dp.
func projBackward(be kdrt.Backend, proj *Projection, dp, x, dx *kdrt.Tensor) {
	be.MatMul(dx, dp, proj.W, false, false, 1, 1)
	be.MatMul(proj.G, dp, x, true, false, 1, 1)
	if proj.GB != nil {
		be.BiasBackward(proj.GB, dp)
	}
}

// RelationLoss matches, within each of B sequences of T tokens, the pairwise
// cosine similarities of the student's token representations with the
// teacher's. student is [B·T, Cs] and teacher [B·T, Ct]; the widths may
// differ, since the similarity matrices S = Ĥ·Ĥᵀ [T, T] (Ĥ the rows divided
// by max(‖row‖, 1e-8), as torch.nn.functional.cosine_similarity does) do not
// depend on them. mask [B·T] holds token weights (nil: all 1; finite, ≥ 0,
// 0 leaves a token out, like padding or the prompt); pair (i, j) weighs
// m_i·m_j. The loss is
//
//	Σ_b Σ_{i,j} m_i·m_j·(S_s[b,i,j] − S_t[b,i,j])² / Σ_b M_b²
//
// with M_b the tokens of sequence b whose weight is nonzero: for a 0/1 mask,
// the mean over valid pairs, the diagonal included, which for one sequence is
// torch.nn.functional.mse_loss(S_s[v][:, v], S_t[v][:, v]) over its valid
// tokens v. It is multiplied by scale; when dStudent [B·T, Cs] is not nil the
// gradient (times scale) is accumulated into it. BF16 hidden states are
// widened to F32 as FeatureLoss widens them.
func RelationLoss(be kdrt.Backend, student, dStudent, teacher *kdrt.Tensor, B, T int, mask []float32, scale float64) (FeatureResult, error) {
	return inF32(be, student, dStudent, teacher, func(student, dStudent, teacher *kdrt.Tensor) (FeatureResult, error) {
		return relationLoss(be, student, dStudent, teacher, B, T, mask, scale)
	})
}

func relationLoss(be kdrt.Backend, student, dStudent, teacher *kdrt.Tensor, B, T int, mask []float32, scale float64) (FeatureResult, error) {
	var res FeatureResult
	if err := checkScale(scale); err != nil {
		return res, err
	}
	if student == nil || teacher == nil {
		return res, errors.New("relation: student and teacher hidden states are required")
	}
	N, Cs, Ct := student.Rows(), student.Cols(), teacher.Cols()
	if B < 1 || T < 1 || N != B*T || teacher.Rows() != N {
		return res, fmt.Errorf("relation: student %v and teacher %v are not %d sequences of %d tokens", student, teacher, B, T)
	}
	if dStudent != nil && !kdrt.SameShape(dStudent.Shape, student.Shape) {
		return res, fmt.Errorf("relation: gradient %v does not match student hidden states %v", dStudent, student)
	}
	var err error
	if res.Tokens, err = featureMaskRows("relation", mask, N); err != nil {
		return res, err
	}
	for b := range B {
		var m int
		for i := range T {
			if featureMaskAt(mask, b*T+i) != 0 {
				m++
			}
		}
		res.Pairs += m * m
	}
	grad := dStudent != nil

	ws := newFeatureScratch(be)
	defer ws.free()
	hs, ns := ws.alloc("relation.student_unit", N, Cs), ws.alloc("relation.student_norms", N)
	ht, nt := ws.alloc("relation.teacher_unit", N, Ct), ws.alloc("relation.teacher_norms", N)
	d := ws.alloc("relation.diff", T, T)
	rows := ws.alloc("relation.rows", N)
	hsw := hs // the student's unit rows times √m (hs itself without a mask)
	var sq *kdrt.Tensor
	if mask != nil {
		hsw, sq = ws.alloc("relation.student_weighted", N, Cs), ws.alloc("relation.sqrt_mask", N)
	}
	var dh *kdrt.Tensor
	if grad {
		dh = ws.alloc("relation.dunit", N, Cs)
	}
	if ws.err != nil {
		return res, ws.err
	}
	be.RowNormalize(hs, ns, student, kdrt.CosineEps)
	be.RowNormalize(ht, nt, teacher, kdrt.CosineEps)
	if mask != nil {
		// Scaling row i by √m_i weighs pair (i, j) of S by √(m_i·m_j), so
		// the squared difference by m_i·m_j.
		host := make([]float32, N)
		for i, m := range mask {
			host[i] = float32(math.Sqrt(float64(m)))
		}
		if err := be.Upload(sq, host); err != nil {
			return res, err
		}
		be.ScaleRows(hsw, hs, sq, 0)
		be.ScaleRows(ht, ht, sq, 0)
	}
	// L = c·Σ D², D = S_s − S_t symmetric, so ∂L/∂Ĥ_s = 4c·D·Ĥ_s.
	c := scale / float64(res.Pairs)
	for b := range B {
		r0, r1 := b*T, (b+1)*T
		sb, tb := be.Slice(hsw, r0, r1), be.Slice(ht, r0, r1)
		be.MatMul(d, tb, tb, false, true, -1, 0)
		be.MatMul(d, sb, sb, false, true, 1, 1)
		be.RowDot(be.Slice(rows, r0, r1), d, d)
		if grad {
			be.MatMul(be.Slice(dh, r0, r1), d, sb, false, false, float32(4*c), 0)
		}
	}
	host := make([]float32, N)
	if err := be.Download(rows, host); err != nil {
		return res, err
	}
	var total float64
	for _, v := range host {
		total += float64(v)
	}
	if grad {
		if mask != nil {
			be.ScaleRows(dh, dh, sq, 0)
		}
		be.RowNormalizeBackward(dStudent, dh, hs, ns, kdrt.CosineEps)
	}
	res.Loss = scale * total / float64(res.Pairs)
	return res, be.Sync()
}

// featureMaskRows validates a per-row mask of weights (nil: all rows) and counts
// its nonzero entries, refusing a mask that leaves nothing.
func featureMaskRows(what string, mask []float32, N int) (int, error) {
	if mask == nil {
		if N == 0 {
			return 0, fmt.Errorf("%s: no tokens (zero rows)", what)
		}
		return N, nil
	}
	if len(mask) != N {
		return 0, fmt.Errorf("%s: mask of %d entries for %d rows", what, len(mask), N)
	}
	var tokens int
	for i, m := range mask {
		if m < 0 || math.IsNaN(float64(m)) || math.IsInf(float64(m), 0) {
			return 0, fmt.Errorf("%s: mask entry %g at row %d must be a finite weight ≥ 0", what, m, i)
		}
		if m != 0 {
			tokens++
		}
	}
	if tokens == 0 {
		return 0, fmt.Errorf("%s: no tokens to distill (the mask is all zero)", what)
	}
	return tokens, nil
}

func featureMaskAt(mask []float32, n int) float64 {
	if mask == nil {
		return 1
	}
	return float64(mask[n])
}

// uploadFeatureWeights uploads w[n] = f·mask[n] into the F32 [N] tensor t, using
// host as scratch.
func uploadFeatureWeights(be kdrt.Backend, t *kdrt.Tensor, host, mask []float32, f float64) error {
	for n := range host {
		host[n] = float32(f * featureMaskAt(mask, n))
	}
	return be.Upload(t, host)
}

// featureScratch allocates a loss's scratch tensors and frees them together; the
// first allocation error sticks in err.
type featureScratch struct {
	be  kdrt.Backend
	all []*kdrt.Tensor
	err error
}

func newFeatureScratch(be kdrt.Backend) *featureScratch { return &featureScratch{be: be} }

func (w *featureScratch) alloc(name string, shape ...int) *kdrt.Tensor {
	if w.err != nil {
		return nil
	}
	t, err := w.be.Alloc(name, kdrt.F32, shape...)
	if err != nil {
		w.err = fmt.Errorf("loss: allocating %s%s: %w", name, kdrt.ShapeString(shape), err)
		return nil
	}
	w.all = append(w.all, t)
	return t
}

func (w *featureScratch) free() {
	for _, t := range w.all {
		w.be.Free(t)
	}
}
