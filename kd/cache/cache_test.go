package cache

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kdnative/kdnative/kd/data"
)

func TestRoundTrip(t *testing.T) {
	for _, q := range []Quantization{DefaultQuantization, FineQuantization, CompactQuantization, {Step: 1.0 / 8}, {Step: 1}, {Step: 1.0 / 4096, Knee: 4, TailStep: 4}} {
		t.Run(fmt.Sprintf("%+v", q), func(t *testing.T) {
			dir := t.TempDir()
			h := testHeader(40)
			es := entries(1, h.Examples, h.K, h.Vocab)
			// Small shards and blocks: many of each.
			writeCache(t, dir, h, WriterOptions{ExamplesPerShard: 7, BlockBytes: 300, Quantization: q}, es)
			if n := len(shardFiles(t, dir)); n != 6 {
				t.Fatalf("%d shards, want 6", n)
			}
			r, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.Len() != h.Examples || r.Incomplete() != nil {
				t.Fatalf("Len %d, Incomplete %v", r.Len(), r.Incomplete())
			}
			want := h
			want.Version = FormatVersion
			if r.Header() != want {
				t.Fatalf("header %+v, want %+v", r.Header(), want)
			}
			for i, e := range es {
				got, err := r.Get(i)
				if err != nil {
					t.Fatal(err)
				}
				checkEntry(t, i, got, e, h.K, q)
			}
			if err := r.Verify(); err != nil {
				t.Fatal(err)
			}
			st := r.Stats()
			var pos, tpos int64
			for _, e := range es {
				pos += int64(len(e.TopK.Has))
				for _, has := range e.TopK.Has {
					if has {
						tpos++
					}
				}
			}
			if st.Shards != 6 || st.Examples != h.Examples || st.Positions != pos || st.TeacherPositions != tpos || st.Quantization != mustQuantizer(q).Quantization || st.Bytes <= 0 || st.Blocks < st.Shards {
				t.Fatalf("stats %+v; want %d positions, %d with a teacher", st, pos, tpos)
			}
			t.Logf("%+v", st)
		})
	}
}

