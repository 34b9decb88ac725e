package cache

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/kdnative/kdnative/kd/data"
)

// Size and fidelity of the encoding on synthetic teachers shaped like a
// trained LM's next-token distributions. KDCACHE_MEASURE=1 runs the full
// table of FORMAT.md (V = 32000 and 151936, k = 8…128, several steps);
// without it a small version checks the fidelity and size bounds.

// lmPosition is one position of a synthetic teacher: its top-128 (ids and
// float64 log-probabilities, by rank) and the mass outside the top-128.
type lmPosition struct {
	ids  []int32
	lp   []float64
	rest float64
	h    float64 // entropy of the whole distribution, nats
}

// lmTeacher draws next-token distributions over V tokens shaped like a
// trained LM's: probability falls with rank as a power law, p(r) ∝ r^−α
// over the first M = 2000 ranks (α from 1.1, flat, to 3, near-certain;
// in 30% of positions the top token is lifted further), with logit noise,
// and the rest of the vocabulary lies 4 nats below rank M, with noise. The
// token at each rank is drawn half the time log-uniformly over the ids
// (frequent tokens: BPE ids run roughly in frequency order) and half the
// time uniformly; uniform draws them all uniformly, the worst case for
// storing ids.
type lmTeacher struct {
	r       *rand.Rand
	V       int
	uniform bool
	z       []float64
}

const lmRanks = 2000

func newLMTeacher(seed uint64, V int, uniform bool) *lmTeacher {
	return &lmTeacher{r: rand.New(rand.NewPCG(seed, 99)), V: V, uniform: uniform, z: make([]float64, V)}
}

type topHeap struct {
	v []float64
	i []int32
}

func (h *topHeap) Len() int           { return len(h.v) }
func (h *topHeap) Less(a, b int) bool { return h.v[a] < h.v[b] }
func (h *topHeap) Swap(a, b int)      { h.v[a], h.v[b] = h.v[b], h.v[a]; h.i[a], h.i[b] = h.i[b], h.i[a] }
func (h *topHeap) Push(any)           {}
func (h *topHeap) Pop() any           { return nil }

func (t *lmTeacher) next(K int) lmPosition {
	r, z := t.r, t.z
	alpha := 1.1 + 1.9*r.Float64()
	// The rest of the vocabulary: below rank M's level.
	floor := -alpha*math.Log(lmRanks) - 4
	for i := range z {
		z[i] = floor + r.NormFloat64()
	}
	used := map[int]bool{}
	for rank := 1; rank <= lmRanks; rank++ {
		var id int
		for {
			if t.uniform || r.IntN(2) == 0 {
				id = r.IntN(t.V)
			} else {
				id = int(math.Exp(r.Float64()*math.Log(float64(t.V)))) - 1
			}
			if !used[id] {
				break
			}
		}
		used[id] = true
		z[id] = -alpha*math.Log(float64(rank)) + 0.3*r.NormFloat64()
		if rank == 1 && r.Float64() < 0.3 {
			z[id] += 1 + 3*r.Float64()
		}
	}
	mx := math.Inf(-1)
	for _, v := range z {
		mx = max(mx, v)
	}
	var s float64
	for _, v := range z {
		s += math.Exp(v - mx)
	}
	lse := mx + math.Log(s)
	var H float64
	for _, v := range z {
		lp := v - lse
		H -= math.Exp(lp) * lp
	}
	h := &topHeap{v: make([]float64, 0, K), i: make([]int32, 0, K)}
	for i, v := range z {
		if len(h.v) < K {
			h.v, h.i = append(h.v, v), append(h.i, int32(i))
			if len(h.v) == K {
				heap.Init(h)
			}
		} else if v > h.v[0] {
			h.v[0], h.i[0] = v, int32(i)
			heap.Fix(h, 0)
		}
	}
	p := lmPosition{ids: make([]int32, K), lp: make([]float64, K), h: H}
	for j := K - 1; j >= 0; j-- {
		p.lp[j], p.ids[j] = h.v[0]-lse, h.i[0]
		h.v[0], h.i[0] = math.Inf(1), 0 // pop the smallest
		heap.Fix(h, 0)
	}
	var top float64
	for _, lp := range p.lp {
		top += math.Exp(lp)
	}
	// The rest is summed directly, not as 1 − top (precision).
	in := map[int32]bool{}
	for _, id := range p.ids {
		in[id] = true
	}
	for i, v := range z {
		if !in[int32(i)] {
			p.rest += math.Exp(v - lse)
		}
	}
	return p
}

