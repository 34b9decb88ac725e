package data

import (
	"math/bits"
	"math/rand/v2"
)

// Random streams: one per use, so that the split, the packing order and each
// epoch's order are independent draws from one seed.
const (
	streamSplit uint64 = 0x6b64_7370_6c69_7400 // "kdsplit"
	streamPack  uint64 = 0x6b64_7061_636b_0000 // "kdpack"
	streamEpoch uint64 = 0x6b64_6570_6f63_6800 // "kdepoch" + epoch
)

// permutation returns a uniformly random permutation of 0…n−1 drawn from
// PCG(seed, stream). The generator (PCG-DXSM, specified by math/rand/v2) and
// the Fisher–Yates shuffle with Lemire's bounded draw are both ours to keep
// fixed, so a seed gives the same order on every Go version — what resuming
// from a checkpoint needs.
func permutation(n int, seed, stream uint64) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	r := rand.NewPCG(seed, stream)
	for i := n - 1; i > 0; i-- {
		j := int(bounded(r, uint64(i+1)))
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// bounded draws uniformly from [0, n), n > 0 (Lemire, "Fast random integer
// generation in an interval", 2019).
func bounded(r *rand.PCG, n uint64) uint64 {
	hi, lo := bits.Mul64(r.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(r.Uint64(), n)
		}
	}
	return hi
}
