package xtok

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// lcsLen is the length of a longest common subsequence by dynamic
// programming: the bytes a minimal insert/delete script keeps.
func lcsLen(a, b []byte) int {
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			switch {
			case a[i-1] == b[j-1]:
				cur[j] = prev[j-1] + 1
			case prev[j] >= cur[j-1]:
				cur[j] = prev[j]
			default:
				cur[j] = cur[j-1]
			}
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// checkBlocks fails unless the blocks are shared stretches, in increasing
// order on both sides, not touching (they would have been merged), and keep
// as many bytes as a longest common subsequence.
func checkBlocks(t *testing.T, a, b []byte, blocks []Block) {
	t.Helper()
	kept, ea, eb := 0, -1, -1
	for _, blk := range blocks {
		if blk.Len <= 0 || !bytes.Equal(a[blk.A:blk.A+blk.Len], b[blk.B:blk.B+blk.Len]) {
			t.Fatalf("block %+v of %q / %q is not shared", blk, a, b)
		}
		if blk.A < ea || blk.B < eb || (blk.A == ea && blk.B == eb) {
			t.Fatalf("block %+v out of order or unmerged after ends (%d, %d) in %v", blk, ea, eb, blocks)
		}
		ea, eb = blk.A+blk.Len, blk.B+blk.Len
		kept += blk.Len
	}
	if want := lcsLen(a, b); kept != want {
		t.Fatalf("%q / %q: blocks keep %d bytes, a longest common subsequence %d (%v)", a, b, kept, want, blocks)
	}
}

// TestCommonBlocksMinimal checks the diff against the dynamic-programming
// LCS on random byte strings over small alphabets (many repeats, so many
// optimal scripts), edited copies of one string, and edge cases.
func TestCommonBlocksMinimal(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	rnd := func(n int, alpha string) []byte {
		out := make([]byte, n)
		for i := range out {
			out[i] = alpha[r.IntN(len(alpha))]
		}
		return out
	}
	cases := [][2][]byte{
		{nil, nil}, {[]byte("abc"), nil}, {nil, []byte("abc")}, {[]byte("same"), []byte("same")},
		{[]byte("<|im_start|>assistant\nHello<|im_end|>"), []byte("<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>")},
	}
	for range 300 {
		cases = append(cases, [2][]byte{rnd(r.IntN(40), "ab"), rnd(r.IntN(40), "ab")})
		cases = append(cases, [2][]byte{rnd(r.IntN(60), "abcd "), rnd(r.IntN(60), "abcd ")})
		base := rnd(20+r.IntN(80), "abcdefgh")
		ed := append([]byte(nil), base...)
		for range r.IntN(6) {
			p := r.IntN(len(ed) + 1)
			if r.IntN(2) == 0 && p < len(ed) {
				ed = append(ed[:p], ed[p+1:]...)
			} else {
				ed = append(ed[:p], append(rnd(1+r.IntN(3), "xyz"), ed[p:]...)...)
			}
		}
		cases = append(cases, [2][]byte{base, ed})
	}
	for _, c := range cases {
		blocks, err := commonBlocks(c[0], c[1], 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		checkBlocks(t, c[0], c[1], blocks)
	}
}

// TestCommonBlocksLimit: more edits than allowed is ErrTooDifferent;
// exactly the limit is not.
func TestCommonBlocksLimit(t *testing.T) {
	a, b := []byte("aaaaXXXXbbbb"), []byte("aaaaYYbbbb") // 4 deletions + 2 insertions
	if _, err := commonBlocks(a, b, 5); !errors.Is(err, ErrTooDifferent) {
		t.Fatalf("5 edits allowed: err %v, want ErrTooDifferent", err)
	}
	blocks, err := commonBlocks(a, b, 6)
	if err != nil {
		t.Fatal(err)
	}
	checkBlocks(t, a, b, blocks)
}
