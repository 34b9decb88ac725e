package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kdnative/kdnative/kd/loss"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// The loss ops are checked twice: against the CPU backend on the same inputs,
// and against a float64 evaluation of the CPU's own algorithm (runtime/cpu's
// generic code instantiated in float64: cpu.DivergenceRows64 and
// cpu.SparseDivergenceRows64).
// The second check is the tight one: the GPU's blocked float32 sums stay
// within ~2e-6 of it (measured on a float32 emulation of kernels/loss.cu).
// The CPU backend keeps a row's sums in float64, so it agrees with the
// float64 evaluation to float32 rounding; lossCPUTol, which grows with the row
// width, dates from when it summed sequentially in float32 (~1e-3 off over
// 50,000 columns) and is loose.
//
// The students here are not confident (no logit far above the rest): with
// one, ∂D/∂s at the peak is q·(g − Σ q·g) with Σ q·g ≈ g there, a
// cancellation that leaves float32 (CPU and GPU alike) with 1e-4 to 1e-1
// relative error on reverse divergences, so neither could check the other.
// Confident teachers are tested (row 2 of every teacher).

// lossCPUTol is the relative error allowed between the GPU and the CPU for
// rows of V columns.
func lossCPUTol(V int) float64 {
	if V <= 2048 {
		return 5e-5
	}
	return 5e-3
}

// sparseTol is the relative error allowed between the GPU and the float64
// reference of SparseDivergence. A confident teacher (row 2) makes the reverse
// divergences' g ≈ log q − log p ≈ 40 on every bin, so q·(g − Σ q·g) cancels
// and float32 keeps ~6e-6 of it under Renormalize; under TailBucket the
// tail's g_tail − Σ q·g cancels against a student tail near 1, ~4e-5. (The
// CPU loses as much: both are float32 evaluations of one formula.)
func sparseTol(mode kdrt.TailMode) float64 {
	if mode == kdrt.TailBucket {
		return 1e-4
	}
	return 2e-5
}

// check64 compares the GPU tensor g with float64 reference values.
func (p *pair) check64(what string, want []float64, g *kdrt.Tensor, tol float64) {
	p.t.Helper()
	vals := make([]float32, len(want))
	for i, v := range want {
		vals[i] = float32(v)
	}
	c, err := p.cpu.Alloc(what, kdrt.F32, len(vals))
	if err != nil {
		p.t.Fatal(err)
	}
	if err := p.cpu.Upload(c, vals); err != nil {
		p.t.Fatal(err)
	}
	p.check(what+" (float64 reference)", c, g, tol)
}

// host returns a CPU tensor's values as float64.
func (p *pair) host(c *kdrt.Tensor) []float64 {
	p.t.Helper()
	v := values(p.t, p.cpu, c)
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// clone copies a CPU/GPU tensor pair's current values into a new pair (the
// reference needs the inputs an op accumulates into).
func (p *pair) clone(name string, c *kdrt.Tensor) (cc, gc *kdrt.Tensor) {
	p.t.Helper()
	return p.from(name, kdrt.F32, values(p.t, p.cpu, c), c.Shape...)
}

// logits makes N rows of V logits uniform in [-scale, scale), with row
// peaked (if in range) given one id raised by 25: a confident model.
func (p *pair) logits(name string, N, V int, scale float32, peaked int) (c, g *kdrt.Tensor) {
	vals := make([]float32, N*V)
	for i := range vals {
		vals[i] = scale * (2*p.rng.Float32() - 1)
	}
	if peaked >= 0 && peaked < N {
		vals[peaked*V+p.rng.IntN(V)] += 25
	}
	return p.from(name, kdrt.F32, vals, N, V)
}

// rowWeights are N row weights in [0.25, 1.25) with row 1 (if any) masked.
func (p *pair) rowWeights(N int) []float32 {
	w := make([]float32, N)
	for i := range w {
		w[i] = 0.25 + p.rng.Float32()
	}
	if N > 1 {
		w[1] = 0
	}
	return w
}

// ---- float64 helpers (the divergences' float64 reference is runtime/cpu's
// own generic code: cpu.DivergenceRows64, cpu.SparseDivergenceRows64) ----

func ref64LogSoftmax(ls, x []float64, invT float64) {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = math.Max(mx, v*invT)
	}
	if math.IsInf(mx, -1) {
		for i := range ls {
			ls[i] = mx
		}
		return
	}
	var s float64
	for _, v := range x {
		s += math.Exp(v*invT - mx)
	}
	ls1 := math.Log(s)
	for i, v := range x {
		ls[i] = (v*invT - mx) - ls1
	}
}

