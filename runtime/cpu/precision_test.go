package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/kdnative/kdnative/internal/ref"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// The tests below run the float32 backend at a real vocabulary size (Qwen2's
// 151,936 logits) against internal/ref's float64 definitions on the same
// inputs (every input is a float32 value, so both sides see identical
// numbers). At this width a float32 running sum over the row loses about
// V·ε/2 ≈ 1e-2 relative in the worst case and ~1e-4 typically; the losses
// must stay within what the float32 inputs and outputs themselves allow.

const bigV = 151936

// Tolerances at bigV. A loss is compared relatively; a gradient row by its
// largest error over its largest entry (its max-norm), the measure the GPU
// conformance tests use. float32 rounding of the result alone is 6e-8; the
// float32 log-probabilities a kernel keeps per entry (|log q| ≈ 12, so 1e-6
// absolute) bound what a loss near zero can keep.
const (
	bigLossTol = 5e-7
	bigGradTol = 5e-7
)

// bigLogits returns N rows of float32-valued logits shaped like a language
// model's: a broad normal body (std 2.5) with a handful of strong entries.
// Row 1 of the student (of two) is the teacher plus small noise — a student
// near its teacher, whose divergence is small and so most sensitive to
// rounding; row 0 is independent.
func bigLogits(seed uint64, N, V int) (student, teacher []float64) {
	r := rand.New(rand.NewPCG(seed, 0xb16))
	student, teacher = make([]float64, N*V), make([]float64, N*V)
	for n := range N {
		for j := range V {
			teacher[n*V+j] = float64(float32(r.NormFloat64() * 2.5))
		}
		for range 8 {
			j := r.IntN(V)
			teacher[n*V+j] = float64(float32(teacher[n*V+j] + 8 + 4*r.Float64()))
		}
		for j := range V {
			s := r.NormFloat64() * 2.5
			if n%2 == 1 {
				s = teacher[n*V+j] + r.NormFloat64()*0.3
			}
			student[n*V+j] = float64(float32(s))
		}
	}
	return student, teacher
}

// bigErrors returns a row's relative loss error and its gradient's max-norm
// error.
func bigErrors(gotLoss, wantLoss float64, gotGrad, wantGrad []float64) (lossErr, gradErr float64) {
	return math.Abs(gotLoss-wantLoss) / math.Abs(wantLoss), ref.MaxNormErr(gotGrad, wantGrad)
}

func checkBig(t *testing.T, what string, lossErr, gradErr float64) {
	t.Helper()
	t.Logf("%-40s loss %.2e  gradient %.2e", what, lossErr, gradErr)
	if !(lossErr <= bigLossTol) || !(gradErr <= bigGradTol) {
		t.Errorf("%s at V=%d: loss off by %.3g relative (tolerance %g), gradient by %.3g of its max-norm (tolerance %g)",
			what, bigV, lossErr, bigLossTol, gradErr, bigGradTol)
	}
}

// TestDivergenceLargeVocab: every dense divergence, value and gradient, at
// V = 151,936 on the float32 backend against the float64 definitions.
func TestDivergenceLargeVocab(t *testing.T) {
	const N, V = 2, bigV
	be := New()
	s, te := bigLogits(1, N, V)
	ts, tt := shaped(f32Tensor(be, "s", s), N, V), shaped(f32Tensor(be, "t", te), N, V)
	w := f32Tensor(be, "w", []float64{1, 1})
	for _, kind := range allKinds {
		for _, T := range []float64{1, 2} {
			const beta, alpha = 0.5, 0.125
			p := kdrt.DivergenceParams{Kind: kind, Temperature: float32(T), Beta: beta, Alpha: alpha}
			losses, _ := be.Alloc("losses", kdrt.F32, N)
			ds, _ := be.Alloc("ds", kdrt.F32, N, V)
			be.Divergence(losses, ds, ts, tt, w, p)
			for n := range N {
				pt, q := ref.Softmax(te[n*V:(n+1)*V], T), ref.Softmax(s[n*V:(n+1)*V], T)
				want := ref.Divergence(kind, pt, q, beta, alpha)
				grad := ref.SoftmaxBackward(q, ref.DivergenceGradQ(kind, pt, q, beta, alpha), T)
				le, ge := bigErrors(float64(Float32s(losses)[n]), want, to64(Float32s(ds)[n*V:(n+1)*V]), grad)
				checkBig(t, fmt.Sprintf("%v T=%g row %d (D=%.3g)", kind, T, n, want), le, ge)
			}
		}
	}
}

