package sgemm

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"testing"
	"time"
)

func TestTmpTune(t *testing.T) {
	if os.Getenv("TUNE") == "" {
		t.Skip()
	}
	rng := rand.New(rand.NewPCG(1, 1))
	var ps []*problem
	for _, s := range gpt2Shapes {
		ps = append(ps, randProblem(rng, s.transA, s.transB, s.m, s.n, s.k, 1, 0, 0))
	}
	type cfg struct{ kc, mc, nc int }
	var cfgs []cfg
	cfgs = []cfg{{256, 96, 1536}, {256, 192, 3072}, {256, 48, 768}, {384, 96, 1536}, {192, 96, 1536}, {128, 96, 1536}}
	if os.Getenv("TUNE") == "avx2" {
		active = avx2Kernel
	}
	base := *active
	res := map[cfg][][]float64{}
	for rep := 0; rep < 5; rep++ {
		for _, c := range cfgs {
			k := base
			k.kc, k.mc, k.nc = c.kc, c.mc, c.nc
			active = &k
			var row []float64
			for _, p := range ps {
				best := 1e9
				for r := 0; r < 3; r++ {
					t0 := time.Now()
					Sgemm(p.transA, p.transB, p.m, p.n, p.k, 1, p.a, p.lda, p.b, p.ldb, 0, p.c, p.ldc)
					best = min(best, time.Since(t0).Seconds())
				}
				row = append(row, 2*float64(p.m*p.n*p.k)/best/1e9)
			}
			res[c] = append(res[c], row)
		}
	}
	active = &base
	type out struct {
		c   cfg
		med []float64
		geo float64
	}
	var outs []out
	for c, rows := range res {
		o := out{c: c, geo: 1}
		for j := range rows[0] {
			var v []float64
			for _, r := range rows {
				v = append(v, r[j])
			}
			sort.Float64s(v)
			o.med = append(o.med, v[len(v)/2])
			o.geo *= v[len(v)/2]
		}
		outs = append(outs, o)
	}
	sort.Slice(outs, func(i, j int) bool { return outs[i].geo > outs[j].geo })
	for _, o := range outs {
		s := fmt.Sprintf("%v:", o.c)
		for _, v := range o.med {
			s += fmt.Sprintf(" %5.0f", v)
		}
		t.Log(s)
	}
}
