package loss_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/internal/ref"
	"github.com/kdnative/kdnative/kd/loss"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// The references compute in float64 from the definitions (internal/ref):
// logits by an explicit product, softmaxes, the divergence, the mean over
// masked rows.

var (
	softmax64 = ref.Softmax
	div64     = ref.Divergence
)

// logits64 is hidden [N, C] · headᵀ ([V, C]).
func logits64(h, w []float64, N, C, V int) []float64 {
	out := make([]float64, N*V)
	for n := range N {
		for v := range V {
			var s float64
			for c := range C {
				s += h[n*C+c] * w[v*C+c]
			}
			out[n*V+v] = s
		}
	}
	return out
}

type problem struct {
	N, C, V, Ct, Vt int
	h, w, th, tw    []float64 // student hidden/head, teacher hidden/head
	mask            []float32
}

func newProblem(seed uint64, N, C, V, Ct, Vt int) *problem {
	r := rand.New(rand.NewPCG(seed, seed))
	g := func(n int, std float64) []float64 {
		x := make([]float64, n)
		for i := range x {
			x[i] = r.NormFloat64() * std
		}
		return x
	}
	p := &problem{N: N, C: C, V: V, Ct: Ct, Vt: Vt, h: g(N*C, 1), w: g(V*C, 0.7), th: g(N*Ct, 1), tw: g(Vt*Ct, 0.7)}
	p.mask = make([]float32, N)
	for i := range p.mask {
		if r.Float64() < 0.8 {
			p.mask[i] = 1
		}
	}
	p.mask[0] = 1
	return p
}

// refKD is the float64 KD loss: mean over masked rows, times T² unless noT2.
func (p *problem) refKD(cfg loss.KDConfig) float64 {
	s := logits64(p.h, p.w, p.N, p.C, p.V)
	t := logits64(p.th, p.tw, p.N, p.Ct, p.Vt)
	V := min(p.V, p.Vt)
	var sum float64
	count := 0
	for n := range p.N {
		if p.mask[n] == 0 {
			continue
		}
		count++
		q := softmax64(s[n*p.V:n*p.V+V], cfg.Temperature)
		pp := softmax64(t[n*p.Vt:n*p.Vt+V], cfg.Temperature)
		sum += float64(p.mask[n]) * div64(cfg.Divergence, pp, q, cfg.Beta, cfg.Alpha)
	}
	f := sum / float64(count)
	if !cfg.NoTSquared {
		f *= cfg.Temperature * cfg.Temperature
	}
	return f
}

func tensor(t *testing.T, be *cpu.Backend, name string, x []float64, shape ...int) *kdrt.Tensor {
	t.Helper()
	tt, err := be.Alloc(name, kdrt.F32, shape...)
	if err != nil {
		t.Fatal(err)
	}
	v := cpu.Float32s(tt)
	for i := range v {
		v[i] = float32(x[i])
	}
	return tt
}

func zeros(t *testing.T, be *cpu.Backend, name string, shape ...int) *kdrt.Tensor {
	t.Helper()
	tt, err := be.Alloc(name, kdrt.F32, shape...)
	if err != nil {
		t.Fatal(err)
	}
	return tt
}

// rel compares float32 results with a float64 reference.
func rel(got []float32, want []float64) float64 { return ref.RelErr(to64(got), want) }

// fd is the central-difference gradient of f with respect to x.
func fd(x []float64, f func() float64) []float64 { return ref.CentralDiff(x, f, 1e-5) }

var kinds = []kdrt.DivergenceKind{kdrt.ForwardKL, kdrt.ReverseKL, kdrt.JSD, kdrt.TVD, kdrt.SkewKL, kdrt.SkewReverseKL}