// tailOf is the mass outside the top-k of a top-128 position.
func (p lmPosition) tailOf(k int) float64 {
	t := p.rest
	for j := k; j < len(p.lp); j++ {
		t += math.Exp(p.lp[j])
	}
	return t
}

// entriesFor lays positions out as examples of n positions (the first of
// each without a teacher) at k, with float32 log-probabilities and tails as
// a teacher's fp32 log-softmax gives them.
func entriesFor(ps []lmPosition, k, n int) []Entry {
	var es []Entry
	for at := 0; at < len(ps); {
		L := min(n, len(ps)-at+1)
		e := Entry{TopK: data.TopK{K: k, IDs: make([]int32, L*k), LogProbs: make([]float32, L*k), Has: make([]bool, L)}, Tail: make([]float32, L)}
		for i := 1; i < L; i++ {
			p := ps[at]
			at++
			e.TopK.Has[i] = true
			for j := range k {
				e.TopK.IDs[i*k+j], e.TopK.LogProbs[i*k+j] = p.ids[j], float32(p.lp[j])
			}
			e.Tail[i] = float32(math.Log(p.tailOf(k)))
		}
		es = append(es, e)
	}
	return es
}

type measurement struct {
	bytesPerPos, kl, klMax, floored float64
	encodePerSec, decodePerSec      float64
}

// measure writes es into a cache and reads it back: bytes per position
// with a teacher, and the KL from the stored (top-k + tail) distribution
// to the decoded one, renormalized, in nats per position.
func measure(t testing.TB, h Header, es []Entry, opt WriterOptions) measurement {
	dir := t.TempDir()
	h.Examples = len(es)
	start := time.Now()
	w, err := Create(dir, h, opt)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		if err := w.Add(i, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	enc := time.Since(start)
	floored := w.e.floored
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st := r.Stats()
	var m measurement
	m.bytesPerPos = st.BytesPerPosition
	m.floored = float64(floored) / float64(st.TeacherPositions)
	m.encodePerSec = float64(st.TeacherPositions) / enc.Seconds()
	start = time.Now()
	got := make([]Entry, len(es))
	for i := range es {
		if got[i], err = r.Get(i); err != nil {
			t.Fatal(err)
		}
	}
	m.decodePerSec = float64(st.TeacherPositions) / time.Since(start).Seconds()
	K := h.K
	P, Q := make([]float64, K+1), make([]float64, K+1)
	var n int
	for i, e := range es {
		g := got[i]
		for pos, has := range e.TopK.Has {
			if !has {
				continue
			}
			dec := map[int32]float64{}
			for j := range K {
				dec[g.TopK.IDs[pos*K+j]] = math.Exp(float64(g.TopK.LogProbs[pos*K+j]))
			}
			var sp, sq float64
			for j := range K {
				P[j] = math.Exp(float64(e.TopK.LogProbs[pos*K+j]))
				Q[j] = dec[e.TopK.IDs[pos*K+j]]
			}
			P[K], Q[K] = math.Exp(float64(e.Tail[pos])), math.Exp(float64(g.Tail[pos]))
			for j := range P {
				sp += P[j]
				sq += Q[j]
			}
			var kl float64
			for j := range P {
				if P[j] > 0 {
					kl += P[j] / sp * math.Log(P[j]/sp/(Q[j]/sq))
				}
			}
			m.kl += kl
			m.klMax = max(m.klMax, kl)
			n++
		}
	}
	m.kl /= float64(n)
	return m
}

// naiveBytes is the size of the obvious format for comparison: int32 ids
// and float32 log-probabilities (and a float32 tail) per position, zstd'd
// in blocks of 256 KiB.
func naiveBytes(es []Entry, k int) float64 {
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1))
	var buf []byte
	var total, n int
	flush := func() { total += len(enc.EncodeAll(buf, nil)); buf = buf[:0] }
	for _, e := range es {
		for pos, has := range e.TopK.Has {
			if !has {
				continue
			}
			n++
			for j := range k {
				id, lp := e.TopK.IDs[pos*k+j], math.Float32bits(e.TopK.LogProbs[pos*k+j])
				buf = append(buf, byte(id), byte(id>>8), byte(id>>16), byte(id>>24), byte(lp), byte(lp>>8), byte(lp>>16), byte(lp>>24))
			}
			tl := math.Float32bits(e.Tail[pos])
			buf = append(buf, byte(tl), byte(tl>>8), byte(tl>>16), byte(tl>>24))
			if len(buf) > 256<<10 {
				flush()
			}
		}
	}
	flush()
	return float64(total) / float64(n)
}