func ref64LogSumExp(x []float64) float64 {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = math.Max(mx, v)
	}
	if math.IsInf(mx, -1) {
		return mx
	}
	var s float64
	for _, v := range x {
		s += math.Exp(v - mx)
	}
	return mx + math.Log(s)
}

// ---- cross-entropy ----

func TestCrossEntropy(t *testing.T) {
	p := newPair(t)
	for _, sh := range []struct{ N, V int }{{7, 11}, {5, 1000}, {4, 50000}, {2, 151936}} {
		for _, scale := range []float32{3, 30} {
			name := fmt.Sprintf("%dx%d/scale=%g", sh.N, sh.V, scale)
			lc, lg := p.logits("logits", sh.N, sh.V, scale, 2)
			tv := make([]int32, sh.N)
			for i := range tv {
				tv[i] = int32(p.rng.IntN(sh.V))
			}
			tv[1] = kdrt.IgnoreIndex
			tc, tg := p.ints("targets", tv, sh.N)
			oc, og := p.rand("losses", kdrt.F32, 1, sh.N) // overwritten
			p.cpu.CrossEntropy(oc, lc, tc)
			p.gpu.CrossEntropy(og, lg, tg)
			p.check(name+" losses", oc, og, lossCPUTol(sh.V))

			x := p.host(lc)
			want := make([]float64, sh.N)
			for n, tt := range tv {
				if tt != kdrt.IgnoreIndex {
					row := x[n*sh.V : (n+1)*sh.V]
					want[n] = ref64LogSumExp(row) - row[tt]
				}
			}
			p.check64(name+" losses", want, og, tolFor(kdrt.F32))
		}
	}
}

func TestCrossEntropyBackward(t *testing.T) {
	p := newPair(t)
	for _, sh := range []struct{ N, V int }{{7, 11}, {5, 1000}, {4, 50000}, {3, 151936}} {
		for _, weighted := range []bool{false, true} {
			name := fmt.Sprintf("%dx%d/weighted=%v", sh.N, sh.V, weighted)
			lc, lg := p.logits("logits", sh.N, sh.V, 6, 0)
			tv := make([]int32, sh.N)
			for i := range tv {
				tv[i] = int32(p.rng.IntN(sh.V))
			}
			tv[sh.N-1] = kdrt.IgnoreIndex
			tc, tg := p.ints("targets", tv, sh.N)
			var wc, wg *kdrt.Tensor
			w := make([]float32, sh.N)
			for i := range w {
				w[i] = 1
			}
			if weighted {
				w = p.rowWeights(sh.N) // row 1 has weight 0
				wc, wg = p.from("weights", kdrt.F32, w, sh.N)
			}
			const scale = 0.375
			dc, dg := p.rand("dlogits", kdrt.F32, 1/float32(sh.V), sh.N, sh.V) // accumulated into
			want := p.host(dc)
			p.cpu.CrossEntropyBackward(dc, lc, tc, wc, scale)
			p.gpu.CrossEntropyBackward(dg, lg, tg, wg, scale)
			p.check(name+" dlogits", dc, dg, lossCPUTol(sh.V))

			x := p.host(lc)
			for n, tt := range tv {
				s := scale * float64(w[n])
				if tt == kdrt.IgnoreIndex || s == 0 {
					continue
				}
				row := x[n*sh.V : (n+1)*sh.V]
				lse := ref64LogSumExp(row)
				for j, v := range row {
					want[n*sh.V+j] += s * math.Exp(v-lse)
				}
				want[n*sh.V+int(tt)] -= s
			}
			p.check64(name+" dlogits", want, dg, tolFor(kdrt.F32))
		}
	}
}

// ---- divergences ----

