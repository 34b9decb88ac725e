package cpu

import (
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// BenchmarkVocabLosses times the row losses alone (no lm_head GEMM) at a real
// vocabulary width, 8 rows with their gradient: the part of a fused KD step
// that the float64 accumulation changes. Compare builds with benchstat, or
// run BenchmarkKDFusedVsPlain in kd/loss for the whole step.
func BenchmarkVocabLosses(b *testing.B) {
	const N, V, K = 8, bigV, 64
	be := New()
	s, te := bigLogits(4, N, V)
	ts, tt := shaped(f32Tensor(be, "s", s), N, V), shaped(f32Tensor(be, "t", te), N, V)
	w := f32Tensor(be, "w", []float64{1, 1, 1, 1, 1, 1, 1, 1})
	losses, _ := be.Alloc("losses", kdrt.F32, N)
	ds, _ := be.Alloc("ds", kdrt.F32, N, V)
	ids, _ := be.Alloc("ids", kdrt.I32, N, K)
	lp, _ := be.Alloc("lp", kdrt.F32, N, K)
	for n := range N {
		for k := range K {
			Int32s(ids)[n*K+k] = int32(k * 997)
			Float32s(lp)[n*K+k] = -float32(k+1) * 0.1
		}
	}
	tg, _ := be.Alloc("targets", kdrt.I32, N)
	for _, kind := range []kdrt.DivergenceKind{kdrt.ForwardKL, kdrt.JSD} {
		p := kdrt.DivergenceParams{Kind: kind, Temperature: 1, Beta: 0.5, Tail: kdrt.TailBucket}
		b.Run("dense/"+kind.String(), func(b *testing.B) {
			for b.Loop() {
				be.Divergence(losses, ds, ts, tt, w, p)
			}
		})
		b.Run("sparse/"+kind.String(), func(b *testing.B) {
			for b.Loop() {
				be.SparseDivergence(losses, ds, ts, ids, lp, nil, w, p)
			}
		})
	}
	b.Run("cross_entropy", func(b *testing.B) {
		for b.Loop() {
			be.CrossEntropy(losses, ts, tg)
			be.CrossEntropyBackward(ds, ts, tg, nil, 1)
		}
	})
}