// qname is "1/32" or "1/32 to 4, 1/4".
func qname(q Quantization) string {
	f := func(x float64) string {
		if x >= 1 {
			return fmt.Sprint(x)
		}
		return "1/" + fmt.Sprint(1/x)
	}
	if q.Knee == 0 || q.Knee == Floor {
		return f(q.Step)
	}
	return fmt.Sprintf("%s to %g, %s", f(q.Step), q.Knee, f(q.TailStep))
}

func TestMeasure(t *testing.T) {
	full := os.Getenv("KDCACHE_MEASURE") != ""
	type config struct {
		V       int
		uniform bool
		n       int
	}
	configs := []config{{4000, false, 300}}
	ks := []int{8, 32}
	quants := []Quantization{{Step: 1.0 / 8}, {Step: 1.0 / 32}, FineQuantization, DefaultQuantization, CompactQuantization}
	if full {
		configs = []config{{32000, false, 2048}, {151936, false, 2048}, {151936, true, 2048}}
		ks = []int{8, 32, 64, 128}
		if s := os.Getenv("KDCACHE_MEASURE_ONLY"); s != "" {
			quants = nil
			for _, f := range strings.Split(s, ";") {
				var q Quantization
				fmt.Sscanf(f, "%g,%g,%g", &q.Step, &q.Knee, &q.TailStep)
				quants = append(quants, q)
			}
		}
	} else if testing.Short() {
		t.Skip("short")
	}
	var out strings.Builder
	for _, c := range configs {
		tch := newLMTeacher(uint64(c.V), c.V, c.uniform)
		ps := make([]lmPosition, c.n)
		var top1, H float64
		for i := range ps {
			ps[i] = tch.next(128)
			top1 += math.Exp(ps[i].lp[0])
			H += ps[i].h
		}
		shape := "frequency-biased ids"
		if c.uniform {
			shape = "uniform ids (worst case)"
		}
		fmt.Fprintf(&out, "\nV = %d, %s, %d positions: mean top-1 p %.2f, mean entropy %.2f nats; top-k mass", c.V, shape, c.n, top1/float64(c.n), H/float64(c.n))
		for _, k := range ks {
			var m float64
			for _, p := range ps {
				m += 1 - p.tailOf(k)
			}
			fmt.Fprintf(&out, " k=%d %.3f", k, m/float64(c.n))
		}
		fmt.Fprintf(&out, "\n%5s %15s %10s %9s %9s %9s %8s %11s %11s\n", "k", "step", "B/pos", "bits/ent", "mean KL", "max KL", "floored", "enc pos/s", "dec pos/s")
		for _, k := range ks {
			h := testHeader(0)
			h.K, h.Vocab = k, c.V
			es := entriesFor(ps, k, 257)
			for _, qz := range quants {
				m := measure(t, h, es, WriterOptions{Quantization: qz})
				fmt.Fprintf(&out, "%5d %15s %10.1f %9.2f %9.2e %9.2e %7.1f%% %11.0f %11.0f\n", k, qname(qz), m.bytesPerPos, m.bytesPerPos*8/float64(k), m.kl, m.klMax, 100*m.floored, m.encodePerSec, m.decodePerSec)
				// FORMAT.md's bound (Hoeffding): KL ≤ (max δ − min δ)²/8,
				// δ within ±s/2, or in (−s, 0] for the top-k of a position
				// rounded down: 9s²/32, s the coarsest step.
				s := mustQuantizer(qz).TailStep
				if m.klMax > 9*s*s/32 {
					t.Errorf("k=%d %+v: max KL %.3g above 9·s²/32", k, qz, m.klMax)
				}
			}
			fmt.Fprintf(&out, "%5d %15s %10.1f   (int32 id + float32 logprob, zstd)\n", k, "naive", naiveBytes(es, k))
		}
	}
	t.Log(out.String())
}