// divConfigs are every divergence kind, JSD also at β = 0 and 1 (exactly
// forward and reverse KL).
var divConfigs = []kdrt.DivergenceParams{
	{Kind: kdrt.ForwardKL},
	{Kind: kdrt.ReverseKL},
	{Kind: kdrt.JSD, Beta: 0.375},
	{Kind: kdrt.JSD, Beta: 0},
	{Kind: kdrt.JSD, Beta: 1},
	{Kind: kdrt.TVD},
	{Kind: kdrt.SkewKL, Alpha: 0.125},
	{Kind: kdrt.SkewReverseKL, Alpha: 0.25},
}

func divName(d kdrt.DivergenceParams) string {
	switch d.Kind {
	case kdrt.JSD:
		return fmt.Sprintf("jsd(β=%g)", d.Beta)
	case kdrt.SkewKL, kdrt.SkewReverseKL:
		return fmt.Sprintf("%v(α=%g)", d.Kind, d.Alpha)
	}
	return d.Kind.String()
}

func TestDivergence(t *testing.T) {
	p := newPair(t)
	shapes := []struct {
		N, Vs, Vt, Vocab int
		T                float32
	}{
		{6, 97, 97, 0, 2},
		{5, 1000, 1013, 997, 0.75},
		{3, 50000, 50000, 0, 1.5},
		{3, 50011, 50003, 49999, 2.5},
	}
	for _, sh := range shapes {
		for _, cfg := range divConfigs {
			for _, grad := range []bool{false, true} {
				dp := cfg
				dp.Temperature, dp.Vocab = sh.T, sh.Vocab
				name := fmt.Sprintf("%s/%dx%d-vs-%d/vocab=%d/T=%g/grad=%v", divName(cfg), sh.N, sh.Vs, sh.Vt, sh.Vocab, sh.T, grad)
				V := sh.Vs
				if sh.Vocab > 0 {
					V = sh.Vocab
				}
				sc, sg := p.logits("student", sh.N, sh.Vs, 4, -1)
				tc, tg := p.logits("teacher", sh.N, sh.Vt, 4, 2) // row 2: a confident teacher
				if cfg.Kind == kdrt.TVD && grad {
					// TVD's gradient has a kink where p = q: keep the
					// inputs off it, or a sign fp32 cannot resolve decides
					// an element (and its row's sum).
					tc, tg = p.from("teacher", kdrt.F32, offTVDKinks(p.host(sc), p.host(tc), sh.N, sh.Vs, sh.Vt, V, sh.T), sh.N, sh.Vt)
				}
				w := p.rowWeights(sh.N)                        // row 1: weight 0
				wc, wg := p.from("weights", kdrt.F32, w, sh.N) //
				oc, og := p.rand("losses", kdrt.F32, 1, sh.N)  // overwritten
				var dc, dg *kdrt.Tensor
				var want []float64
				if grad {
					dc, dg = p.rand("dstudent", kdrt.F32, 1/float32(V), sh.N, sh.Vs) // accumulated into
					want = p.host(dc)
				}
				p.cpu.Divergence(oc, dc, sc, tc, wc, dp)
				p.gpu.Divergence(og, dg, sg, tg, wg, dp)
				p.check(name+" losses", oc, og, lossCPUTol(V))
				if grad {
					p.check(name+" dstudent", dc, dg, lossCPUTol(V))
				}

				losses := make([]float64, sh.N)
				w64 := make([]float64, sh.N)
				for i, v := range w {
					w64[i] = float64(v)
				}
				cpu.DivergenceRows64(losses, want, p.host(sc), p.host(tc), w64, sh.N, sh.Vs, sh.Vt, dp)
				p.check64(name+" losses", losses, og, tolFor(kdrt.F32))
				if grad {
					p.check64(name+" dstudent", want, dg, tolFor(kdrt.F32))
				}
			}
		}
	}
}

