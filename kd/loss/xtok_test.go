package loss_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/internal/ref"
	"github.com/kdnative/kdnative/kd/loss"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// xtokProblem is a student (Ns rows, width C, vocabulary Vs) and a teacher
// of another tokenizer (Nt rows, width Ct, vocabulary Vt), M matched ids,
// and aligned spans with earlier tokens on both sides.
type xtokProblem struct {
	Ns, C, Vs, Nt, Ct, Vt int
	h, w, th, tw          []float64
	pairs                 [][2]int32
	sfree, tfree          []int32
	rows                  loss.AlignedRows
}

func newXTokProblem(seed uint64, M int) *xtokProblem {
	r := rand.New(rand.NewPCG(seed, 7))
	g := func(n int, std float64) []float64 {
		x := make([]float64, n)
		for i := range x {
			x[i] = r.NormFloat64() * std
		}
		return x
	}
	p := &xtokProblem{Ns: 9, C: 5, Vs: 11, Nt: 12, Ct: 6, Vt: 8}
	p.h, p.w, p.th, p.tw = g(p.Ns*p.C, 1), g(p.Vs*p.C, 0.8), g(p.Nt*p.Ct, 1), g(p.Vt*p.Ct, 0.8)
	sp, tp := r.Perm(p.Vs)[:M], r.Perm(p.Vt)[:M]
	for k := range M {
		p.pairs = append(p.pairs, [2]int32{int32(sp[k]), int32(tp[k])})
	}
	for i := range int32(p.Vs) {
		if !slices.ContainsFunc(p.pairs, func(q [2]int32) bool { return q[0] == i }) {
			p.sfree = append(p.sfree, i)
		}
	}
	for j := range int32(p.Vt) {
		if !slices.ContainsFunc(p.pairs, func(q [2]int32) bool { return q[1] == j }) {
			p.tfree = append(p.tfree, j)
		}
	}
	// Five spans: 1:1, 1:2 (the teacher merges), 2:1 (the student merges),
	// 3:3 and 1:3.
	p.rows = loss.AlignedRows{
		Student: []int32{0, 1, 3, 6, 8},
		Teacher: []int32{0, 2, 3, 6, 9},
		StudentPrefix: []loss.Prefix{
			{Span: 2, Row: 2, Token: 4},
			{Span: 3, Row: 4, Token: 10}, {Span: 3, Row: 5, Token: 0},
		},
		TeacherPrefix: []loss.Prefix{
			{Span: 1, Row: 1, Token: 7},
			{Span: 3, Row: 4, Token: 2}, {Span: 3, Row: 5, Token: 5},
			{Span: 4, Row: 7, Token: 1}, {Span: 4, Row: 8, Token: 6},
		},
	}
	return p
}

func (p *xtokProblem) refPairs() [][2]int {
	out := make([][2]int, len(p.pairs))
	for k, q := range p.pairs {
		out[k] = [2]int{int(q[0]), int(q[1])}
	}
	return out
}

// ref is the float64 loss from the definitions: each side's merge scale is
// the sum of log softmax(row/τ)[token] over the span's earlier tokens, the
// divergence is ref.CrossTokenizer, averaged over spans, times τ² unless
// noT2, times scale. teacherLogits, when not nil, replaces the teacher's
// hidden·headᵀ (a sparse teacher's distribution as logits).
func (p *xtokProblem) ref(cfg loss.CrossTokenizerConfig, scale float64, teacherLogits []float64) float64 {
	s := logits64(p.h, p.w, p.Ns, p.C, p.Vs)
	t := teacherLogits
	if t == nil {
		t = logits64(p.th, p.tw, p.Nt, p.Ct, p.Vt)
	}
	T := cfg.Temperature
	G := len(p.rows.Student)
	slog, tlog := make([]float64, G), make([]float64, G)
	for _, q := range p.rows.StudentPrefix {
		slog[q.Span] += math.Log(softmax64(s[int(q.Row)*p.Vs:int(q.Row+1)*p.Vs], T)[q.Token])
	}
	for _, q := range p.rows.TeacherPrefix {
		tlog[q.Span] += math.Log(softmax64(t[int(q.Row)*p.Vt:int(q.Row+1)*p.Vt], T)[q.Token])
	}
	var sum float64
	for g := range G {
		sr, tr := int(p.rows.Student[g]), int(p.rows.Teacher[g])
		sum += ref.CrossTokenizer(s[sr*p.Vs:(sr+1)*p.Vs], t[tr*p.Vt:(tr+1)*p.Vt], slog[g], tlog[g], T, p.refPairs(), cfg.MatchedWeight, cfg.UnmatchedWeight)
	}
	f := scale * sum / float64(G)
	if !cfg.NoTSquared {
		f *= T * T
	}
	return f
}

