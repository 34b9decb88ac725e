package cache

import (
	"testing"
)

// benchEntries are 8 examples of 256 positions of a V = 151936 synthetic
// teacher at k.
func benchEntries(b *testing.B, k int) (Header, []Entry, int) {
	tch := newLMTeacher(5, 151936, false)
	ps := make([]lmPosition, 8*256)
	for i := range ps {
		ps[i] = tch.next(128)
	}
	h := testHeader(0)
	h.K, h.Vocab = k, 151936
	es := entriesFor(ps, k, 257)
	h.Examples = len(es)
	return h, es, len(ps)
}

// BenchmarkWrite is Add's throughput (positions/s) at k = 128, default
// options; BenchmarkGet reads the same examples back in order.
func BenchmarkWrite(b *testing.B) {
	h, es, n := benchEntries(b, 128)
	b.ResetTimer()
	for range b.N {
		dir := b.TempDir()
		w, err := Create(dir, h, WriterOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for i, e := range es {
			if err := w.Add(i, e); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "positions/s")
}

func BenchmarkGet(b *testing.B) {
	h, es, n := benchEntries(b, 128)
	dir := b.TempDir()
	writeCache(b, dir, h, WriterOptions{}, es)
	r, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.ResetTimer()
	for range b.N {
		for i := range es {
			if _, err := r.Get(i); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "positions/s")
}
