package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kdnative/kdnative/internal/ref"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// The references are internal/ref's, written from the definitions on
// explicit probability vectors, independently of the kernels' log-space algebra.

var (
	refSoftmax       = ref.Softmax
	refKL            = ref.KL
	refBinDivergence = ref.Divergence
)

// refSparseBins builds the compared distributions of a sparse teacher.
func refSparseBins(s []float64, ids []int32, lp []float64, T float64, tail kdrt.TailMode) (p, q []float64) {
	qs := refSoftmax(s, T)
	K := len(ids)
	p, q = make([]float64, K), make([]float64, K)
	var ps, qsum float64
	for k, id := range ids {
		p[k], q[k] = math.Exp(lp[k]), qs[id]
		ps += p[k]
		qsum += q[k]
	}
	if tail == kdrt.Renormalize {
		for k := range p {
			p[k] /= ps
			q[k] /= qsum
		}
		return p, q
	}
	in := map[int32]bool{}
	for _, id := range ids {
		in[id] = true
	}
	var qt float64
	for j, v := range qs {
		if !in[int32(j)] {
			qt += v
		}
	}
	return append(p, math.Max(0, 1-ps)), append(q, qt)
}

type logitCase struct {
	name string
	gen  func(r *rand.Rand, V int) []float64
}

var logitCases = []logitCase{
	{"normal", func(r *rand.Rand, V int) []float64 { return randn(r, V, 2) }},
	{"large", func(r *rand.Rand, V int) []float64 { return randn(r, V, 60) }},
	{"peaked", func(r *rand.Rand, V int) []float64 {
		x := randn(r, V, 1)
		x[r.IntN(V)] += 30
		return x
	}},
	{"flat", func(r *rand.Rand, V int) []float64 {
		x := randn(r, V, 1e-3)
		return x
	}},
}

var allKinds = []kdrt.DivergenceKind{kdrt.ForwardKL, kdrt.ReverseKL, kdrt.JSD, kdrt.TVD, kdrt.SkewKL, kdrt.SkewReverseKL}

// TestDivergenceAgainstReference checks every dense divergence's loss against
// the float64 definition and its gradient against finite differences of that
// definition, over logit shapes (normal, large, peaked, flat), temperatures,
// β and α values, and row weights.
func TestDivergenceAgainstReference(t *testing.T) {
	const N, V = 3, 11
	for _, kind := range allKinds {
		for _, lc := range logitCases {
			for _, T := range []float64{0.5, 1, 2.5} {
				betas := []float64{0.5}
				if kind == kdrt.JSD {
					betas = []float64{0, 0.125, 0.5, 0.875, 1} // exact in float32, as the params carry them
				}
				if kind == kdrt.SkewKL || kind == kdrt.SkewReverseKL {
					betas = []float64{0, 0.125, 0.75} // used as α
				}
				for _, ba := range betas {
					name := fmt.Sprintf("%v/%s/T=%g/%g", kind, lc.name, T, ba)
					r := rand.New(rand.NewPCG(uint64(kind), uint64(T*10+ba*100)))
					s, te := make([]float64, 0, N*V), make([]float64, 0, N*V)
					for range N {
						s = append(s, lc.gen(r, V)...)
						te = append(te, lc.gen(r, V)...)
					}
					w := []float64{1, 0.25, 0} // the last row is masked
					p := kdrt.DivergenceParams{Kind: kind, Temperature: float32(T), Beta: float32(ba), Alpha: float32(ba)}
					losses, ds := make([]float64, N), make([]float64, N*V)
					divergenceRows(losses, ds, s, te, w, N, V, V, p)
					total := func() float64 {
						var sum float64
						for n := range N {
							if w[n] == 0 {
								continue
							}
							sum += w[n] * refBinDivergence(kind, refSoftmax(te[n*V:(n+1)*V], T), refSoftmax(s[n*V:(n+1)*V], T), ba, ba)
						}
						return sum
					}
					for n := range N {
						want := 0.0
						if w[n] != 0 {
							want = w[n] * refBinDivergence(kind, refSoftmax(te[n*V:(n+1)*V], T), refSoftmax(s[n*V:(n+1)*V], T), ba, ba)
						}
						if math.IsNaN(losses[n]) || math.Abs(losses[n]-want) > 1e-9*math.Max(1, math.Abs(want)) {
							t.Fatalf("%s row %d: loss %.12g, reference %.12g", name, n, losses[n], want)
						}
					}
					if lc.name == "large" && (kind == kdrt.TVD) {
						continue // |p−q| is not differentiable where the saturated bins tie
					}
					checkGradTol(t, name, s, ds, total, fdTol(lc.name))
				}
			}
		}
	}
}

