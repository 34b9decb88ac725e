package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/internal/ref"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// xtokCase is a random vocabulary match between Vs student and Vt teacher
// ids with M matched pairs.
type xtokCase struct {
	Vs, Vt, M    int
	pairs        []int32 // flat (student, teacher)·M
	sfree, tfree []int32
}

func newXTokCase(r *rand.Rand, Vs, Vt, M int) xtokCase {
	c := xtokCase{Vs: Vs, Vt: Vt, M: M}
	sp, tp := r.Perm(Vs)[:M], r.Perm(Vt)[:M]
	sIn, tIn := make([]bool, Vs), make([]bool, Vt)
	for k := range M {
		c.pairs = append(c.pairs, int32(sp[k]), int32(tp[k]))
		sIn[sp[k]], tIn[tp[k]] = true, true
	}
	for i := range Vs {
		if !sIn[i] {
			c.sfree = append(c.sfree, int32(i))
		}
	}
	for j := range Vt {
		if !tIn[j] {
			c.tfree = append(c.tfree, int32(j))
		}
	}
	return c
}

func (c xtokCase) refPairs() [][2]int {
	out := make([][2]int, 0, c.M)
	for k := 0; k < len(c.pairs); k += 2 {
		out = append(out, [2]int{int(c.pairs[k]), int(c.pairs[k+1])})
	}
	return out
}

// TestCrossTokenizerAgainstReference checks the cross-tokenizer divergence
// (matched forward KL + ULD on the rest, merged scales) against
// internal/ref's definition on explicit probability vectors, and its
// gradients with respect to the student's logits and to the log of the
// student's merge scale against finite differences of that definition:
// vocabularies of both orders of size, no and some matched ids, several
// temperatures and weights, and row weights with a masked row.
func TestCrossTokenizerAgainstReference(t *testing.T) {
	const N = 3
	for _, sh := range []struct{ Vs, Vt, M int }{{13, 9, 0}, {9, 13, 0}, {11, 11, 0}, {13, 9, 4}, {9, 14, 6}, {8, 8, 8}} {
		for _, T := range []float64{0.5, 1, 2.5} {
			for _, ab := range [][2]float64{{0, 1}, {0.375, 0.625}, {1, 0.25}} {
				name := fmt.Sprintf("Vs=%d/Vt=%d/M=%d/T=%g/a=%g,b=%g", sh.Vs, sh.Vt, sh.M, T, ab[0], ab[1])
				r := rand.New(rand.NewPCG(uint64(sh.Vs*100+sh.Vt*10+sh.M), uint64(T*8+ab[0]*64)))
				c := newXTokCase(r, sh.Vs, sh.Vt, sh.M)
				s, te := randn(r, N*sh.Vs, 2), randn(r, N*sh.Vt, 2)
				slog := []float64{-0.7, 0, -2.1}
				tlog := []float64{0, -1.3, -0.4}
				w := []float64{1, 0.5, 0}
				p := kdrt.CrossTokenizerParams{Temperature: float32(T), MatchedWeight: float32(ab[0]), UnmatchedWeight: float32(ab[1])}
				losses, ds, dsl := make([]float64, N), make([]float64, N*sh.Vs), make([]float64, N)
				crossTokenizerRows(losses, ds, dsl, s, te, slog, tlog, w, N, sh.Vs, sh.Vt, c.pairs, c.sfree, c.tfree, p)
				rowRef := func(n int) float64 {
					return w[n] * ref.CrossTokenizer(s[n*sh.Vs:(n+1)*sh.Vs], te[n*sh.Vt:(n+1)*sh.Vt], slog[n], tlog[n], T, c.refPairs(), ab[0], ab[1])
				}
				total := func() float64 {
					var sum float64
					for n := range N {
						sum += rowRef(n)
					}
					return sum
				}
				for n := range N {
					want := rowRef(n)
					if math.IsNaN(losses[n]) || math.Abs(losses[n]-want) > 1e-10*math.Max(1, math.Abs(want)) {
						t.Fatalf("%s row %d: loss %.12g, reference %.12g", name, n, losses[n], want)
					}
				}
				checkGradTol(t, name+" dstudent", s, ds, total, 1e-6)
				checkGradTol(t, name+" dslog", slog, dsl, total, 1e-6)
				if ds[2*sh.Vs] != 0 || dsl[2] != 0 || losses[2] != 0 {
					t.Fatalf("%s: the masked row has loss %g, gradient %g, dslog %g", name, losses[2], ds[2*sh.Vs], dsl[2])
				}
			}
		}
	}
}