// TestKDOnlineTeacher: the fused KD against an online teacher (its hidden
// states and head) matches the float64 reference in loss and in both
// gradients, at every chunk size — including chunks that do not divide the
// rows and the plain single-chunk computation.
func TestKDOnlineTeacher(t *testing.T) {
	const N, C, V, Ct = 7, 5, 11, 6
	for _, kind := range kinds {
		for _, T := range []float64{0.5, 2} {
			cfg := loss.KDConfig{Divergence: kind, Temperature: T, Beta: 0.25, Alpha: 0.125}
			p := newProblem(uint64(kind)+1, N, C, V, Ct, V)
			want := p.refKD(cfg)
			dh := fd(p.h, func() float64 { return p.refKD(cfg) })
			dw := fd(p.w, func() float64 { return p.refKD(cfg) })
			for chunk := 1; chunk <= N; chunk++ {
				be := cpu.New()
				hidden := tensor(t, be, "h", p.h, N, C)
				head := loss.Head{W: tensor(t, be, "w", p.w, V, C), G: zeros(t, be, "gw", V, C)}
				dHidden := zeros(t, be, "dh", N, C)
				teacher := loss.TeacherHidden{Hidden: tensor(t, be, "th", p.th, N, Ct), Head: tensor(t, be, "tw", p.tw, V, Ct)}
				res, err := loss.KD(be, hidden, head, dHidden, teacher, p.mask, cfg, 1, loss.Options{ChunkRows: chunk})
				if err != nil {
					t.Fatal(err)
				}
				name := fmt.Sprintf("%v T=%g chunk=%d", kind, T, chunk)
				if math.Abs(res.Loss-want) > 1e-5*math.Max(1, want) {
					t.Fatalf("%s: loss %.8g, reference %.8g", name, res.Loss, want)
				}
				if e := rel(cpu.Float32s(dHidden), dh); e > 1e-4 {
					t.Fatalf("%s: d hidden relative error %.2g", name, e)
				}
				if e := rel(cpu.Float32s(head.G), dw); e > 1e-4 {
					t.Fatalf("%s: d lm_head relative error %.2g", name, e)
				}
			}
		}
	}
}

// TestKDChunkingIsExact: at every chunk size, the fused loss and gradients
// equal the plain ones (one chunk holding all logits) to fp32 rounding.
func TestKDChunkingIsExact(t *testing.T) {
	const N, C, V = 13, 8, 29
	p := newProblem(99, N, C, V, C, V)
	run := func(chunk int, teacher func(be *cpu.Backend) loss.Teacher) (float64, []float32, []float32) {
		be := cpu.New()
		hidden := tensor(t, be, "h", p.h, N, C)
		head := loss.Head{W: tensor(t, be, "w", p.w, V, C), G: zeros(t, be, "gw", V, C)}
		dHidden := zeros(t, be, "dh", N, C)
		res, err := loss.KD(be, hidden, head, dHidden, teacher(be), p.mask, loss.KDConfig{Divergence: kdrt.JSD, Temperature: 1.5, Beta: 0.5, Tail: kdrt.TailBucket}, 0.7, loss.Options{ChunkRows: chunk})
		if err != nil {
			t.Fatal(err)
		}
		return res.Loss, cpu.Float32s(dHidden), cpu.Float32s(head.G)
	}
	dense := func(be *cpu.Backend) loss.Teacher {
		return loss.TeacherLogits{Logits: tensor(t, be, "tl", logits64(p.th, p.tw, N, C, V), N, V)}
	}
	sparse := func(be *cpu.Backend) loss.Teacher { return topK(t, be, logits64(p.th, p.tw, N, C, V), N, V, 6, 1.5) }
	for name, teacher := range map[string]func(*cpu.Backend) loss.Teacher{"dense": dense, "sparse": sparse} {
		l0, h0, w0 := run(N, teacher)
		for chunk := 1; chunk < N; chunk++ {
			l, h, w := run(chunk, teacher)
			if math.Abs(l-l0) > 1e-6*math.Abs(l0) {
				t.Errorf("%s chunk %d: loss %.9g, plain %.9g", name, chunk, l, l0)
			}
			if e := rel(h, to64(h0)); e > 1e-6 {
				t.Errorf("%s chunk %d: d hidden differs from plain by %.2g", name, chunk, e)
			}
			if e := rel(w, to64(w0)); e > 1e-6 {
				t.Errorf("%s chunk %d: d lm_head differs from plain by %.2g", name, chunk, e)
			}
		}
	}
}