// fdTol loosens the finite-difference comparison where the float64 reference
// itself loses digits: logits of magnitude ~100 leave ~1e-14 relative room in
// exp/log, which central differences with h = 1e-6 amplify.
func fdTol(name string) float64 {
	if name == "large" {
		return 1e-4
	}
	return 1e-6
}

// TestDivergenceMaskedLogits: −Inf logits (vocabulary entries masked in both
// models) give finite losses and zero gradient at the masked ids, equal to
// the divergence over the unmasked ids alone.
func TestDivergenceMaskedLogits(t *testing.T) {
	const V = 6
	inf := math.Inf(-1)
	s := []float64{0.3, inf, 1.2, -0.5, inf, 2}
	te := []float64{1, inf, -1, 0.4, inf, 0.2}
	keep := []int{0, 2, 3, 5}
	for _, kind := range allKinds {
		p := kdrt.DivergenceParams{Kind: kind, Temperature: 1.5, Beta: 0.375, Alpha: 0.25}
		l, ds := make([]float64, 1), make([]float64, V)
		divergenceRows(l, ds, s, te, []float64{1}, 1, V, V, p)
		var ss, tt []float64
		for _, i := range keep {
			ss, tt = append(ss, s[i]), append(tt, te[i])
		}
		want := refBinDivergence(kind, refSoftmax(tt, 1.5), refSoftmax(ss, 1.5), 0.375, 0.25)
		if math.IsNaN(l[0]) || math.Abs(l[0]-want) > 1e-12 {
			t.Errorf("%v: loss %g, want %g over the unmasked ids", kind, l[0], want)
		}
		for _, i := range []int{1, 4} {
			if ds[i] != 0 {
				t.Errorf("%v: gradient %g at masked id %d", kind, ds[i], i)
			}
		}
		for _, v := range ds {
			if math.IsNaN(v) {
				t.Errorf("%v: NaN gradient %v", kind, ds)
			}
		}
	}
}

// TestDivergenceSharedVocab compares only the shared leading ids when the
// teacher's padded vocabulary is wider.
func TestDivergenceSharedVocab(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 21))
	Vs, Vt, V := 7, 9, 7
	s, te := randn(r, Vs, 1), randn(r, Vt, 1)
	p := kdrt.DivergenceParams{Kind: kdrt.ForwardKL, Temperature: 1, Vocab: V}
	l, ds := make([]float64, 1), make([]float64, Vs)
	divergenceRows(l, ds, s, te, []float64{1}, 1, Vs, Vt, p)
	want := refKL(refSoftmax(te[:V], 1), refSoftmax(s[:V], 1))
	if math.Abs(l[0]-want) > 1e-12 {
		t.Fatalf("loss %g, want %g", l[0], want)
	}
}