// TestCrossTokenizerULDIsSortedL1: with nothing matched and no merge scale
// the divergence is ULD exactly as llm-recipes computes it — the sorted
// probability vectors, the shorter padded with zeros, summed |difference| —
// and permuting either vocabulary leaves it unchanged.
func TestCrossTokenizerULDIsSortedL1(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const Vs, Vt = 17, 6
	c := newXTokCase(r, Vs, Vt, 0)
	s, te := randn(r, Vs, 1.5), randn(r, Vt, 1.5)
	p := kdrt.CrossTokenizerParams{Temperature: 1, UnmatchedWeight: 1}
	got := make([]float64, 1)
	crossTokenizerRows(got, nil, nil, s, te, nil, nil, []float64{1}, 1, Vs, Vt, c.pairs, c.sfree, c.tfree, p)
	want := ref.SortedL1(ref.Softmax(s, 1), ref.Softmax(te, 1))
	if math.Abs(got[0]-want) > 1e-12 {
		t.Fatalf("ULD %.15g, sorted L1 %.15g", got[0], want)
	}
	// Hand check of the padding: the student's smallest Vs − Vt
	// probabilities are compared with zeros.
	ps, pt := ref.Softmax(s, 1), ref.Softmax(te, 1)
	slices.Sort(ps)
	slices.Reverse(ps)
	slices.Sort(pt)
	slices.Reverse(pt)
	var hand float64
	for r := range Vs {
		if r < Vt {
			hand += math.Abs(ps[r] - pt[r])
		} else {
			hand += ps[r]
		}
	}
	if math.Abs(got[0]-hand) > 1e-12 {
		t.Fatalf("ULD %.15g, by hand %.15g", got[0], hand)
	}
	perm := r.Perm(Vs)
	s2 := make([]float64, Vs)
	for i, j := range perm {
		s2[i] = s[j]
	}
	got2 := make([]float64, 1)
	crossTokenizerRows(got2, nil, nil, s2, te, nil, nil, []float64{1}, 1, Vs, Vt, c.pairs, c.sfree, c.tfree, p)
	if math.Abs(got2[0]-got[0]) > 1e-12 {
		t.Fatalf("ULD changed under a permutation of the student's vocabulary: %.15g, %.15g", got2[0], got[0])
	}
}

// TestCrossTokenizerTiesAndMasked: tied logits (equal probabilities, where
// the sort's order is a choice) give the reference's loss and a gradient
// that sums to zero over the row (a softmax's gradient does), and −Inf
// logits give finite values with zero gradient there.
func TestCrossTokenizerTiesAndMasked(t *testing.T) {
	inf := math.Inf(-1)
	s := []float64{0.5, 0.5, 0.5, inf, -1, 0.5}
	te := []float64{1, 1, inf, 0}
	r := rand.New(rand.NewPCG(1, 2))
	c := newXTokCase(r, 6, 4, 1)
	p := kdrt.CrossTokenizerParams{Temperature: 1, MatchedWeight: 0.5, UnmatchedWeight: 1}
	l, ds, dsl := make([]float64, 1), make([]float64, 6), make([]float64, 1)
	crossTokenizerRows(l, ds, dsl, s, te, []float64{-0.5}, []float64{-0.25}, []float64{1}, 1, 6, 4, c.pairs, c.sfree, c.tfree, p)
	want := ref.CrossTokenizer(s, te, -0.5, -0.25, 1, c.refPairs(), 0.5, 1)
	if math.IsNaN(l[0]) || math.Abs(l[0]-want) > 1e-12 {
		t.Fatalf("loss %.15g, reference %.15g", l[0], want)
	}
	var sum float64
	for i, v := range ds {
		if math.IsNaN(v) {
			t.Fatalf("NaN gradient %v", ds)
		}
		sum += v
		if i == 3 && v != 0 {
			t.Fatalf("gradient %g at the −Inf logit", v)
		}
	}
	if math.Abs(sum) > 1e-12 {
		t.Fatalf("gradient sums to %g, not 0", sum)
	}
}