// offTVDKinks returns the teacher logits with those moved (by 0.02·T)
// whose probability at temperature T over the first V ids is within 0.5% of
// the student's, where TVD's gradient changes sign: fp32 cannot tell those
// apart from the float64 reference.
func offTVDKinks(student, teacher []float64, N, Vs, Vt, V int, T float32) []float32 {
	out := make([]float32, len(teacher))
	for i, v := range teacher {
		out[i] = float32(v)
	}
	invT := 1 / float64(T)
	lse := func(row []float32) float64 {
		m := math.Inf(-1)
		for _, z := range row {
			m = math.Max(m, float64(z)*invT)
		}
		s := 0.0
		for _, z := range row {
			s += math.Exp(float64(z)*invT - m)
		}
		return m + math.Log(s)
	}
	for n := range N {
		srow := make([]float32, V)
		for i := range V {
			srow[i] = float32(student[n*Vs+i])
		}
		ls := lse(srow)
		for range 5 { // a move shifts the row's normalizer a little: check again
			trow := out[n*Vt : n*Vt+V]
			lt, moved := lse(trow), false
			for i := range V {
				if math.Abs((float64(trow[i])*invT-lt)-(float64(srow[i])*invT-ls)) < 5e-3 {
					trow[i] += 0.02 * T
					moved = true
				}
			}
			if !moved {
				break
			}
		}
	}
	return out
}

// sparseTeacher is a real top-k of a random teacher distribution per row:
// ids sorted by decreasing probability, their log-probabilities, and the log
// of the mass outside them (summed directly in float64). Row 2 (if any) is a
// confident teacher (one logit raised by 40: its tail is ~1e-15, below
// float32's resolution of 1 − Σ top-k); with unused, the last slot of row 3
// (if any) is an unused slot (−Inf).
func (p *pair) sparseTeacher(N, V, K int, unused bool) (ids []int32, lps, tails []float32) {
	ids, lps, tails = make([]int32, N*K), make([]float32, N*K), make([]float32, N)
	x := make([]float64, V)
	ls := make([]float64, V)
	order := make([]int32, V)
	for n := range N {
		for j := range x {
			x[j] = 2 * p.rng.NormFloat64()
		}
		if n == 2 {
			x[p.rng.IntN(V)] += 40
		}
		ref64LogSoftmax(ls, x, 1)
		for j := range order {
			order[j] = int32(j)
		}
		slices.SortFunc(order, func(a, b int32) int {
			switch {
			case ls[a] > ls[b]:
				return -1
			case ls[a] < ls[b]:
				return 1
			}
			return int(a - b)
		})
		var tail float64
		for _, j := range order[K:] {
			tail += math.Exp(ls[j])
		}
		tails[n] = float32(math.Log(tail))
		for k := range K {
			ids[n*K+k] = order[k]
			lps[n*K+k] = float32(ls[order[k]])
		}
		if unused && n == 3 {
			lps[n*K+K-1] = float32(math.Inf(-1))
		}
	}
	return ids, lps, tails
}

func TestSparseDivergence(t *testing.T) {
	p := newPair(t)
	shapes := []struct {
		N, V, K int
		T       float32
	}{
		{5, 1000, 20, 1.5},
		{4, 50000, 64, 0.75},
		{4, 151936, 100, 2},
		{3, 8, 8, 1.25}, // every id in the top-k: the tail bin is empty
	}
	type tailCase struct {
		mode     kdrt.TailMode
		withTail bool
	}
	tailCases := []tailCase{{kdrt.Renormalize, false}, {kdrt.TailBucket, false}, {kdrt.TailBucket, true}}
	for _, sh := range shapes {
		for _, cfg := range divConfigs {
			if cfg.Kind == kdrt.JSD && (cfg.Beta == 0 || cfg.Beta == 1) && sh.V > 1000 {
				continue // the same kernels as forward and reverse KL: once is enough
			}
			// An unused (−Inf) teacher slot makes reverse KL infinite under
			// Renormalize; give it to the other kinds.
			unused := cfg.Kind != kdrt.ReverseKL && !(cfg.Kind == kdrt.JSD && cfg.Beta == 1) && sh.K < sh.V
			ids, lps, tails := p.sparseTeacher(sh.N, sh.V, sh.K, unused)
			for _, tcase := range tailCases {
				for _, grad := range []bool{false, true} {
					dp := cfg
					dp.Temperature, dp.Tail = sh.T, tcase.mode
					name := fmt.Sprintf("%s/%dx%d/top-%d/T=%g/tail=%d,given=%v/grad=%v", divName(cfg), sh.N, sh.V, sh.K, sh.T, tcase.mode, tcase.withTail, grad)
					ic, ig := p.ints("ids", ids, sh.N, sh.K)
					lc, lg := p.from("logprobs", kdrt.F32, lps, sh.N, sh.K)
					var tlc, tlg *kdrt.Tensor
					var tails64 []float64
					if tcase.withTail {
						tlc, tlg = p.from("tail", kdrt.F32, tails, sh.N)
						tails64 = p.host(tlc)
					}
					sc, sg := p.logits("student", sh.N, sh.V, 4, -1)
					w := p.rowWeights(sh.N) // row 1: weight 0
					wc, wg := p.from("weights", kdrt.F32, w, sh.N)
					oc, og := p.rand("losses", kdrt.F32, 1, sh.N) // overwritten
					var dc, dg *kdrt.Tensor
					var want []float64
					if grad {
						dc, dg = p.rand("dstudent", kdrt.F32, 1/float32(sh.V), sh.N, sh.V) // accumulated into
						want = p.host(dc)
					}
					p.cpu.SparseDivergence(oc, dc, sc, ic, lc, tlc, wc, dp)
					p.gpu.SparseDivergence(og, dg, sg, ig, lg, tlg, wg, dp)
					p.check(name+" losses", oc, og, lossCPUTol(sh.V))
					if grad {
						p.check(name+" dstudent", dc, dg, lossCPUTol(sh.V))
					}

					losses := make([]float64, sh.N)
					w64 := make([]float64, sh.N)
					for i, v := range w {
						w64[i] = float64(v)
					}
					cpu.SparseDivergenceRows64(losses, want, p.host(sc), ids, p.host(lc), tails64, w64, sh.N, sh.V, sh.K, dp)
					p.check64(name+" losses", losses, og, sparseTol(tcase.mode))
					if grad {
						p.check64(name+" dstudent", want, dg, sparseTol(tcase.mode))
					}
				}
			}
		}
	}
}