func to64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

// topK keeps each row's k most likely teacher ids at temperature T.
func topK(t *testing.T, be *cpu.Backend, logits []float64, N, V, k int, T float64) loss.TeacherTopK {
	ids, lps := make([]int32, N*k), make([]float64, N*k)
	for n := range N {
		p := softmax64(logits[n*V:(n+1)*V], T)
		order := make([]int, V)
		for i := range order {
			order[i] = i
		}
		for i := range k { // selection of the k largest
			best := i
			for j := i + 1; j < V; j++ {
				if p[order[j]] > p[order[best]] {
					best = j
				}
			}
			order[i], order[best] = order[best], order[i]
			ids[n*k+i], lps[n*k+i] = int32(order[i]), math.Log(p[order[i]])
		}
	}
	it, _ := be.Alloc("ids", kdrt.I32, N, k)
	copy(cpu.Int32s(it), ids)
	return loss.TeacherTopK{IDs: it, LogProbs: tensor(t, be, "lp", lps, N, k)}
}

// TestSparseTeacherMatchesReference: the fused sparse KD equals a float64
// computation over explicitly built bins, and its gradients equal finite
// differences of it.
func TestSparseTeacherMatchesReference(t *testing.T) {
	const N, C, V, K = 5, 4, 9, 3
	p := newProblem(7, N, C, V, C, V)
	tl := logits64(p.th, p.tw, N, C, V)
	for _, tail := range []kdrt.TailMode{kdrt.Renormalize, kdrt.TailBucket} {
		for _, kind := range kinds {
			cfg := loss.KDConfig{Divergence: kind, Temperature: 2, Beta: 0.5, Alpha: 0.25, Tail: tail}
			be := cpu.New()
			tk := topK(t, be, tl, N, V, K, 2)
			ids := cpu.Int32s(tk.IDs)
			lps := cpu.Float32s(tk.LogProbs)
			ref := func() float64 {
				s := logits64(p.h, p.w, N, C, V)
				var sum float64
				count := 0
				for n := range N {
					if p.mask[n] == 0 {
						continue
					}
					count++
					q := softmax64(s[n*V:(n+1)*V], 2)
					pb, qb := make([]float64, K), make([]float64, K)
					in := map[int32]bool{}
					var ps, qs float64
					for k := range K {
						id := ids[n*K+k]
						in[id] = true
						pb[k], qb[k] = math.Exp(float64(lps[n*K+k])), q[id]
						ps += pb[k]
						qs += qb[k]
					}
					if tail == kdrt.Renormalize {
						for k := range K {
							pb[k] /= ps
							qb[k] /= qs
						}
					} else {
						var qt float64
						for j := range V {
							if !in[int32(j)] {
								qt += q[j]
							}
						}
						pb, qb = append(pb, math.Max(0, 1-ps)), append(qb, qt)
					}
					sum += div64(kind, pb, qb, 0.5, 0.25)
				}
				return 4 * sum / float64(count) // T² = 4
			}
			hidden := tensor(t, be, "h", p.h, N, C)
			head := loss.Head{W: tensor(t, be, "w", p.w, V, C), G: zeros(t, be, "gw", V, C)}
			dHidden := zeros(t, be, "dh", N, C)
			res, err := loss.KD(be, hidden, head, dHidden, tk, p.mask, cfg, 1, loss.Options{ChunkRows: 2})
			if err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("tail=%d %v", tail, kind)
			if want := ref(); math.Abs(res.Loss-want) > 1e-5*math.Max(1, want) {
				t.Fatalf("%s: loss %.8g, reference %.8g", name, res.Loss, want)
			}
			if e := rel(cpu.Float32s(dHidden), fd(p.h, ref)); e > 1e-4 {
				t.Fatalf("%s: d hidden relative error %.2g", name, e)
			}
			if e := rel(cpu.Float32s(head.G), fd(p.w, ref)); e > 1e-4 {
				t.Fatalf("%s: d lm_head relative error %.2g", name, e)
			}
		}
	}
}

