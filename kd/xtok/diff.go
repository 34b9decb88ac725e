package xtok

import (
	"errors"
	"fmt"
)

// ErrTooDifferent is returned (wrapped) when two texts need more byte edits
// than the limit to turn one into the other: they are not renderings of one
// example.
var ErrTooDifferent = errors.New("xtok: the texts are too different to align")

// Block is a stretch of text both sides share: a[A:A+Len] == b[B:B+Len].
type Block struct{ A, B, Len int }

// commonBlocks returns the shared stretches of a minimal edit script
// between a and b (insertions and deletions of bytes; Myers, "An O(ND)
// difference algorithm and its variations", 1986), in order and merged
// where contiguous. The common prefix and suffix are taken first, so that
// identical texts cost O(N). The search keeps every round's frontier for the
// walk back, O(D²) memory for D edits; more than maxEdits edits is
// ErrTooDifferent.
func commonBlocks(a, b []byte, maxEdits int) ([]Block, error) {
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	var out []Block
	add := func(blk Block) {
		if blk.Len == 0 {
			return
		}
		if n := len(out); n > 0 && out[n-1].A+out[n-1].Len == blk.A && out[n-1].B+out[n-1].Len == blk.B {
			out[n-1].Len += blk.Len
			return
		}
		out = append(out, blk)
	}
	add(Block{0, 0, pre})
	mid, err := myers(a[pre:len(a)-suf], b[pre:len(b)-suf], maxEdits)
	if err != nil {
		return nil, err
	}
	for _, blk := range mid {
		add(Block{blk.A + pre, blk.B + pre, blk.Len})
	}
	add(Block{len(a) - suf, len(b) - suf, suf})
	return out, nil
}

// myers is the greedy forward search for the shortest edit script between
// a and b, returning the diagonal runs (matches) of one such script in
// order. v[k] is the furthest x reached on diagonal k = x − y; trace[d]
// holds v[−d … d] as it was before round d.
func myers(a, b []byte, maxEdits int) ([]Block, error) {
	N, M := len(a), len(b)
	maxD := min(N+M, maxEdits)
	off := maxD + 1
	v := make([]int, 2*maxD+3)
	var trace [][]int32
	D := -1
	for d := 0; d <= maxD && D < 0; d++ {
		snap := make([]int32, 2*d+1)
		for k := -d; k <= d; k++ {
			snap[k+d] = int32(v[off+k])
		}
		trace = append(trace, snap)
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || (k != d && v[off+k-1] < v[off+k+1]) {
				x = v[off+k+1] // down: an insertion from b
			} else {
				x = v[off+k-1] + 1 // right: a deletion from a
			}
			y := x - k
			for x < N && y < M && a[x] == b[y] {
				x++
				y++
			}
			v[off+k] = x
			if x >= N && y >= M {
				D = d
				break
			}
		}
	}
	if D < 0 {
		return nil, fmt.Errorf("%w: they differ in more than %d bytes (of %d and %d)", ErrTooDifferent, maxEdits, N, M)
	}
	// Walk back from (N, M): each round's snake is the diagonal run after
	// its edit.
	var rev []Block
	x, y := N, M
	for d := D; d > 0; d-- {
		tv := trace[d]
		k := x - y
		prevK := k - 1
		if k == -d || (k != d && tv[k-1+d] < tv[k+1+d]) {
			prevK = k + 1
		}
		px := int(tv[prevK+d])
		py := px - prevK
		sx, sy := px+1, py // after a deletion from a
		if prevK == k+1 {
			sx, sy = px, py+1 // after an insertion from b
		}
		if x > sx {
			rev = append(rev, Block{sx, sy, x - sx})
		}
		x, y = px, py
	}
	if x > 0 { // round 0: the leading snake from (0, 0)
		rev = append(rev, Block{0, 0, x})
	}
	out := make([]Block, len(rev))
	for i, blk := range rev {
		out[len(rev)-1-i] = blk
	}
	return out, nil
}