// ---- cross-tokenizer divergence ----

// xtokMatch is a random vocabulary match: M pairs (student id, teacher id),
// flat, and each side's other ids in increasing order.
func (p *pair) xtokMatch(Vs, Vt, M int) (pairs, sfree, tfree []int32) {
	sp, tp := p.rng.Perm(Vs)[:M], p.rng.Perm(Vt)[:M]
	sIn, tIn := make([]bool, Vs), make([]bool, Vt)
	for k := range M {
		pairs = append(pairs, int32(sp[k]), int32(tp[k]))
		sIn[sp[k]], tIn[tp[k]] = true, true
	}
	for i, in := range sIn {
		if !in {
			sfree = append(sfree, int32(i))
		}
	}
	for j, in := range tIn {
		if !in {
			tfree = append(tfree, int32(j))
		}
	}
	return pairs, sfree, tfree
}

// TestCrossTokenizerDivergence runs the cross-tokenizer divergence (matched
// forward KL and ULD's sorted L1 over the rest, with merge scales) on the
// GPU against the CPU and against the float64 instance of the CPU's
// algorithm, over vocabularies of both orders of size (up to Qwen's 151,936
// against Llama 3's 128,256), with and without matched ids and gradients.
//
// ULD's gradient at a free id is ±(its probability) by the sign of its
// difference with the teacher's entry of the same rank; where the two sorted
// curves cross, float32 and float64 may disagree on a sign. The rows' merge
// scales therefore keep one curve above the other (scale e⁻³ on one side;
// the logits of both are uniform in [−4, 4], so their sorted probabilities
// differ by less than that), with each side above in some row; the sign
// logic at crossings is checked in float64 by runtime/cpu's tests.
func TestCrossTokenizerDivergence(t *testing.T) {
	p := newPair(t)
	shapes := []struct {
		N, Vs, Vt, M int
		T, a, b      float32
		scales       bool
	}{
		{5, 11, 7, 0, 1, 0, 1, false},
		{5, 1000, 700, 300, 1.5, 0.3, 0.7, true},
		{5, 700, 1000, 0, 0.75, 0, 1, true},
		{5, 50000, 32000, 20000, 1, 0.4, 0.6, true},
		{3, 151936, 128256, 100000, 1, 0.66, 0.34, true},
	}
	for _, sh := range shapes {
		pairs, sfree, tfree := p.xtokMatch(sh.Vs, sh.Vt, sh.M)
		var pc, pg *kdrt.Tensor
		if sh.M > 0 {
			pc, pg = p.ints("pairs", pairs, sh.M, 2)
		}
		sfc, sfg := p.ints("sfree", sfree, len(sfree))
		tfc, tfg := p.ints("tfree", tfree, len(tfree))
		mc := kdrt.VocabMatch{Pairs: pc, StudentFree: sfc, TeacherFree: tfc}
		mg := kdrt.VocabMatch{Pairs: pg, StudentFree: sfg, TeacherFree: tfg}
		for _, grad := range []bool{false, true} {
			name := fmt.Sprintf("%d×(%d vs %d)/M=%d/T=%g/grad=%v", sh.N, sh.Vs, sh.Vt, sh.M, sh.T, grad)
			par := kdrt.CrossTokenizerParams{Temperature: sh.T, MatchedWeight: sh.a, UnmatchedWeight: sh.b}
			sc, sg := p.logits("student", sh.N, sh.Vs, 4, -1)
			tc, tg := p.logits("teacher", sh.N, sh.Vt, 4, -1)
			var slc, slg, tlc, tlg *kdrt.Tensor
			var sl64, tl64 []float64
			if sh.scales {
				sl, tl := make([]float32, sh.N), make([]float32, sh.N)
				for n := range sh.N {
					// Odd rows: the student's curve above; even rows: below.
					if n%2 == 1 {
						sl[n], tl[n] = -0.5*p.rng.Float32(), -3-p.rng.Float32()
					} else {
						sl[n], tl[n] = -3-p.rng.Float32(), -0.5*p.rng.Float32()
					}
				}
				slc, slg = p.from("slog", kdrt.F32, sl, sh.N)
				tlc, tlg = p.from("tlog", kdrt.F32, tl, sh.N)
				sl64, tl64 = p.host(slc), p.host(tlc)
			}
			w := p.rowWeights(sh.N) // row 1: weight 0
			wc, wg := p.from("weights", kdrt.F32, w, sh.N)
			oc, og := p.rand("losses", kdrt.F32, 1, sh.N) // overwritten
			var dc, dg, dlc, dlg *kdrt.Tensor
			var want []float64
			if grad {
				dc, dg = p.rand("dstudent", kdrt.F32, 1/float32(sh.Vs), sh.N, sh.Vs) // accumulated into
				dlc, dlg = p.rand("dslog", kdrt.F32, 1, sh.N)                        // overwritten
				want = p.host(dc)
			}
			p.cpu.CrossTokenizerDivergence(oc, dc, dlc, sc, tc, slc, tlc, wc, mc, par)
			p.gpu.CrossTokenizerDivergence(og, dg, dlg, sg, tg, slg, tlg, wg, mg, par)
			p.check(name+" losses", oc, og, lossCPUTol(sh.Vs))
			if grad {
				p.check(name+" dstudent", dc, dg, lossCPUTol(sh.Vs))
				p.check(name+" dslog", dlc, dlg, lossCPUTol(sh.Vs))
			}

			losses, dsl := make([]float64, sh.N), make([]float64, sh.N)
			w64 := make([]float64, sh.N)
			for i, v := range w {
				w64[i] = float64(v)
			}
			var dsl64 []float64
			if grad {
				dsl64 = dsl
			}
			cpu.CrossTokenizerRows64(losses, want, dsl64, p.host(sc), p.host(tc), sl64, tl64, w64, sh.N, sh.Vs, sh.Vt, pairs, sfree, tfree, par)
			p.check64(name+" losses", losses, og, 2e-5)
			if grad {
				p.check64(name+" dstudent", want, dg, 2e-5)
				p.check64(name+" dslog", dsl, dlg, 2e-5)
			}
		}
	}
}