// TestSparseDivergenceAgainstReference checks both tail modes of every
// divergence against explicitly built bin distributions, with finite
// differences over the whole student row.
func TestSparseDivergenceAgainstReference(t *testing.T) {
	const N, V, K = 2, 13, 4
	for _, tail := range []kdrt.TailMode{kdrt.Renormalize, kdrt.TailBucket} {
		for _, kind := range allKinds {
			for _, T := range []float64{0.75, 1, 2} {
				r := rand.New(rand.NewPCG(uint64(kind)+7, uint64(T*10)+uint64(tail)))
				s := randn(r, N*V, 2)
				ids := make([]int32, N*K)
				lp := make([]float64, N*K)
				for n := range N {
					perm := r.Perm(V)
					tl := refSoftmax(randn(r, V, 2), 1)
					for k := range K {
						ids[n*K+k] = int32(perm[k])
						lp[n*K+k] = math.Log(tl[perm[k]])
					}
				}
				w := []float64{1, 0.5}
				p := kdrt.DivergenceParams{Kind: kind, Temperature: float32(T), Beta: 0.375, Alpha: 0.25, Tail: tail}
				losses, ds := make([]float64, N), make([]float64, N*V)
				sparseDivergenceRows(losses, ds, s, ids, lp, nil, w, N, V, K, p)
				ref := func(n int) float64 {
					pb, qb := refSparseBins(s[n*V:(n+1)*V], ids[n*K:(n+1)*K], lp[n*K:(n+1)*K], T, tail)
					return w[n] * refBinDivergence(kind, pb, qb, 0.375, 0.25)
				}
				name := fmt.Sprintf("tail=%d/%v/T=%g", tail, kind, T)
				for n := range N {
					if want := ref(n); math.IsNaN(losses[n]) || math.Abs(losses[n]-want) > 1e-9*math.Max(1, want) {
						t.Fatalf("%s row %d: loss %.12g, reference %.12g", name, n, losses[n], want)
					}
				}
				checkGradTol(t, name, s, ds, func() float64 { return ref(0) + ref(1) }, 1e-6)
			}
		}
	}
}

// TestDivergenceFloat32MatchesFloat64 runs the backend (float32) against the
// float64 kernel on the same inputs.
func TestDivergenceFloat32MatchesFloat64(t *testing.T) {
	be := New()
	const N, V, K = 5, 50, 8
	r := rand.New(rand.NewPCG(31, 31))
	s, te := randn(r, N*V, 3), randn(r, N*V, 3)
	w := []float64{1, 1, 0, 0.5, 2}
	ids := make([]int32, N*K)
	lp := make([]float64, N*K)
	for n := range N {
		for k, j := range r.Perm(V)[:K] {
			ids[n*K+k] = int32(j)
			lp[n*K+k] = -float64(k+1) * 0.7
		}
	}
	for _, kind := range allKinds {
		p := kdrt.DivergenceParams{Kind: kind, Temperature: 2, Beta: 0.5, Alpha: 0.1, Tail: kdrt.TailBucket}
		l64, d64 := make([]float64, N), make([]float64, N*V)
		divergenceRows(l64, d64, s, te, w, N, V, V, p)
		tl, _ := be.Alloc("losses", kdrt.F32, N)
		td, _ := be.Alloc("ds", kdrt.F32, N, V)
		be.Divergence(tl, td, shaped(f32Tensor(be, "s", s), N, V), shaped(f32Tensor(be, "t", te), N, V), f32Tensor(be, "w", w), p)
		assertClose(t, kind.String()+" dense loss f32", to64(Float32s(tl)), l64, 1e-5)
		assertClose(t, kind.String()+" dense grad f32", to64(Float32s(td)), d64, 1e-5)

		sl64, sd64 := make([]float64, N), make([]float64, N*V)
		sparseDivergenceRows(sl64, sd64, s, ids, lp, nil, w, N, V, K, p)
		ti, _ := be.Alloc("ids", kdrt.I32, N, K)
		copy(Int32s(ti), ids)
		tlp, _ := be.Alloc("lp", kdrt.F32, N, K)
		copy(Float32s(tlp), to32(lp))
		be.Zero(td)
		be.SparseDivergence(tl, td, shaped(f32Tensor(be, "s", s), N, V), ti, tlp, nil, f32Tensor(be, "w", w), p)
		assertClose(t, kind.String()+" sparse loss f32", to64(Float32s(tl)), sl64, 1e-5)
		assertClose(t, kind.String()+" sparse grad f32", to64(Float32s(td)), sd64, 1e-5)
	}
}

func shaped(t *kdrt.Tensor, shape ...int) *kdrt.Tensor {
	t.Shape = shape
	return t
}