// run computes the loss on the CPU backend with the given teacher and chunk.
func (p *xtokProblem) run(t *testing.T, cfg loss.CrossTokenizerConfig, scale float64, chunk int, teacher func(be *cpu.Backend) loss.Teacher) (loss.KDResult, []float32, []float32) {
	t.Helper()
	be := cpu.New()
	hidden := tensor(t, be, "h", p.h, p.Ns, p.C)
	head := loss.Head{W: tensor(t, be, "w", p.w, p.Vs, p.C), G: zeros(t, be, "gw", p.Vs, p.C)}
	dHidden := zeros(t, be, "dh", p.Ns, p.C)
	m, err := loss.NewVocabMatch(be, p.pairs, p.sfree, p.tfree)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	res, err := loss.CrossTokenizer(be, hidden, head, dHidden, teacher(be), p.rows, m, cfg, scale, loss.Options{ChunkRows: chunk})
	if err != nil {
		t.Fatal(err)
	}
	return res, cpu.Float32s(dHidden), cpu.Float32s(head.G)
}

// TestCrossTokenizerLoss: the fused cross-tokenizer loss (ULD alone, and
// matched KL + ULD) against an online teacher, given as hidden states and
// head or as logits, matches the float64 reference in loss and in the
// gradients to the hidden states and the lm_head — which reach the rows of
// the spans' earlier tokens through the merge scale — at every chunk size.
func TestCrossTokenizerLoss(t *testing.T) {
	for _, c := range []struct {
		name string
		M    int
		cfg  loss.CrossTokenizerConfig
	}{
		{"uld", 0, loss.CrossTokenizerConfig{Temperature: 1, UnmatchedWeight: 1}},
		{"uld/T=2", 0, loss.CrossTokenizerConfig{Temperature: 2, UnmatchedWeight: 1}},
		{"align", 3, loss.CrossTokenizerConfig{Temperature: 1, MatchedWeight: 3.0 / 8, UnmatchedWeight: 5.0 / 8}},
		{"align/T=0.5/noT2", 5, loss.CrossTokenizerConfig{Temperature: 0.5, NoTSquared: true, MatchedWeight: 1, UnmatchedWeight: 0.5}},
	} {
		p := newXTokProblem(uint64(c.M)+11, c.M)
		const scale = 0.7
		f := func() float64 { return p.ref(c.cfg, scale, nil) }
		want := f()
		dh, dw := fd(p.h, f), fd(p.w, f)
		teachers := map[string]func(be *cpu.Backend) loss.Teacher{
			"hidden": func(be *cpu.Backend) loss.Teacher {
				return loss.TeacherHidden{Hidden: tensor(t, be, "th", p.th, p.Nt, p.Ct), Head: tensor(t, be, "tw", p.tw, p.Vt, p.Ct)}
			},
			"logits": func(be *cpu.Backend) loss.Teacher {
				return loss.TeacherLogits{Logits: tensor(t, be, "tl", logits64(p.th, p.tw, p.Nt, p.Ct, p.Vt), p.Nt, p.Vt)}
			},
		}
		for tname, teacher := range teachers {
			for chunk := 1; chunk <= 6; chunk++ {
				name := fmt.Sprintf("%s/%s/chunk=%d", c.name, tname, chunk)
				res, gh, gw := p.run(t, c.cfg, scale, chunk, teacher)
				if res.Tokens != 5 || math.Abs(res.Loss-want) > 1e-5*math.Max(1, want) {
					t.Fatalf("%s: loss %.8g over %d spans, reference %.8g over 5", name, res.Loss, res.Tokens, want)
				}
				if e := rel(gh, dh); e > 1e-4 {
					t.Fatalf("%s: d hidden relative error %.2g", name, e)
				}
				if e := rel(gw, dw); e > 1e-4 {
					t.Fatalf("%s: d lm_head relative error %.2g", name, e)
				}
			}
		}
	}
}