// xtokSpans are aligned rows for the fused cross-tokenizer loss tests: G
// spans over Ns student and Nt teacher rows, some merging several tokens
// on either side.
func xtokSpans(r *rand.Rand, Ns, Nt, Vs, Vt int) loss.AlignedRows {
	var a loss.AlignedRows
	s, t := 0, 0
	for s < Ns-3 && t < Nt-3 {
		ns, nt := 1+r.IntN(3), 1+r.IntN(3)
		g := int32(len(a.Student))
		for k := range ns - 1 {
			a.StudentPrefix = append(a.StudentPrefix, loss.Prefix{Span: g, Row: int32(s + k), Token: int32(r.IntN(Vs))})
		}
		for k := range nt - 1 {
			a.TeacherPrefix = append(a.TeacherPrefix, loss.Prefix{Span: g, Row: int32(t + k), Token: int32(r.IntN(Vt))})
		}
		a.Student = append(a.Student, int32(s+ns-1))
		a.Teacher = append(a.Teacher, int32(t+nt-1))
		s, t = s+ns, t+nt
	}
	return a
}

// TestCrossTokenizerFused runs kd/loss's fused cross-tokenizer loss on the
// GPU and on the CPU with the same inputs — hidden states and lm_head in
// F32 and BF16 storage, an online teacher (hidden states and head), and a
// top-k teacher held on the host (scattered into the teacher's logits on
// the device) — at two chunk sizes, and compares the loss and the
// gradients to the hidden states and the lm_head. This covers the gathers
// and scatters (Embedding, EmbeddingBackward) and the merged tokens'
// backward (CrossEntropyBackward) the loss drives around the op.
func TestCrossTokenizerFused(t *testing.T) {
	p := newPair(t)
	const Ns, C, Vs, Nt, Ct, Vt, M, K = 40, 24, 300, 50, 16, 259, 120, 8
	pairs, sfree, tfree := p.xtokMatch(Vs, Vt, M)
	var pr [][2]int32
	for k := 0; k < len(pairs); k += 2 {
		pr = append(pr, [2]int32{pairs[k], pairs[k+1]})
	}
	mc, err := loss.NewVocabMatch(p.cpu, pr, sfree, tfree)
	if err != nil {
		t.Fatal(err)
	}
	mg, err := loss.NewVocabMatch(p.gpu, pr, sfree, tfree)
	if err != nil {
		t.Fatal(err)
	}
	defer mg.Free()
	rows := xtokSpans(p.rng, Ns, Nt, Vs, Vt)
	// A host top-k teacher: K ids per row with log-probabilities of a
	// random distribution, and the log of the rest.
	tk := loss.TeacherTopKHost{K: K, Vocab: Vt, IDs: make([]int32, Nt*K), LogProbs: make([]float32, Nt*K), Tail: make([]float32, Nt)}
	for r := range Nt {
		perm := p.rng.Perm(Vt)
		rest := 1.0
		for k := range K {
			pk := rest * (0.2 + 0.3*p.rng.Float64())
			rest -= pk
			tk.IDs[r*K+k], tk.LogProbs[r*K+k] = int32(perm[k]), float32(math.Log(pk))
		}
		tk.Tail[r] = float32(math.Log(rest))
	}
	cfg := loss.CrossTokenizerConfig{Temperature: 1.5, MatchedWeight: 0.4, UnmatchedWeight: 0.6}
	for _, dt := range dtypes {
		for _, teacherKind := range []string{"online", "topk"} {
			for _, chunk := range []int{7, 0} {
				name := fmt.Sprintf("%s/%s/chunk=%d", dtName(dt), teacherKind, chunk)
				hc, hg := p.from("hidden", dt, p.randVals(Ns*C, 1), Ns, C)
				wc, wg := p.from("head", dt, p.randVals(Vs*C, 0.5), Vs, C)
				gwc, gwg := p.zeros("dhead", kdrt.F32, Vs, C)
				dhc, dhg := p.zeros("dhidden", kdrt.F32, Ns, C)
				var tc, tg loss.Teacher = tk, tk
				if teacherKind == "online" {
					thc, thg := p.from("teacher hidden", dt, p.randVals(Nt*Ct, 1), Nt, Ct)
					twc, twg := p.from("teacher head", dt, p.randVals(Vt*Ct, 0.5), Vt, Ct)
					tc, tg = loss.TeacherHidden{Hidden: thc, Head: twc}, loss.TeacherHidden{Hidden: thg, Head: twg}
				}
				opt := loss.Options{ChunkRows: chunk}
				rc, err := loss.CrossTokenizer(p.cpu, hc, loss.Head{W: wc, G: gwc}, dhc, tc, rows, mc, cfg, 0.8, opt)
				if err != nil {
					t.Fatal(err)
				}
				rg, err := loss.CrossTokenizer(p.gpu, hg, loss.Head{W: wg, G: gwg}, dhg, tg, rows, mg, cfg, 0.8, opt)
				if err != nil {
					t.Fatal(err)
				}
				if math.Abs(rg.Loss-rc.Loss) > 1e-4*math.Max(1, math.Abs(rc.Loss)) {
					t.Errorf("%s: loss GPU %.7g, CPU %.7g", name, rg.Loss, rc.Loss)
				}
				// Under BF16 the gathered rows' gradient is a BF16 product
				// (as the trainer's is): the GPU's and the CPU's sums differ
				// in order, so their rounding may differ by one bf16 ulp.
				tol := 1e-4
				if dt == kdrt.BF16 {
					tol = 1e-2
				}
				p.check(name+" dhidden", dhc, dhg, tol)
				p.check(name+" dhead", gwc, gwg, tol)
			}
		}
	}
}

