package sgemm

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestTmpBig(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for _, s := range gpt2Shapes[:6] {
		p := randProblem(rng, s.transA, s.transB, s.m, s.n, s.k, 1, 0, 0)
		c := make([]float32, len(p.c))
		t0 := time.Now()
		Sgemm(p.transA, p.transB, p.m, p.n, p.k, 1, p.a, p.lda, p.b, p.ldb, 0, c, p.ldc)
		el := time.Since(t0)
		worst := 0.0
		for trial := 0; trial < 2000; trial++ {
			i, j := rng.IntN(s.m), rng.IntN(s.n)
			var sum, abs float64
			for l := 0; l < s.k; l++ {
				x := p.opA(i, l) * p.opB(l, j)
				sum += x
				abs += math.Abs(x)
			}
			worst = max(worst, math.Abs(float64(c[i*p.ldc+j])-sum)/abs)
		}
		t.Logf("%s: worst rel err %.2g, %.1f GFLOP/s", s.name, worst, 2*float64(s.m*s.n*s.k)/el.Seconds()/1e9)
	}
}
