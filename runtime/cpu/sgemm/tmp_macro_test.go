package sgemm

import (
	"fmt"
	"testing"
)

func BenchmarkTmpMacro(b *testing.B) {
	kern := *avx512Kernel
	for _, kc := range []int{128, 256} {
		for _, mc := range []int{96, 192} {
			nc := 1536
			b.Run(fmt.Sprintf("kc%d_mc%d", kc, mc), func(b *testing.B) {
				kern.kc, kern.mc, kern.nc = kc, mc, nc
				buf := getBuffers(&kern)
				c := make([]float32, mc*nc)
				t := &task{kern: &kern, m: mc, n: nc, k: kc, alpha: 1, beta: 1, c: c, ldc: nc}
				for b.Loop() {
					t.macro(buf, 0, mc, 0, nc, kc, 1)
				}
				b.ReportMetric(2*float64(mc*nc*kc)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
