package cpu

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// CrossTokenizerDivergence implements runtime.Backend.
func (*Backend) CrossTokenizerDivergence(losses, dstudent, dslog, student, teacher, slog, tlog, weights *kdrt.Tensor, m kdrt.VocabMatch, p kdrt.CrossTokenizerParams) {
	N, Vs, Vt := student.Rows(), student.Cols(), teacher.Cols()
	if teacher.Rows() != N || losses.Numel() != N || weights.Numel() != N {
		panic(fmt.Sprintf("cpu: cross-tokenizer divergence %v vs %v (losses %v, weights %v): shapes do not agree", student, teacher, losses, weights))
	}
	var ds, dsl, sl, tl []float32
	if dstudent != nil {
		mustSameNumel("cross-tokenizer divergence", dstudent, student)
		ds = Float32s(dstudent)
	}
	if dslog != nil {
		mustRows("cross-tokenizer divergence dslog", N, dslog)
		dsl = Float32s(dslog)
	}
	if slog != nil {
		mustRows("cross-tokenizer divergence slog", N, slog)
		sl = Float32s(slog)
	}
	if tlog != nil {
		mustRows("cross-tokenizer divergence tlog", N, tlog)
		tl = Float32s(tlog)
	}
	pairs, sfree, tfree := checkVocabMatch(m, Vs, Vt)
	crossTokenizerRows(Float32s(losses), ds, dsl, Float32s(student), Float32s(teacher), sl, tl, Float32s(weights), N, Vs, Vt, pairs, sfree, tfree, p)
}

// checkVocabMatch returns the match's ids, panicking unless every student id
// in [0, Vs) and every teacher id in [0, Vt) appears exactly once (in a pair
// or its side's free list) and the free lists increase.
func checkVocabMatch(m kdrt.VocabMatch, Vs, Vt int) (pairs, sfree, tfree []int32) {
	if m.StudentFree == nil || m.TeacherFree == nil {
		panic("cpu: cross-tokenizer divergence: the vocabulary match has no free-id lists")
	}
	if m.Pairs != nil {
		if m.Pairs.Cols() != 2 {
			panic(fmt.Sprintf("cpu: cross-tokenizer divergence: pairs %v must be [M, 2]", m.Pairs))
		}
		pairs = Int32s(m.Pairs)
	}
	sfree, tfree = Int32s(m.StudentFree), Int32s(m.TeacherFree)
	check := func(side string, V int, free []int32, col int) {
		seen := make([]bool, V)
		mark := func(id int32) {
			if id < 0 || int(id) >= V || seen[id] {
				panic(fmt.Sprintf("cpu: cross-tokenizer divergence: %s id %d is outside [0, %d) or listed twice in the vocabulary match", side, id, V))
			}
			seen[id] = true
		}
		for k := col; k < len(pairs); k += 2 {
			mark(pairs[k])
		}
		for k, id := range free {
			mark(id)
			if k > 0 && free[k-1] >= id {
				panic(fmt.Sprintf("cpu: cross-tokenizer divergence: the %s free ids must increase (%d after %d)", side, id, free[k-1]))
			}
		}
		if len(pairs)/2+len(free) != V {
			panic(fmt.Sprintf("cpu: cross-tokenizer divergence: the vocabulary match covers %d of the %s's %d ids", len(pairs)/2+len(free), side, V))
		}
	}
	check("student", Vs, sfree, 0)
	check("teacher", Vt, tfree, 1)
	return pairs, sfree, tfree
}

// logSoftmax64Sum writes ls = log_softmax(x·invT) as logSoftmaxRow does,
// but with the sum of exponentials accumulated in float64 (a float32 sum
// over a 150k vocabulary drifts by 1e-4). It returns the row's max of x·invT
// and log Σ exp(x·invT − max), the numbers each entry is made from.
func logSoftmax64Sum[F Float](ls, x []F, invT F) (mx, logSum F) {
	mx = F(negInf)
	for _, v := range x {
		mx = max(mx, v*invT)
	}
	if math.IsInf(float64(mx), -1) {
		for i := range ls {
			ls[i] = F(negInf)
		}
		return mx, 0
	}
	var sum float64
	for _, v := range x {
		sum += float64(exp(v*invT - mx))
	}
	logSum = F(math.Log(sum))
	for i, v := range x {
		ls[i] = (v*invT - mx) - logSum
	}
	return mx, logSum
}

// sign is −1, 0 or 1.
func sign[F Float](x F) F {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}

