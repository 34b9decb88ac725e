package cache

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/kdnative/kdnative/kd/data"
)

// testHeader is a small cache's header.
func testHeader(examples int) Header {
	return Header{
		Teacher:       "teachers/tiny",
		TokenizerHash: "0123456789abcdef0123456789abcdef",
		DataHash:      DataHash([][]int32{{1, 2, 3}}),
		K:             8,
		Temperature:   1,
		Vocab:         1000,
		Examples:      examples,
	}
}

// randomEntry makes example index's teacher: L = 1 + index%7 + a few
// positions, position 0 without a teacher, K distinct ids per position, and
// log-probabilities of a softmax with a tail, including the edge cases the
// format must keep (a near-certain top-1, −Inf tails and entries, values
// below −Floor, exact ties).
func randomEntry(r *rand.Rand, index, K, V int) Entry {
	L := 2 + index%7 + r.IntN(6)
	e := Entry{TopK: data.TopK{K: K, IDs: make([]int32, L*K), LogProbs: make([]float32, L*K), Has: make([]bool, L)}, Tail: make([]float32, L)}
	w := make([]float64, K+1)
	for i := 1; i < L; i++ {
		if r.IntN(10) == 0 {
			continue // a prompt position
		}
		e.TopK.Has[i] = true
		perm := r.Perm(V)[:K]
		s := 0.5 + 3*r.Float64()
		var sum float64
		for j := range w {
			w[j] = math.Exp(s * r.NormFloat64())
			sum += w[j]
		}
		mode := r.IntN(8)
		p := make([]float64, K+1)
		for j := range w {
			p[j] = w[j] / sum
		}
		switch mode {
		case 0: // near-certain top-1
			const eps = 1e-4
			for j := 1; j <= K; j++ {
				p[j] *= eps
			}
			p[0] = 1 - eps*(1-p[0])
		case 1: // a −Inf entry
			p[K] += p[K-1]
			p[K-1] = 0
		case 2: // an entry below the floor
			p[K] += p[K-1]
			p[K-1] = math.Exp(-300)
		case 3: // exact ties
			for j := range K {
				p[j] = 0.5 / float64(K)
			}
			p[K] = 0.5
		case 4: // no tail
			p[0] += p[K]
			p[K] = 0
		}
		for j := range K {
			e.TopK.IDs[i*K+j] = int32(perm[j])
			e.TopK.LogProbs[i*K+j] = float32(math.Log(p[j]))
		}
		e.Tail[i] = float32(math.Log(p[K]))
	}
	// An example in nine has no teacher at all, and one in eleven is empty.
	if index%9 == 4 {
		e = Entry{TopK: data.TopK{Has: make([]bool, L)}}
	}
	if index%11 == 6 {
		e = Entry{TopK: data.TopK{K: K, Has: []bool{}}, Tail: []float32{}}
	}
	return e
}

func entries(seed uint64, n, K, V int) []Entry {
	r := rand.New(rand.NewPCG(seed, 7))
	out := make([]Entry, n)
	for i := range out {
		out[i] = randomEntry(r, i, K, V)
	}
	return out
}

// writeCache writes es into dir and closes the writer.
func writeCache(t testing.TB, dir string, h Header, opt WriterOptions, es []Entry) {
	t.Helper()
	w, err := Create(dir, h, opt)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, w, es)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// fill adds what the writer's Todo asks for.
