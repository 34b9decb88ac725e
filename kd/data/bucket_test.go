package data

import (
	"strings"
	"testing"
)

// TestBucketLength against its definition, by search: the smallest
// listed length not below n; beyond the largest, the smallest multiple of
// the largest not below n; capped at maxLen (but never below n).
func TestBucketLength(t *testing.T) {
	ref := func(n int, buckets []int, maxLen int) int {
		if len(buckets) == 0 {
			return n
		}
		for _, b := range buckets {
			if b >= n {
				return capped(b, n, maxLen)
			}
		}
		last := buckets[len(buckets)-1]
		for m := last; ; m += last {
			if m >= n {
				return capped(m, n, maxLen)
			}
		}
	}
	for _, buckets := range [][]int{nil, {1}, {64}, {100}, {128, 256, 512}, {3, 5, 8}} {
		for _, maxLen := range []int{0, 50, 512, 1000} {
			for n := 1; n <= 1200; n++ {
				if got, want := BucketLength(n, buckets, maxLen), ref(n, buckets, maxLen); got != want {
					t.Fatalf("BucketLength(%d, %v, %d) = %d, want %d", n, buckets, maxLen, got, want)
				}
			}
		}
	}
}

func capped(T, n, maxLen int) int {
	if maxLen > 0 && T > maxLen {
		return max(maxLen, n)
	}
	return T
}

// TestLoaderPadsToBuckets: batches come padded to the bucket of their
// longest row, pairs too, and bad buckets are refused.
func TestLoaderPadsToBuckets(t *testing.T) {
	row := func(n int) Example {
		e := Example{Tokens: make([]int32, n), Labels: make([]int32, n)}
		for i := range e.Tokens {
			e.Tokens[i], e.Labels[i] = int32(i+1), int32(i+1)
		}
		return e
	}
	rows := []Example{row(3), row(10), row(17), row(40)}
	l, err := NewLoader(rows, LoaderConfig{NoShuffle: true, Buckets: []int{8, 16}, MaxLen: 40, PadID: 0})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []int{16, 40} { // rows 3, 10: 16; rows 17, 40: 32, capped at 40 → 40
		b, err := l.Next(2)
		if err != nil {
			t.Fatal(err)
		}
		if b.T != want {
			t.Errorf("batch of %d × %d, want T = %d", b.B, b.T, want)
		}
	}
	pairs := []Pair{{Prompt: []int32{1, 2}, Chosen: []int32{3, 4, 5}, Rejected: []int32{6}}}
	pl, err := NewPairLoader(pairs, LoaderConfig{Buckets: []int{8}})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := pl.Next(1); err != nil || b.T != 8 || b.B != 2 {
		t.Errorf("pair batch %d × %d (%v), want 2 × 8", b.B, b.T, err)
	}
	for _, bad := range [][]int{{0}, {64, 32}, {16, 16}, {-8}} {
		if _, err := NewLoader(rows, LoaderConfig{Buckets: bad}); err == nil || !strings.Contains(err.Error(), "ascending") {
			t.Errorf("buckets %v: %v", bad, err)
		}
	}
}