// TestSparseTailConfidentTeacher: a teacher whose top-k holds all the mass
// its float32 log-probabilities can express (the sum rounds to 1 or above)
// still gives finite losses and gradients for every divergence.
func TestSparseTailConfidentTeacher(t *testing.T) {
	be := New()
	const V, K = 6, 2
	s, _ := be.Alloc("s", kdrt.F32, 1, V)
	copy(Float32s(s), []float32{3, 1, -2, 0.5, 0, 1})
	ids, _ := be.Alloc("ids", kdrt.I32, 1, K)
	copy(Int32s(ids), []int32{0, 3})
	lp, _ := be.Alloc("lp", kdrt.F32, 1, K)
	copy(Float32s(lp), []float32{float32(math.Log(0.9999999)), float32(math.Log(1e-7))})
	w, _ := be.Alloc("w", kdrt.F32, 1)
	Float32s(w)[0] = 1
	for _, kind := range allKinds {
		l, _ := be.Alloc("l", kdrt.F32, 1)
		d, _ := be.Alloc("d", kdrt.F32, 1, V)
		be.SparseDivergence(l, d, s, ids, lp, nil, w, kdrt.DivergenceParams{Kind: kind, Temperature: 1, Beta: 0.5, Alpha: 0.1, Tail: kdrt.TailBucket})
		for _, v := range append(Float32s(l), Float32s(d)...) {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("%v: loss %v gradient %v", kind, Float32s(l), Float32s(d))
			}
		}
	}
}

// TestSparseDivergenceStoredTail: with the teacher's tail mass given (as a
// teacher cache stores it), the K+1 bins are the top-k and that tail,
// renormalized; the loss matches that reference and the gradient its finite
// differences.
func TestSparseDivergenceStoredTail(t *testing.T) {
	const N, V, K = 2, 11, 3
	for _, kind := range allKinds {
		r := rand.New(rand.NewPCG(uint64(kind)+40, 40))
		s := randn(r, N*V, 2)
		ids := make([]int32, N*K)
		lp, tails := make([]float64, N*K), make([]float64, N)
		for n := range N {
			tl := refSoftmax(randn(r, V, 2), 1)
			var top float64
			for k, j := range r.Perm(V)[:K] {
				ids[n*K+k], lp[n*K+k] = int32(j), math.Log(tl[j])
				top += tl[j]
			}
			// A stored tail a little off 1 − Σ top-k (quantization), so the
			// renormalization matters.
			tails[n] = math.Log((1 - top) * 1.3)
		}
		w := []float64{1, 0.5}
		p := kdrt.DivergenceParams{Kind: kind, Temperature: 1.5, Beta: 0.375, Alpha: 0.25, Tail: kdrt.TailBucket}
		losses, ds := make([]float64, N), make([]float64, N*V)
		sparseDivergenceRows(losses, ds, s, ids, lp, tails, w, N, V, K, p)
		ref := func(n int) float64 {
			q := refSoftmax(s[n*V:(n+1)*V], 1.5)
			pb, qb := make([]float64, K+1), make([]float64, K+1)
			in := map[int32]bool{}
			var sum float64
			for k := range K {
				id := ids[n*K+k]
				in[id] = true
				pb[k], qb[k] = math.Exp(lp[n*K+k]), q[id]
				sum += pb[k]
			}
			pb[K] = math.Exp(tails[n])
			sum += pb[K]
			for k := range pb {
				pb[k] /= sum
			}
			for j := range V {
				if !in[int32(j)] {
					qb[K] += q[j]
				}
			}
			return w[n] * refBinDivergence(kind, pb, qb, 0.375, 0.25)
		}
		for n := range N {
			if want := ref(n); math.Abs(losses[n]-want) > 1e-9*math.Max(1, want) {
				t.Fatalf("%v row %d: loss %.12g, reference %.12g", kind, n, losses[n], want)
			}
		}
		checkGradTol(t, kind.String()+" stored tail", s, ds, func() float64 { return ref(0) + ref(1) }, 1e-6)
	}
}