// randVals are n values uniform in [−scale, scale).
func (p *pair) randVals(n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = scale * (2*p.rng.Float32() - 1)
	}
	return v
}

// BenchmarkCrossTokenizerGPU times the fused cross-tokenizer loss (align:
// matched forward KL and ULD's sorted L1, forward and backward) on the GPU
// for 1,024 spans between a Llama-3-sized student vocabulary (128,256) and a
// Qwen2.5-sized teacher (151,936), half the ids matched, every span merging
// one earlier token on each side. It needs a real GPU (the emulator would
// take hours):
//
//	./cuda.test -test.run '^$' -test.bench CrossTokenizerGPU -test.benchtime 3x
func BenchmarkCrossTokenizerGPU(b *testing.B) {
	g, err := Open()
	if err != nil {
		b.Skipf("needs an NVIDIA GPU: %v", err)
	}
	const G, C, Ct, Vs, Vt, M = 1024, 896, 896, 128256, 151936, 64000
	r := rand.New(rand.NewPCG(1, 1))
	s := &benchSet{b: g, r: r}
	defer s.free()
	hidden, th := s.rand("h", kdrt.F32, 1, 2*G, C), s.rand("th", kdrt.F32, 1, 2*G, Ct)
	head := loss.Head{W: s.rand("w", kdrt.F32, 0.05, Vs, C), G: s.rand("gw", kdrt.F32, 0, Vs, C)}
	teacher := loss.TeacherHidden{Hidden: th, Head: s.rand("tw", kdrt.F32, 0.05, Vt, Ct)}
	dHidden := s.rand("dh", kdrt.F32, 0, 2*G, C)
	if s.err != nil {
		b.Fatal(s.err)
	}
	sp, tp := r.Perm(Vs)[:M], r.Perm(Vt)[:M]
	var pairs [][2]int32
	sIn, tIn := make([]bool, Vs), make([]bool, Vt)
	for k := range M {
		pairs = append(pairs, [2]int32{int32(sp[k]), int32(tp[k])})
		sIn[sp[k]], tIn[tp[k]] = true, true
	}
	var sfree, tfree []int32
	for i, in := range sIn {
		if !in {
			sfree = append(sfree, int32(i))
		}
	}
	for j, in := range tIn {
		if !in {
			tfree = append(tfree, int32(j))
		}
	}
	m, err := loss.NewVocabMatch(g, pairs, sfree, tfree)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Free()
	var rows loss.AlignedRows
	for i := range int32(G) {
		rows.Student = append(rows.Student, 2*i+1)
		rows.Teacher = append(rows.Teacher, 2*i+1)
		rows.StudentPrefix = append(rows.StudentPrefix, loss.Prefix{Span: i, Row: 2 * i, Token: int32(r.IntN(Vs))})
		rows.TeacherPrefix = append(rows.TeacherPrefix, loss.Prefix{Span: i, Row: 2 * i, Token: int32(r.IntN(Vt))})
	}
	cfg := loss.CrossTokenizerConfig{Temperature: 1, MatchedWeight: float64(M) / Vt, UnmatchedWeight: 1 - float64(M)/Vt}
	for b.Loop() {
		if _, err := loss.CrossTokenizer(g, hidden, head, dHidden, teacher, rows, m, cfg, 1, loss.Options{}); err != nil {
			b.Fatal(err)
		}
		if err := g.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(G)*float64(b.N)/b.Elapsed().Seconds(), "spans/s")
}