// TestOrderAndRandomAccess reads examples in a shuffled order, twice over
// (the second pass hits the block cache), and from several goroutines.
func TestOrderAndRandomAccess(t *testing.T) {
	dir := t.TempDir()
	h := testHeader(60)
	es := entries(2, h.Examples, h.K, h.Vocab)
	writeCache(t, dir, h, WriterOptions{ExamplesPerShard: 16, BlockBytes: 500}, es)
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	order := rand.New(rand.NewPCG(3, 4)).Perm(h.Examples)
	for _, i := range append(order, order...) {
		got, err := r.Get(i)
		if err != nil {
			t.Fatal(err)
		}
		checkEntry(t, i, got, es[i], h.K, DefaultQuantization)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, i := range rand.New(rand.NewPCG(uint64(g), 9)).Perm(h.Examples) {
				got, err := r.Get(i)
				if err != nil {
					errs <- err
					return
				}
				if len(got.TopK.Has) != len(es[i].TopK.Has) {
					errs <- errors.New("wrong example")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, i := range []int{-1, h.Examples} {
		if _, err := r.Get(i); err == nil || !strings.Contains(err.Error(), "not in the cache") {
			t.Errorf("Get(%d): %v", i, err)
		}
	}
}

// TestTailComputed: a nil Tail is log(1 − Σp), −Inf where the top-k hold
// everything.
func TestTailComputed(t *testing.T) {
	dir := t.TempDir()
	h := testHeader(1)
	h.K = 2
	e := Entry{TopK: data.TopK{K: 2, IDs: []int32{0, 0, 5, 7, 8, 9}, LogProbs: []float32{0, 0, float32(math.Log(0.5)), float32(math.Log(0.25)), float32(math.Log(0.5)), float32(math.Log(0.5))}, Has: []bool{false, true, true}}}
	writeCache(t, dir, h, WriterOptions{}, []Entry{e})
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := r.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(got.Tail[1])-math.Log(0.25)) > 1.0/64 || !math.IsInf(float64(got.Tail[2]), -1) {
		t.Fatalf("tails %v, want [0 log(0.25) -Inf]", got.Tail)
	}
	checkEntry(t, 0, got, e, 2, DefaultQuantization)
}

// TestMassNeverAboveOne: a top-1 near 1 would round to probability 1 and
// the whole top-k above 1, which the losses refuse.
func TestMassNeverAboveOne(t *testing.T) {
	dir := t.TempDir()
	h := testHeader(1)
	h.K = 3
	lp := func(p float64) float32 { return float32(math.Log(p)) }
	e := Entry{TopK: data.TopK{K: 3,
		IDs:      []int32{1, 2, 3, 4, 5, 6, 7, 8, 9},
		LogProbs: []float32{lp(0.999), lp(0.0005), lp(0.0004), lp(0.5), lp(0.3), lp(0.2), lp(0.34), lp(0.33), lp(0.3305)},
		Has:      []bool{true, true, true}}}
	writeCache(t, dir, h, WriterOptions{Quantization: Quantization{Step: 1.0 / 8}}, []Entry{e})
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := r.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	checkEntry(t, 0, got, e, 3, Quantization{Step: 1.0 / 8})
}

func TestAddRefuses(t *testing.T) {
	dir := t.TempDir()
	h := testHeader(3)
	h.K = 2
	w, err := Create(dir, h, WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	good := Entry{TopK: data.TopK{K: 2, IDs: []int32{0, 0, 3, 4}, LogProbs: []float32{0, 0, -1, -2}, Has: []bool{false, true}}}
	bad := func(mod func(e *Entry)) Entry {
		e := Entry{TopK: data.TopK{K: 2, IDs: append([]int32(nil), good.TopK.IDs...), LogProbs: append([]float32(nil), good.TopK.LogProbs...), Has: append([]bool(nil), good.TopK.Has...)}}
		mod(&e)
		return e
	}
	for _, c := range []struct {
		name string
		idx  int
		e    Entry
		want string
	}{
		{"out of order", 1, good, "example 1 arrives, expected 0"},
		{"k", 0, bad(func(e *Entry) { e.TopK.K = 1 }), "has k = 1, the cache 2"},
		{"shape", 0, bad(func(e *Entry) { e.TopK.IDs = e.TopK.IDs[:3] }), "3 ids and 4 log-probabilities for 2 positions"},
		{"tail shape", 0, bad(func(e *Entry) { e.Tail = []float32{0} }), "1 tail entries for 2 positions"},
		{"id outside", 0, bad(func(e *Entry) { e.TopK.IDs[3] = 1000 }), "id 1000 is outside the vocabulary [0, 1000)"},
		{"negative id", 0, bad(func(e *Entry) { e.TopK.IDs[3] = -1 }), "id -1 is outside"},
		{"repeated id", 0, bad(func(e *Entry) { e.TopK.IDs[3] = 3 }), "position 1 repeats id 3"},
		{"positive", 0, bad(func(e *Entry) { e.TopK.LogProbs[3] = 0.5 }), "0.5 is not a log-probability"},
		{"NaN", 0, bad(func(e *Entry) { e.TopK.LogProbs[2] = float32(math.NaN()) }), "NaN is not a log-probability"},
		{"mass", 0, bad(func(e *Entry) { e.TopK.LogProbs[2], e.TopK.LogProbs[3] = -0.1, -0.2 }), "sum to 1.72"},
		{"NaN tail", 0, bad(func(e *Entry) { e.Tail = []float32{0, float32(math.NaN())} }), "tail NaN"},
	} {
		err := w.Add(c.idx, c.e)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	// An example without a teacher may carry K = 0 or any K, with or without
	// (ignored) entries.
	noTeacher := []Entry{
		{TopK: data.TopK{Has: []bool{false, false}}},
		{TopK: data.TopK{K: 5, Has: []bool{false}}},
		{TopK: data.TopK{K: 2, IDs: make([]int32, 4), LogProbs: make([]float32, 4), Has: []bool{false, false}}},
	}
	{
		dir := t.TempDir()
		w, err := Create(dir, h, WriterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range noTeacher {
			if err := w.Add(i, e); err != nil {
				t.Fatalf("example without a teacher %d: %v", i, err)
			}
		}
		w.Close()
	}
	// The writer goes on after refusing entries.
	for i := range 3 {
		if err := w.Add(i, good); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Add(3, good); err == nil || !strings.Contains(err.Error(), "beyond the 3 examples") {
		t.Errorf("Add beyond: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := range 3 {
		got, err := r.Get(i)
		if err != nil {
			t.Fatal(err)
		}
		checkEntry(t, i, got, good, 2, DefaultQuantization)
	}
}

// TestCloseAfterRefusals: a shard begun by an Add that was refused leaves
// no temporary file behind.
func TestCloseAfterRefusals(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, testHeader(3), WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(0, Entry{TopK: data.TopK{K: 8, IDs: []int32{1}, Has: []bool{true}}}); err == nil {
		t.Fatal("a malformed entry was accepted")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*")); len(names) != 1 {
		t.Fatalf("left %v, want cache.json alone", names)
	}
}

func TestCreateRefuses(t *testing.T) {
	mod := func(f func(h *Header)) Header { h := testHeader(4); f(&h); return h }
	for _, c := range []struct {
		name string
		h    Header
		opt  WriterOptions
		want string
	}{
		{"k above vocab", mod(func(h *Header) { h.K, h.Vocab = 200, 100 }), WriterOptions{}, "k = 200 is larger than the vocabulary of 100"},
		{"k zero", mod(func(h *Header) { h.K = 0 }), WriterOptions{}, "k = 0"},
		{"no teacher", mod(func(h *Header) { h.Teacher = "" }), WriterOptions{}, "no teacher name"},
		{"no tokenizer", mod(func(h *Header) { h.TokenizerHash = "" }), WriterOptions{}, "no tokenizer hash"},
		{"no data", mod(func(h *Header) { h.DataHash = "" }), WriterOptions{}, "no data hash"},
		{"temperature", mod(func(h *Header) { h.Temperature = 0 }), WriterOptions{}, "temperature 0"},
		{"version", mod(func(h *Header) { h.Version = 9 }), WriterOptions{}, "format version 9"},
		{"step", testHeader(4), WriterOptions{Quantization: Quantization{Step: 0.1}}, "must be powers of two"},
		{"tail step", testHeader(4), WriterOptions{Quantization: Quantization{Step: 1.0 / 4, TailStep: 1.0 / 8}}, "the tail step must be at least the step"},
		{"knee", testHeader(4), WriterOptions{Quantization: Quantization{Step: 1.0 / 4, Knee: 3.1}}, "the knee a multiple of the tail step"},
		{"block", testHeader(4), WriterOptions{BlockBytes: -1}, "blocks of -1 bytes"},
	} {
		dir := filepath.Join(t.TempDir(), "c")
		_, err := Create(dir, c.h, c.opt)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
		if _, serr := os.Stat(dir); serr == nil {
			t.Errorf("%s: Create made the folder though it refused", c.name)
		}
	}
}

func TestCompatible(t *testing.T) {
	h := testHeader(10)
	h.Version = FormatVersion
	if err := h.Compatible(h); err != nil {
		t.Fatal(err)
	}
	loose := h
	loose.Vocab, loose.Examples, loose.Version = 0, 0, 0
	if err := h.Compatible(loose); err != nil {
		t.Fatalf("zero vocab/examples/version are not compared: %v", err)
	}
	for _, c := range []struct {
		mod  func(h *Header)
		want []string
	}{
		{func(h *Header) { h.Teacher = "other" }, []string{`teacher "teachers/tiny", not "other"`}},
		{func(h *Header) { h.TokenizerHash = "ffff" }, []string{"tokenizer hash 0123456789abcdef…, not ffff"}},
		{func(h *Header) { h.DataHash = "abcd" }, []string{"data hash", "not abcd"}},
		{func(h *Header) { h.Examples = 11 }, []string{"data of 10 examples, not 11"}},
		{func(h *Header) { h.K = 16 }, []string{"k = 8, not 16"}},
		{func(h *Header) { h.Temperature = 2 }, []string{"temperature 1, not 2"}},
		{func(h *Header) { h.Vocab = 5 }, []string{"vocabulary of 1000, not 5"}},
		{func(h *Header) { h.Teacher, h.K = "x", 4 }, []string{"teacher", "k = 8, not 4"}},
	} {
		w := h
		c.mod(&w)
		err := h.Compatible(w)
		if err == nil || !errors.Is(err, ErrMismatch) {
			t.Errorf("%+v: %v", w, err)
			continue
		}
		for _, s := range c.want {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%v: missing %q", err, s)
			}
		}
	}
}

// TestCreateOtherCache: a folder holding another teacher's or tokenizer's
// cache is refused and left untouched.
func TestCreateOtherCache(t *testing.T) {
	dir := t.TempDir()
	h := testHeader(6)
	es := entries(5, h.Examples, h.K, h.Vocab)
	writeCache(t, dir, h, WriterOptions{ExamplesPerShard: 4}, es)
	before := t.TempDir()
	copyDir(t, dir, before)
	for _, c := range []struct {
		mod  func(h *Header)
		want string
	}{
		{func(h *Header) { h.Teacher = "teachers/other" }, "teacher"},
		{func(h *Header) { h.TokenizerHash = "feedface" }, "tokenizer hash"},
		{func(h *Header) { h.DataHash = DataHash([][]int32{{9}}) }, "data hash"},
		{func(h *Header) { h.K = 4 }, "k = 8, not 4"},
		{func(h *Header) { h.Temperature = 2 }, "temperature 1, not 2"},
	} {
		w := h
		c.mod(&w)
		_, err := Create(dir, w, WriterOptions{ExamplesPerShard: 4})
		if err == nil || !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "refusing") {
			t.Errorf("Create with %s changed: %v", c.want, err)
		}
		r, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Header().Compatible(w); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Compatible with %s changed: %v", c.want, err)
		}
		r.Close()
	}
	sameFiles(t, before, dir)

	// A shard of another cache dropped into the folder.
	other := t.TempDir()
	oh := h
	oh.Teacher = "teachers/other"
	writeCache(t, other, oh, WriterOptions{ExamplesPerShard: 4}, es)
	b, _ := os.ReadFile(filepath.Join(other, "cache-00001.kdc"))
	os.WriteFile(filepath.Join(dir, "cache-00001.kdc"), b, 0o644)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "cache-00001.kdc belongs to another cache") || !strings.Contains(err.Error(), "teacher") {
		t.Errorf("Open with a foreign shard: %v", err)
	}
	if _, err := Create(dir, h, WriterOptions{ExamplesPerShard: 4}); err == nil || !strings.Contains(err.Error(), "belongs to another cache") {
		t.Errorf("Create with a foreign shard: %v", err)
	}
}

func TestOpenNotACache(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "cache.json") {
		t.Errorf("empty folder: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "cache.json"), []byte(`{"format":"something"}`), 0o644)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "not a kdnative teacher cache") {
		t.Errorf("other JSON: %v", err)
	}
	if _, err := Create(dir, testHeader(1), WriterOptions{}); err == nil || !strings.Contains(err.Error(), "not a kdnative teacher cache") {
		t.Errorf("Create over other JSON: %v", err)
	}
}

func TestDataHash(t *testing.T) {
	a := DataHash([][]int32{{1, 2}, {3}})
	if a != DataHash([][]int32{{1, 2}, {3}}) || len(a) != 64 {
		t.Fatalf("unstable: %s", a)
	}
	for _, o := range [][][]int32{{{1}, {2, 3}}, {{3}, {1, 2}}, {{1, 2, 3}}, {{1, 2}, {3}, {}}, {{1, 2}, {4}}} {
		if DataHash(o) == a {
			t.Errorf("%v hashes like [[1 2] [3]]", o)
		}
	}
	// Golden: the digest is part of the format (cache.json of old caches).
	if got, want := DataHash([][]int32{{1, 2}, {3}}), goldenDataHash; got != want {
		t.Errorf("DataHash changed: %s, was %s", got, want)
	}
}

const goldenDataHash = "c42bf5ddbe550974053baf74f9796f3cb6d66f6b3e669b7c9229132d2b7dbfe7"