func fill(t testing.TB, w *Writer, es []Entry) {
	t.Helper()
	for _, r := range w.Todo() {
		for i := r.First; i < r.End; i++ {
			if err := w.Add(i, es[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// checkEntry compares a decoded entry with what was stored: same positions
// and Has, per position the same id set in decreasing log-probability, each
// within the documented bound.
func checkEntry(t *testing.T, index int, got, want Entry, K int, qz Quantization) {
	t.Helper()
	L := len(want.TopK.Has)
	if len(got.TopK.Has) != L || got.TopK.K != K || len(got.TopK.IDs) != L*K || len(got.TopK.LogProbs) != L*K || len(got.Tail) != L {
		t.Fatalf("example %d: shape K=%d has=%d ids=%d lps=%d tail=%d, want K=%d has=%d", index, got.TopK.K, len(got.TopK.Has), len(got.TopK.IDs), len(got.TopK.LogProbs), len(got.Tail), K, L)
	}
	q := mustQuantizer(qz)
	for i := range L {
		if got.TopK.Has[i] != want.TopK.Has[i] {
			t.Fatalf("example %d position %d: has %v, want %v", index, i, got.TopK.Has[i], want.TopK.Has[i])
		}
		if !want.TopK.Has[i] {
			for j := range K {
				if got.TopK.IDs[i*K+j] != 0 || got.TopK.LogProbs[i*K+j] != 0 {
					t.Fatalf("example %d position %d: no teacher, but entry %d is (%d, %g)", index, i, j, got.TopK.IDs[i*K+j], got.TopK.LogProbs[i*K+j])
				}
			}
			if got.Tail[i] != 0 {
				t.Fatalf("example %d position %d: no teacher, but tail %g", index, i, got.Tail[i])
			}
			continue
		}
		// Was this position rounded down (nearest rounding summing above 1)?
		var massNearest float64
		for j := range K {
			massNearest += q.prob(q.nearest(math.Min(float64(want.TopK.LogProbs[i*K+j]), 0)))
		}
		floored := massNearest > 1
		var massIn float64
		for j := range K {
			massIn += math.Exp(float64(want.TopK.LogProbs[i*K+j]))
		}
		over := massIn > 1 // lowered further than one step: only never above
		wantLP := map[int32]float64{}
		for j := range K {
			wantLP[want.TopK.IDs[i*K+j]] = float64(want.TopK.LogProbs[i*K+j])
		}
		var mass float64
		for j := range K {
			id, lp := got.TopK.IDs[i*K+j], float64(got.TopK.LogProbs[i*K+j])
			w, ok := wantLP[id]
			if !ok {
				t.Fatalf("example %d position %d: id %d was not stored (ids %v)", index, i, id, got.TopK.IDs[i*K:(i+1)*K])
			}
			delete(wantLP, id)
			if j > 0 {
				prevLP, prevID := got.TopK.LogProbs[i*K+j-1], got.TopK.IDs[i*K+j-1]
				if float32(lp) > prevLP || (float32(lp) == prevLP && id < prevID) {
					t.Fatalf("example %d position %d: entries not in decreasing log-probability then id: (%d, %g) after (%d, %g)", index, i, id, lp, prevID, prevLP)
				}
			}
			mass += math.Exp(lp)
			if over && floored {
				if lp > math.Min(w, 0) {
					t.Fatalf("example %d position %d: entry %g (in a position summing above 1) came back higher, %g", index, i, w, lp)
				}
				continue
			}
			checkLP(t, index, i, "entry", w, lp, q, floored)
		}
		if mass > 1+1e-12 {
			t.Fatalf("example %d position %d: decoded top-k probabilities sum to %.15f", index, i, mass)
		}
		var wt float64
		if want.Tail == nil {
			var s float64
			for j := range K {
				s += math.Exp(float64(want.TopK.LogProbs[i*K+j]))
			}
			wt = math.Inf(-1)
			if s < 1-float64(K)/(1<<23) {
				wt = math.Log1p(-s)
			}
		} else {
			wt = float64(want.Tail[i])
		}
		checkLP(t, index, i, "tail", wt, float64(got.Tail[i]), q, false)
	}
}

func mustQuantizer(qz Quantization) quantizer {
	q, err := newQuantizer(qz)
	if err != nil {
		panic(err)
	}
	return q
}

// checkLP is the documented bound: −Inf exact; below −Floor → −Floor;
// otherwise within step/2, or (a position rounded down) in (x−step, x],
// step being Step down to −Knee and TailStep below.
func checkLP(t *testing.T, index, pos int, what string, want, got float64, q quantizer, floored bool) {
	t.Helper()
	want = math.Min(want, 0)
	step := q.Step
	if -want > q.Knee {
		step = q.TailStep
	}
	switch {
	case math.IsInf(want, -1):
		if !math.IsInf(got, -1) {
			t.Fatalf("example %d position %d: %s −Inf came back %g", index, pos, what, got)
		}
	case want < -Floor:
		if got != -Floor {
			t.Fatalf("example %d position %d: %s %g below the floor came back %g", index, pos, what, want, got)
		}
	case floored:
		if !(got <= want && got > want-step) {
			t.Fatalf("example %d position %d: %s %g came back %g, outside (x−%g, x]", index, pos, what, want, got, step)
		}
	default:
		if math.Abs(got-want) > step/2 {
			t.Fatalf("example %d position %d: %s %g came back %g, off by more than %g", index, pos, what, want, got, step/2)
		}
	}
}

// shardFiles lists dir's shard files in order.
func shardFiles(t testing.TB, dir string) []string {
	t.Helper()
	fs, err := filepath.Glob(filepath.Join(dir, "cache-*.kdc"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(fs)
	return fs
}

// sameFiles requires two cache folders to hold byte-identical files.
func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	ea, _ := os.ReadDir(a)
	eb, _ := os.ReadDir(b)
	if len(ea) != len(eb) {
		t.Fatalf("%s has %d files, %s %d", a, len(ea), b, len(eb))
	}
	for i := range ea {
		if ea[i].Name() != eb[i].Name() {
			t.Fatalf("file %s vs %s", ea[i].Name(), eb[i].Name())
		}
		x, _ := os.ReadFile(filepath.Join(a, ea[i].Name()))
		y, _ := os.ReadFile(filepath.Join(b, eb[i].Name()))
		if !bytes.Equal(x, y) {
			t.Fatalf("%s differs between %s and %s", ea[i].Name(), a, b)
		}
	}
}

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	es, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