// crossTokenizerRows is CrossTokenizerDivergence over rows. pairs is flat
// (student id, teacher id)·M. The divergence is written as in
// binDivergence: qg_i = q_i·∂D/∂q_i per student id, then the softmax chain
// ∂D/∂s_i = (1/τ)·(qg_i − q_i·S) with S = Σ_i qg_i, and ∂D/∂slog = S (the
// scale multiplies every m_s entry, so its log-derivative is Σ m_s·∂D/∂m_s).
//
// Per student id: matched i (with teacher id j): qg_i = −a·m_t[j]; free i at
// rank r of the sorted free ids: qg_i = b·m_s[i]·sign(m_s[i] − m_t sorted at
// r), the sorted teacher entry being 0 past the teacher's free ids.
// Sums over the vocabulary are taken in float64.
func crossTokenizerRows[F Float](losses, dstudent, dslog, student, teacher, slog, tlog, weights []F, N, Vs, Vt int, pairs, sfree, tfree []int32, p kdrt.CrossTokenizerParams) {
	invT := 1 / F(p.Temperature)
	aw, bw := F(p.MatchedWeight), F(p.UnmatchedWeight)
	ns, nt := len(sfree), len(tfree)
	L := max(ns, nt)
	parallelFor(N, 40*(Vs+Vt), func(lo, hi int) {
		ls, lt, qg := make([]F, Vs), make([]F, Vt), make([]F, Vs)
		order := make([]int32, ns)
		tsorted := make([]F, nt)
		for n := lo; n < hi; n++ {
			w := weights[n]
			if w == 0 {
				losses[n] = 0
				if dslog != nil {
					dslog[n] = 0
				}
				continue
			}
			srow, trow := student[n*Vs:(n+1)*Vs], teacher[n*Vt:(n+1)*Vt]
			logSoftmax64Sum(ls, srow, invT)
			mxT, logSumT := logSoftmax64Sum(lt, trow, invT)
			var cs, ct F
			if slog != nil {
				cs = slog[n]
			}
			if tlog != nil {
				ct = tlog[n]
			}
			var kl, uld float64
			for k := 0; k < len(pairs); k += 2 {
				i, j := pairs[k], pairs[k+1]
				lmt := ct + lt[j]
				mt := exp(lmt)
				qg[i] = -aw * mt
				if mt > 0 {
					kl += float64(mt * (lmt - (cs + ls[i])))
				}
			}
			// The free ids in decreasing order of logit (ties by id), and
			// the teacher's free logits in decreasing order: the order of
			// their probabilities.
			copy(order, sfree)
			slices.SortFunc(order, func(a, b int32) int {
				if srow[a] != srow[b] {
					if srow[a] > srow[b] {
						return -1
					}
					return 1
				}
				return cmp.Compare(a, b)
			})
			for r, j := range tfree {
				tsorted[r] = trow[j]
			}
			slices.SortFunc(tsorted, func(a, b F) int { return cmp.Compare(b, a) })
			for r := range L {
				var a, b F
				if r < ns {
					a = exp(cs + ls[order[r]])
				}
				if r < nt {
					lb := F(negInf)
					if !math.IsInf(float64(mxT), -1) {
						lb = (tsorted[r]*invT - mxT) - logSumT
					}
					b = exp(ct + lb)
				}
				uld += math.Abs(float64(a - b))
				if r < ns {
					qg[order[r]] = bw * a * sign(a-b)
				}
			}
			losses[n] = F(float64(w) * (float64(aw)*kl + float64(bw)*uld))
			var s float64
			for _, v := range qg {
				s += float64(v)
			}
			if dslog != nil {
				dslog[n] = F(float64(w) * s)
			}
			if dstudent == nil {
				continue
			}
			ds, S := dstudent[n*Vs:(n+1)*Vs], F(s)
			for i, v := range qg {
				ds[i] += w * invT * (v - exp(ls[i])*S)
			}
		}
	})
}

// CrossTokenizerRows64 is the float64 instance of the algorithm behind
// CrossTokenizerDivergence (the same generic code) on plain slices, with
// pairs flat as (student id, teacher id)·M; slog, tlog, dstudent and dslog
// may be nil. Like DivergenceRows64 it exists for the GPU conformance tests.
func CrossTokenizerRows64(losses, dstudent, dslog, student, teacher, slog, tlog, weights []float64, N, Vs, Vt int, pairs, sfree, tfree []int32, p kdrt.CrossTokenizerParams) {
	crossTokenizerRows(losses, dstudent, dslog, student, teacher, slog, tlog, weights, N, Vs, Vt, pairs, sfree, tfree, p)
}
