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
			attentionDecode(out, q[pos*p.NH*p.HD:(pos+1)*p.NH*p.HD], k, v, p, []int32{int32(pos)}, p.T)
			assertClose(t, "decode row", out, full[pos*p.NH*p.HD:(pos+1)*p.NH*p.HD], 1e-12)
		}
	}
}

// TestKVAppendDecode: two sequences filled into their caches by KVAppend
// (both at once in chunks, then one alone through a one-sequence view of
// its cache, as the engine does) and decoded each at its own position: each
// query row is full causal attention's row at that position, and the cache
// rows past each sequence's end are untouched.
func TestKVAppendDecode(t *testing.T) {
	p := kdrt.AttentionParams{B: 2, NH: 4, NKV: 2, HD: 8, Window: 5}
	p.Scale = float32(1 / math.Sqrt(float64(p.HD)))
	const Tmax, sentinel = 11, 7
	T := []int{9, 4} // sequence b has positions 0…T[b]-1; its query is the last
	be := New()
	r := rand.New(rand.NewPCG(51, 52))
	kvw, qw := p.NKV*p.HD, p.NH*p.HD
	var q, k, v [2][]float64
	for b := range 2 {
		q[b], k[b], v[b] = randn(r, T[b]*qw, 1), randn(r, T[b]*kvw, 1), randn(r, T[b]*kvw, 1)
	}
	tensor := func(dt kdrt.DType, shape ...int) *kdrt.Tensor {
		x, err := be.Alloc("t", dt, shape...)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	ints := func(vals ...int32) *kdrt.Tensor {
		x := tensor(kdrt.I32, len(vals))
		copy(Int32s(x), vals)
		return x
	}
	// rows is positions [from, to) of the sequences seqs, one after the
	// other, as F32 tensors of keys and values.
	rows := func(from, to int, seqs ...int) (*kdrt.Tensor, *kdrt.Tensor) {
		ks, vs := tensor(kdrt.F32, len(seqs)*(to-from), kvw), tensor(kdrt.F32, len(seqs)*(to-from), kvw)
		for i, b := range seqs {
			for j := from; j < to; j++ {
				at := (i*(to-from) + j - from) * kvw
				for c := range kvw {
					Float32s(ks)[at+c], Float32s(vs)[at+c] = float32(k[b][j*kvw+c]), float32(v[b][j*kvw+c])
				}
			}
		}
		return ks, vs
	}
	kc, vc := tensor(kdrt.F32, 2*Tmax, kvw), tensor(kdrt.F32, 2*Tmax, kvw)
	for i := range Float32s(kc) {
		Float32s(kc)[i], Float32s(vc)[i] = sentinel, sentinel
	}
	for _, c := range [][2]int{{0, 3}, {3, 4}} { // both sequences, chunks of 3 and 1
		ks, vs := rows(c[0], c[1], 0, 1)
		at := ints(int32(c[0]), int32(c[0]))
		be.KVAppend(kc, ks, at)
		be.KVAppend(vc, vs, at)
	}
	ks, vs := rows(4, 9, 0) // sequence 0's last five, through a view of its cache
	be.KVAppend(be.Slice(kc, 0, Tmax), ks, ints(4))
	be.KVAppend(be.Slice(vc, 0, Tmax), vs, ints(4))
	for b := range 2 {
		for i, x := range Float32s(kc)[(b*Tmax+T[b])*kvw : (b+1)*Tmax*kvw] {
			if x != sentinel {
				t.Fatalf("sequence %d: cache element %d past its %d positions was written (%v)", b, T[b]*kvw+i, T[b], x)
			}
		}
	}
	qt, out := tensor(kdrt.F32, 2, qw), tensor(kdrt.F32, 2, qw)
	for b := range 2 {
		for c := range qw {
			Float32s(qt)[b*qw+c] = float32(q[b][(T[b]-1)*qw+c])
		}
	}
	at := ints(int32(T[0]-1), int32(T[1]-1))
	be.AttentionDecode(out, qt, kc, vc, at, p)
	for b := range 2 {
		pb := p
		pb.B, pb.T = 1, T[b]
		full, lse := make([]float64, T[b]*qw), make([]float64, p.NH*T[b])
		attentionForward(full, lse, q[b], k[b], v[b], pb, 3)
		got := make([]float64, qw)
		for c := range qw {
			got[c] = float64(Float32s(out)[b*qw+c])
		}
		assertClose(t, "decode row", got, full[(T[b]-1)*qw:], 1e-5)
	}
	// Positions past the cache are a caller's bug the reference refuses.
	for what, call := range map[string]func(){
		"AttentionDecode": func() { be.AttentionDecode(out, qt, kc, vc, ints(Tmax, 0), p) },
		"KVAppend":        func() { be.KVAppend(kc, tensor(kdrt.F32, 4, kvw), ints(0, Tmax-1)) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s past the cache did not panic", what)
				}
			}()
			call()
		}()
	}
}