// TestKDVocabularyMismatch: a teacher with a wider padded vocabulary is
// compared on the shared ids, and the result says how many were dropped.
func TestKDVocabularyMismatch(t *testing.T) {
	const N, C, V, Vt = 4, 3, 10, 13
	p := newProblem(5, N, C, V, C, Vt)
	cfg := loss.KDConfig{Divergence: kdrt.ForwardKL, Temperature: 1}
	be := cpu.New()
	res, err := loss.KD(be, tensor(t, be, "h", p.h, N, C), loss.Head{W: tensor(t, be, "w", p.w, V, C)}, nil,
		loss.TeacherHidden{Hidden: tensor(t, be, "th", p.th, N, C), Head: tensor(t, be, "tw", p.tw, Vt, C)}, p.mask, cfg, 1, loss.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := p.refKD(cfg); math.Abs(res.Loss-want) > 1e-5*want {
		t.Fatalf("loss %g, reference on the shared ids %g", res.Loss, want)
	}
	if res.DroppedTeacher != 3 || res.DroppedStudent != 0 {
		t.Fatalf("dropped student %d teacher %d, want 0 and 3", res.DroppedStudent, res.DroppedTeacher)
	}
}

// TestCrossEntropyFused: the fused SFT loss equals the float64 mean
// cross-entropy over unmasked targets, with finite-difference gradients, at
// several chunk sizes, and the mixed objective α·CE + (1−α)·KD is the sum of
// the two calls with their weights.
func TestCrossEntropyFused(t *testing.T) {
	const N, C, V = 6, 4, 8
	p := newProblem(3, N, C, V, C, V)
	targets := []int32{3, kdrt.IgnoreIndex, 0, 7, kdrt.IgnoreIndex, 5}
	ref := func() float64 {
		s := logits64(p.h, p.w, N, C, V)
		var sum float64
		cnt := 0
		for n, tg := range targets {
			if tg == kdrt.IgnoreIndex {
				continue
			}
			cnt++
			sum -= math.Log(softmax64(s[n*V:(n+1)*V], 1)[tg])
		}
		return sum / float64(cnt)
	}
	for _, chunk := range []int{1, 4, 6} {
		be := cpu.New()
		head := loss.Head{W: tensor(t, be, "w", p.w, V, C), G: zeros(t, be, "gw", V, C)}
		dh := zeros(t, be, "dh", N, C)
		l, n, err := loss.CrossEntropy(be, tensor(t, be, "h", p.h, N, C), head, dh, targets, 0.3, loss.Options{ChunkRows: chunk})
		if err != nil || n != 4 {
			t.Fatalf("tokens %d, err %v", n, err)
		}
		if want := 0.3 * ref(); math.Abs(l-want) > 1e-6*want {
			t.Fatalf("chunk %d: loss %g, reference %g", chunk, l, want)
		}
		g := fd(p.h, ref)
		for i := range g {
			g[i] *= 0.3
		}
		if e := rel(cpu.Float32s(dh), g); e > 1e-4 {
			t.Fatalf("chunk %d: d hidden relative error %.2g", chunk, e)
		}
	}
}

func TestKDBadInput(t *testing.T) {
	const N, C, V = 3, 2, 5
	p := newProblem(1, N, C, V, C, V)
	be := cpu.New()
	hidden := tensor(t, be, "h", p.h, N, C)
	head := loss.Head{W: tensor(t, be, "w", p.w, V, C)}
	teacher := loss.TeacherLogits{Logits: tensor(t, be, "tl", logits64(p.th, p.tw, N, C, V), N, V)}
	ids := func(v ...int32) *kdrt.Tensor {
		x, _ := be.Alloc("ids", kdrt.I32, N, 2)
		copy(cpu.Int32s(x), v)
		return x
	}
	lp := func(v ...float64) *kdrt.Tensor { return tensor(t, be, "lp", v, N, 2) }
	ok := loss.KDConfig{Divergence: kdrt.ForwardKL, Temperature: 1}
	cases := []struct {
		name    string
		cfg     loss.KDConfig
		teacher loss.Teacher
		mask    []float32
		want    string
	}{
		{"zero temperature", loss.KDConfig{Temperature: 0}, teacher, nil, "temperature 0 must be positive"},
		{"negative temperature", loss.KDConfig{Temperature: -1}, teacher, nil, "temperature -1"},
		{"beta above 1", loss.KDConfig{Divergence: kdrt.JSD, Temperature: 1, Beta: 1.5}, teacher, nil, "beta 1.5 must be in [0, 1]"},
		{"alpha below 0", loss.KDConfig{Divergence: kdrt.SkewKL, Temperature: 1, Alpha: -0.1}, teacher, nil, "alpha -0.1"},
		{"empty mask", ok, teacher, []float32{0, 0, 0}, "no tokens to distill"},
		{"short mask", ok, teacher, []float32{1}, "mask of 1 entries for 3 rows"},
		{"teacher rows", ok, loss.TeacherLogits{Logits: tensor(t, be, "tl2", make([]float64, 2*V), 2, V)}, nil, "for 3 student rows"},
		{"id outside vocabulary", ok, loss.TeacherTopK{IDs: ids(0, 1, 2, 5, 3, 4), LogProbs: lp(-1, -2, -1, -2, -1, -2)}, nil, "id 5 at row 1, slot 1 is outside the student's vocabulary [0, 5)"},
		{"repeated id", ok, loss.TeacherTopK{IDs: ids(0, 1, 2, 2, 3, 4), LogProbs: lp(-1, -2, -1, -2, -1, -2)}, nil, "repeats id 2 in row 1"},
		{"mass above 1", ok, loss.TeacherTopK{IDs: ids(0, 1, 2, 3, 3, 4), LogProbs: lp(-1, -2, -0.1, -0.2, -1, -2)}, nil, "row 1 sum to 1.723"},
		{"positive logprob", ok, loss.TeacherTopK{IDs: ids(0, 1, 2, 3, 3, 4), LogProbs: lp(-1, -2, 0.5, -2, -1, -2)}, nil, "log-probability 0.5 at row 1, slot 0"},
		{"NaN logprob", ok, loss.TeacherTopK{IDs: ids(0, 1, 2, 3, 3, 4), LogProbs: lp(-1, -2, -1, -2, math.NaN(), -2)}, nil, "NaN at row 2"},
		{"k above vocabulary", ok, loss.TeacherTopK{IDs: func() *kdrt.Tensor { x, _ := be.Alloc("ids", kdrt.I32, N, 6); return x }(), LogProbs: tensor(t, be, "lp6", make([]float64, N*6), N, 6)}, nil, "k = 6, more than the vocabulary of 5"},
	}
	for _, c := range cases {
		_, err := loss.KD(be, hidden, head, nil, c.teacher, c.mask, c.cfg, 1, loss.Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to mention %q", c.name, err, c.want)
		}
	}
	if _, _, err := loss.CrossEntropy(be, hidden, head, nil, []int32{kdrt.IgnoreIndex, kdrt.IgnoreIndex, kdrt.IgnoreIndex}, 1, loss.Options{}); err == nil || !strings.Contains(err.Error(), "no target tokens") {
		t.Errorf("all-masked cross-entropy: %v", err)
	}
	if _, _, err := loss.CrossEntropy(be, hidden, head, nil, []int32{1, 9, 2}, 1, loss.Options{}); err == nil || !strings.Contains(err.Error(), "target 9 at row 1") {
		t.Errorf("target outside vocabulary: %v", err)
	}
	if _, err := loss.KD(be, hidden, loss.Head{W: tensor(t, be, "w3", make([]float64, V*3), V, 3)}, nil, teacher, nil, ok, 1, loss.Options{}); err == nil || !strings.Contains(err.Error(), "differ in width") {
		t.Errorf("mismatched hidden and head: %v", err)
	}
}
