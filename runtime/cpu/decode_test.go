package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// TestAttentionDecodeMatchesFull: attending one position at a time against
// cached keys gives, row by row, what full causal attention gives.
func TestAttentionDecodeMatchesFull(t *testing.T) {
	for _, p := range []kdrt.AttentionParams{
		{B: 1, T: 6, NH: 6, NKV: 2, HD: 4},
		{B: 1, T: 7, NH: 3, NKV: 3, HD: 5, Window: 3},
	} {
		p.Scale = float32(1 / math.Sqrt(float64(p.HD)))
		r := rand.New(rand.NewPCG(50, uint64(p.T)))
		nq, nk := p.T*p.NH*p.HD, p.T*p.NKV*p.HD
		q, k, v := randn(r, nq, 1), randn(r, nk, 1), randn(r, nk, 1)
		full, lse := make([]float64, nq), make([]float64, p.NH*p.T)
		attentionForward(full, lse, q, k, v, p, 3)
		for pos := range p.T {
			out := make([]float64, p.NH*p.HD)
			attentionDecode(out, q[pos*p.NH*p.HD:(pos+1)*p.NH*p.HD], k, v, p, pos, p.T)
			assertClose(t, "decode row", out, full[pos*p.NH*p.HD:(pos+1)*p.NH*p.HD], 1e-12)
		}
	}
}