// TestCrossTokenizerSparseTeacher: a sparse (top-k) teacher held on the
// host, as a teacher cache gives it, is the distribution that keeps its
// top-k probabilities and spreads the stored tail's mass evenly over the
// other ids; the loss and its gradients equal the float64 reference built
// from that distribution explicitly, with the teacher's merge scales taken
// from it too (an earlier token inside or outside the top-k).
func TestCrossTokenizerSparseTeacher(t *testing.T) {
	const K, T = 3, 1.5
	p := newXTokProblem(5, 2)
	cfg := loss.CrossTokenizerConfig{Temperature: T, MatchedWeight: 0.25, UnmatchedWeight: 0.75}
	tl := logits64(p.th, p.tw, p.Nt, p.Ct, p.Vt)
	tk := loss.TeacherTopKHost{K: K, Vocab: p.Vt, IDs: make([]int32, p.Nt*K), LogProbs: make([]float32, p.Nt*K), Tail: make([]float32, p.Nt)}
	dense := make([]float64, p.Nt*p.Vt) // the distribution as logits at T
	for r := range p.Nt {
		pr := softmax64(tl[r*p.Vt:(r+1)*p.Vt], T)
		order := make([]int, p.Vt)
		for j := range order {
			order[j] = j
		}
		slices.SortFunc(order, func(a, b int) int { return -cmpF(pr[a], pr[b]) })
		var top, tail float64
		for k, j := range order {
			if k < K {
				tk.IDs[r*K+k], tk.LogProbs[r*K+k] = int32(j), float32(math.Log(pr[j]))
				top += float64(float32(math.Log(pr[j]))) // as stored
			} else {
				tail += pr[j]
			}
		}
		tk.Tail[r] = float32(math.Log(tail))
		storedTail := math.Exp(float64(tk.Tail[r]))
		z := 0.0
		for k := range K {
			z += math.Exp(float64(tk.LogProbs[r*K+k]))
		}
		z += storedTail
		for j := range p.Vt {
			dense[r*p.Vt+j] = T * math.Log(storedTail/float64(p.Vt-K)/z)
		}
		for k := range K {
			dense[r*p.Vt+int(tk.IDs[r*K+k])] = T * math.Log(math.Exp(float64(tk.LogProbs[r*K+k]))/z)
		}
		_ = top
	}
	f := func() float64 { return p.ref(cfg, 1, dense) }
	want := f()
	dh, dw := fd(p.h, f), fd(p.w, f)
	for chunk := 1; chunk <= 5; chunk++ {
		res, gh, gw := p.run(t, cfg, 1, chunk, func(*cpu.Backend) loss.Teacher { return tk })
		if math.Abs(res.Loss-want) > 2e-5*math.Max(1, want) {
			t.Fatalf("chunk %d: loss %.8g, reference %.8g", chunk, res.Loss, want)
		}
		if e := rel(gh, dh); e > 1e-4 {
			t.Fatalf("chunk %d: d hidden relative error %.2g", chunk, e)
		}
		if e := rel(gw, dw); e > 1e-4 {
			t.Fatalf("chunk %d: d lm_head relative error %.2g", chunk, e)
		}
	}
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestCrossTokenizerBadInput: spans outside the rows, a match for other
// vocabularies, a match that lists an id twice, and a sparse teacher with a
// repeated id are errors naming what is wrong.
func TestCrossTokenizerBadInput(t *testing.T) {
	p := newXTokProblem(3, 2)
	be := cpu.New()
	hidden := tensor(t, be, "h", p.h, p.Ns, p.C)
	head := loss.Head{W: tensor(t, be, "w", p.w, p.Vs, p.C)}
	teacher := loss.TeacherLogits{Logits: tensor(t, be, "tl", logits64(p.th, p.tw, p.Nt, p.Ct, p.Vt), p.Nt, p.Vt)}
	m, err := loss.NewVocabMatch(be, p.pairs, p.sfree, p.tfree)
	if err != nil {
		t.Fatal(err)
	}
	cfg := loss.CrossTokenizerConfig{Temperature: 1, UnmatchedWeight: 1}
	expect := func(what string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %q", what, err, want)
		}
	}
	bad := p.rows
	bad.Teacher = []int32{0, 2, 3, 6, 99}
	_, err = loss.CrossTokenizer(be, hidden, head, nil, teacher, bad, m, cfg, 1, loss.Options{})
	expect("teacher row past the end", err, "teacher row 99")
	bad = p.rows
	bad.StudentPrefix = []loss.Prefix{{Span: 9, Row: 1, Token: 0}}
	_, err = loss.CrossTokenizer(be, hidden, head, nil, teacher, bad, m, cfg, 1, loss.Options{})
	expect("prefix of no span", err, "student prefix token")
	other, err := loss.NewVocabMatch(be, nil, []int32{0, 1}, []int32{0})
	if err != nil {
		t.Fatal(err)
	}
	_, err = loss.CrossTokenizer(be, hidden, head, nil, teacher, p.rows, other, cfg, 1, loss.Options{})
	expect("match of other vocabularies", err, "vocabulary match does not fit")
	_, err = loss.NewVocabMatch(be, [][2]int32{{0, 0}}, []int32{0, 1}, []int32{1})
	expect("id listed twice", err, "student id 0")
	tk := loss.TeacherTopKHost{K: 2, Vocab: p.Vt, IDs: make([]int32, 2*p.Nt), LogProbs: make([]float32, 2*p.Nt)}
	for i := range tk.LogProbs {
		tk.LogProbs[i] = -1
	}
	_, err = loss.CrossTokenizer(be, hidden, head, nil, tk, p.rows, m, cfg, 1, loss.Options{})
	expect("repeated top-k id", err, "repeats id 0")
	_, err = loss.CrossTokenizer(be, hidden, head, nil, teacher, p.rows, m, loss.CrossTokenizerConfig{Temperature: 1}, 1, loss.Options{})
	expect("no weight", err, "both 0")
	_ = kdrt.F32
}
