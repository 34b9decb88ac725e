package sgemm

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// gpt2Shapes are the products of one GPT-2 124M training step with 256
// tokens (B·T = 256, C = 768, V = 50257): the forward matmuls (NT: out =
// inp·Wᵀ), the weight gradients (TN: dW = doutᵀ·inp) and the input gradients
// (NN: dinp = dout·W).
var gpt2Shapes = []struct {
	name           string
	transA, transB bool
	m, n, k        int
}{
	{"qkv", false, true, 256, 2304, 768},
	{"attproj", false, true, 256, 768, 768},
	{"fc", false, true, 256, 3072, 768},
	{"fcproj", false, true, 256, 768, 3072},
	{"lm_head", false, true, 256, 50257, 768},
	{"dW_attproj", true, false, 768, 768, 256},
	{"dW_lm_head", true, false, 50257, 768, 256},
	{"dinp_qkv", false, false, 256, 768, 2304},
	{"dinp_lm_head", false, false, 256, 768, 50257},
}

// BenchmarkGPT2 compares Sgemm with gonum's on each shape; GFLOP/s counts
// 2·m·n·k per product. The machine is shared and noisy: use -count and
// compare medians.
func BenchmarkGPT2(b *testing.B) {
	for _, s := range gpt2Shapes {
		tr := map[[2]bool]string{{false, true}: "NT", {true, false}: "TN", {false, false}: "NN", {true, true}: "TT"}[[2]bool{s.transA, s.transB}]
		rng := rand.New(rand.NewPCG(1, 1))
		p := randProblem(rng, s.transA, s.transB, s.m, s.n, s.k, 1, 0, 0)
		flops := 2 * float64(s.m) * float64(s.n) * float64(s.k)
		report := func(b *testing.B) {
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		}
		name := fmt.Sprintf("%s_%s_%dx%dx%d", s.name, tr, s.m, s.n, s.k)
		// Every assembly kernel this CPU runs, the default first. (The
		// portable kernel would take seconds per lm_head product.)
		for _, kern := range hostKernels {
			b.Run(name+"/sgemm="+kern.name, func(b *testing.B) {
				saved := active
				active = kern
				defer func() { active = saved }()
				for b.Loop() {
					Sgemm(p.transA, p.transB, p.m, p.n, p.k, 1, p.a, p.lda, p.b, p.ldb, 0, p.c, p.ldc)
				}
				report(b)
			})
		}
		b.Run(name+"/gonum", func(b *testing.B) {
			tA, tB := blas.NoTrans, blas.NoTrans
			if p.transA {
				tA = blas.Trans
			}
			if p.transB {
				tB = blas.Trans
			}
			var impl gonum.Implementation
			for b.Loop() {
				impl.Sgemm(tA, tB, p.m, p.n, p.k, 1, p.a, p.lda, p.b, p.ldb, 0, p.c, p.ldc)
			}
			report(b)
		})
	}
}

// BenchmarkKernel measures one micro-kernel call on L1-resident panels: the
// ceiling Sgemm's blocking can approach on one core.
func BenchmarkKernel(b *testing.B) {
	for _, kern := range append(append([]*kernel{}, hostKernels...), genericKernel) {
		b.Run(kern.name, func(b *testing.B) {
			const k = 256
			a := make([]float32, kern.mr*k)
			bb := make([]float32, kern.nr*k)
			c := make([]float32, kern.mr*kern.nr)
			for b.Loop() {
				kern.fn(k, a, bb, c, kern.nr, 1, 1)
			}
			b.ReportMetric(2*float64(kern.mr*kern.nr*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