// TestSparseDivergenceLargeVocab: the sparse teacher (its top 64 of 151,936
// ids; the rest as a tail bin of mass 1 − Σ top-k, or the top-k
// renormalized) for every divergence.
func TestSparseDivergenceLargeVocab(t *testing.T) {
	const N, V, K = 2, bigV, 64
	be := New()
	s, te := bigLogits(2, N, V)
	ids := make([]int32, N*K)
	lp := make([]float64, N*K)
	for n := range N {
		pt := ref.Softmax(te[n*V:(n+1)*V], 1)
		order := make([]int, V)
		for j := range order {
			order[j] = j
		}
		sort.Slice(order, func(a, b int) bool { return pt[order[a]] > pt[order[b]] })
		for k := range K {
			ids[n*K+k] = int32(order[k])
			lp[n*K+k] = float64(float32(math.Log(pt[order[k]])))
		}
	}
	ts := shaped(f32Tensor(be, "s", s), N, V)
	ti, _ := be.Alloc("ids", kdrt.I32, N, K)
	copy(Int32s(ti), ids)
	tlp := shaped(f32Tensor(be, "lp", lp), N, K)
	w := f32Tensor(be, "w", []float64{1, 1})
	for _, tail := range []kdrt.TailMode{kdrt.TailBucket, kdrt.Renormalize} {
		for _, kind := range allKinds {
			const T, beta, alpha = 1.5, 0.5, 0.125
			p := kdrt.DivergenceParams{Kind: kind, Temperature: T, Beta: beta, Alpha: alpha, Tail: tail}
			losses, _ := be.Alloc("losses", kdrt.F32, N)
			ds, _ := be.Alloc("ds", kdrt.F32, N, V)
			be.SparseDivergence(losses, ds, ts, ti, tlp, nil, w, p)
			for n := range N {
				row, rowIDs := s[n*V:(n+1)*V], ids[n*K:(n+1)*K]
				pb, qb := refSparseBins(row, rowIDs, lp[n*K:(n+1)*K], T, tail)
				want := ref.Divergence(kind, pb, qb, beta, alpha)
				// Each bin's gradient reaches its ids through the softmax
				// (renormalized over the top-k, or over the whole row with the
				// tail bin holding the rest): id j of bin b gets
				// (1/T)·q_j·(g_b − Σ_b' q_b'·g_b'), q_j in the same measure as
				// the bins; ids in no bin get 0.
				gb := ref.DivergenceGradQ(kind, pb, qb, beta, alpha)
				var sg float64
				for b := range qb {
					sg += qb[b] * gb[b]
				}
				q := ref.Softmax(row, T)
				bin := make([]int, V)
				for j := range bin {
					bin[j] = K // the tail bin, or none when renormalized
				}
				var topMass float64
				for k, id := range rowIDs {
					bin[id] = k
					topMass += q[id]
				}
				grad := make([]float64, V)
				for j := range grad {
					switch {
					case tail == kdrt.TailBucket:
						grad[j] = q[j] * (gb[bin[j]] - sg) / T
					case bin[j] < K:
						grad[j] = q[j] / topMass * (gb[bin[j]] - sg) / T
					}
				}
				le, ge := bigErrors(float64(Float32s(losses)[n]), want, to64(Float32s(ds)[n*V:(n+1)*V]), grad)
				checkBig(t, fmt.Sprintf("sparse tail=%d %v row %d (D=%.3g)", tail, kind, n, want), le, ge)
			}
		}
	}
}

// TestCrossEntropyLargeVocab: cross-entropy and its gradient at V = 151,936
// (also the path of DPO's token log-probabilities) against the float64
// log-sum-exp.
func TestCrossEntropyLargeVocab(t *testing.T) {
	const N, V = 2, bigV
	be := New()
	s, _ := bigLogits(3, N, V)
	ts := shaped(f32Tensor(be, "s", s), N, V)
	targets := []int32{17, 90001}
	tg, _ := be.Alloc("targets", kdrt.I32, N)
	copy(Int32s(tg), targets)
	losses, _ := be.Alloc("losses", kdrt.F32, N)
	dl, _ := be.Alloc("dl", kdrt.F32, N, V)
	be.CrossEntropy(losses, ts, tg)
	be.CrossEntropyBackward(dl, ts, tg, nil, 1)
	for n := range N {
		row := s[n*V : (n+1)*V]
		want := ref.CrossEntropy(row, int(targets[n]))
		grad := ref.Softmax(row, 1)
		grad[targets[n]]--
		le, ge := bigErrors(float64(Float32s(losses)[n]), want, to64(Float32s(dl)[n*V:(n+1)*V]), grad)
		checkBig(t, fmt.Sprintf("cross-entropy row %d (%.4g)", n, want), le, ge)
	}
}