// TestCrossTokenizerBackendFloat32 runs the backend's float32 op against the
// float64 instance of the same algorithm.
func TestCrossTokenizerBackendFloat32(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(9, 9))
	const N, Vs, Vt, M = 4, 300, 257, 100
	c := newXTokCase(r, Vs, Vt, M)
	s, te := randn(r, N*Vs, 3), randn(r, N*Vt, 3)
	slog, tlog, w := []float64{-1, 0, -0.2, -3}, []float64{0, -0.5, -2, -0.1}, []float64{0.5, 1, 0, 2}
	p := kdrt.CrossTokenizerParams{Temperature: 1.5, MatchedWeight: 0.4, UnmatchedWeight: 0.6}
	want, wantDS, wantDSL := make([]float64, N), make([]float64, N*Vs), make([]float64, N)
	crossTokenizerRows(want, wantDS, wantDSL, s, te, slog, tlog, w, N, Vs, Vt, c.pairs, c.sfree, c.tfree, p)

	up := func(name string, v []float64, shape ...int) *kdrt.Tensor {
		x, _ := be.Alloc(name, kdrt.F32, shape...)
		copy(Float32s(x), to32(v))
		return x
	}
	ints := func(name string, v []int32, shape ...int) *kdrt.Tensor {
		x, _ := be.Alloc(name, kdrt.I32, shape...)
		copy(Int32s(x), v)
		return x
	}
	m := kdrt.VocabMatch{Pairs: ints("pairs", c.pairs, M, 2), StudentFree: ints("sfree", c.sfree, Vs-M), TeacherFree: ints("tfree", c.tfree, Vt-M)}
	losses, _ := be.Alloc("losses", kdrt.F32, N)
	dsl, _ := be.Alloc("dslog", kdrt.F32, N)
	ds := up("ds", make([]float64, N*Vs), N, Vs)
	be.CrossTokenizerDivergence(losses, ds, dsl, up("s", s, N, Vs), up("t", te, N, Vt), up("slog", slog, N), up("tlog", tlog, N), up("w", w, N), m, p)
	back := func(x *kdrt.Tensor) []float64 {
		out := make([]float64, x.Numel())
		for i, v := range Float32s(x) {
			out[i] = float64(v)
		}
		return out
	}
	assertCloseFloor(t, "losses", back(losses), want, 1e-5, 1e-6)
	assertCloseFloor(t, "dstudent", back(ds), wantDS, 1e-4, 1e-6)
	assertCloseFloor(t, "dslog", back(dsl), wantDSL, 1e-5, 1e-6)

	// A match that leaves an id out, or lists one twice, is refused.
	for _, bad := range []kdrt.VocabMatch{
		{Pairs: m.Pairs, StudentFree: ints("sfree", c.sfree[1:], Vs-M-1), TeacherFree: m.TeacherFree},
		{Pairs: m.Pairs, StudentFree: m.StudentFree, TeacherFree: ints("tfree", append([]int32{c.pairs[1]}, c.tfree[1:]...), Vt-M)},
	} {
		func() {
			defer func() {
				if e := recover(); e == nil || !strings.Contains(fmt.Sprint(e), "vocabulary match") {
					t.Errorf("bad match: panic %v, want one naming the vocabulary match", e)
				}
			}()
			be.CrossTokenizerDivergence(losses, nil, nil, up("s", s, N, Vs), up("t", te, N, Vt), nil, nil, up("w", w, N), bad, p)
		}()
	}
}
