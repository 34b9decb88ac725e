package sgemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

// A variant is one way Sgemm can run on this machine: a micro-kernel, with
// the assembly helpers (packing transpose, dot and axpy) on or off.
type variant struct {
	name string
	kern *kernel
	asm  bool
}

// variants returns every way Sgemm can run here: each assembly kernel, the
// portable kernel with pure-Go packing (what a CPU without AVX2 runs), and
// each of those again with tiny blocking sizes so that small matrices cross
// every kc, mc and nc block boundary and exercise the β-then-accumulate path
// over k. The assembly kernels also run once with the pure-Go helpers, since
// only their panels are wide enough to reach the eight-row packing path.
func variants() []variant {
	var vs []variant
	add := func(name string, k *kernel, asm bool) {
		small := *k
		small.kc, small.mc, small.nc = 7, 2*k.mr+1, 3*k.nr-1
		vs = append(vs, variant{name, k, asm}, variant{name + "/small-blocks", &small, asm})
	}
	for _, k := range hostKernels {
		add(k.name, k, true)
		add(k.name+"/go-helpers", k, false)
	}
	add(genericKernel.name, genericKernel, false)
	return vs
}

// use runs f with Sgemm switched to v.
func (v variant) use(f func()) {
	savedKern, savedPack, savedVec := active, useTranspose8, useAsmVec
	active = v.kern
	useTranspose8 = v.asm && savedPack
	useAsmVec = v.asm && savedVec
	defer func() { active, useTranspose8, useAsmVec = savedKern, savedPack, savedVec }()
	f()
}

// problem is one Sgemm call with its operands.
type problem struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int
}

func (p *problem) String() string {
	return fmt.Sprintf("tA=%v tB=%v m=%d n=%d k=%d α=%g β=%g lda=%d ldb=%d ldc=%d",
		p.transA, p.transB, p.m, p.n, p.k, p.alpha, p.beta, p.lda, p.ldb, p.ldc)
}

// randProblem makes a problem with random operands; leading dimensions get
// up to pad extra columns. C is NaN when β = 0, so reading it would show.
func randProblem(rng *rand.Rand, transA, transB bool, m, n, k int, alpha, beta float32, pad int) *problem {
	p := &problem{transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta}
	rowsA, colsA := m, k
	if transA {
		rowsA, colsA = k, m
	}
	rowsB, colsB := k, n
	if transB {
		rowsB, colsB = n, k
	}
	p.lda = max(1, colsA) + rng.IntN(pad+1)
	p.ldb = max(1, colsB) + rng.IntN(pad+1)
	p.ldc = max(1, n) + rng.IntN(pad+1)
	p.a = randMatrix(rng, rowsA, colsA, p.lda)
	p.b = randMatrix(rng, rowsB, colsB, p.ldb)
	p.c = randMatrix(rng, m, n, p.ldc)
	if beta == 0 {
		for i := range p.c {
			p.c[i] = float32(math.NaN())
		}
	}
	return p
}

// randMatrix returns a rows×cols matrix with stride ld in a slice exactly as
// long as it must be.
func randMatrix(rng *rand.Rand, rows, cols, ld int) []float32 {
	if rows == 0 || cols == 0 {
		return nil
	}
	x := make([]float32, (rows-1)*ld+cols)
	for i := range x {
		x[i] = rng.Float32()*2 - 1
	}
	return x
}

func (p *problem) opA(i, l int) float64 {
	if p.transA {
		return float64(p.a[l*p.lda+i])
	}
	return float64(p.a[i*p.lda+l])
}

func (p *problem) opB(l, j int) float64 {
	if p.transB {
		return float64(p.b[j*p.ldb+l])
	}
	return float64(p.b[l*p.ldb+j])
}

// reference computes the product in float64 by the definition and, per
// element, the error scale |α|·Σ|a||b| + |β·c| that fp32 rounding is relative to.
func (p *problem) reference() (want, scale []float64) {
	want = make([]float64, len(p.c))
	scale = make([]float64, len(p.c))
	for i := 0; i < p.m; i++ {
		for j := 0; j < p.n; j++ {
			var s, abs float64
			for l := 0; l < p.k; l++ {
				x := p.opA(i, l) * p.opB(l, j)
				s += x
				abs += math.Abs(x)
			}
			at := i*p.ldc + j
			want[at] = float64(p.alpha) * s
			scale[at] = math.Abs(float64(p.alpha)) * abs
			if p.beta != 0 {
				bc := float64(p.beta) * float64(p.c[at])
				want[at] += bc
				scale[at] += math.Abs(bc)
			}
		}
	}
	return want, scale
}

// run calls Sgemm on a copy of C and returns the copy.
func (p *problem) run() []float32 {
	c := append([]float32(nil), p.c...)
	Sgemm(p.transA, p.transB, p.m, p.n, p.k, p.alpha, p.a, p.lda, p.b, p.ldb, p.beta, c, p.ldc)
	return c
}

const tol = 1e-5

// check compares got against the float64 reference inside the logical
// matrix, and against the untouched input in the padding between rows.
func (p *problem) check(t *testing.T, got []float32) {
	t.Helper()
	want, scale := p.reference()
	bad := 0
	for i := range got {
		r, j := i/p.ldc, i%p.ldc
		if j >= p.n {
			if math.Float32bits(got[i]) != math.Float32bits(p.c[i]) {
				t.Errorf("%v: padding C[%d][%d] changed: %v -> %v", p, r, j, p.c[i], got[i])
				return
			}
			continue
		}
		err := math.Abs(float64(got[i]) - want[i])
		if !(err <= tol*scale[i]+1e-30) {
			if bad++; bad <= 3 {
				t.Errorf("%v: C[%d][%d] = %v, want %v (err %.3g, allowed %.3g)", p, r, j, got[i], want[i], err, tol*scale[i])
			}
		}
	}
}

// sizes near every tile and block edge of the kernels, and primes.
var edgeSizes = []int{1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 15, 16, 17, 23, 29, 31, 32, 33, 47, 48, 49, 64, 97, 131, 191, 192, 193, 255, 256, 257, 300}

var scalars = [][2]float32{{1, 0}, {1, 1}, {0, 1}, {0, 0}, {-0.7, 0}, {1.3, -0.4}, {0.5, 1}}

func TestSgemm(t *testing.T) {
	for vi, v := range variants() {
		kern := v.kern
		t.Run(v.name, func(t *testing.T) {
			v.use(func() {
				rng := rand.New(rand.NewPCG(1, uint64(vi)))
				trials := 150
				if testing.Short() {
					trials = 40
				}
				for trial := 0; trial < trials; trial++ {
					m := edgeSizes[rng.IntN(len(edgeSizes))]
					n := edgeSizes[rng.IntN(len(edgeSizes))]
					k := edgeSizes[rng.IntN(len(edgeSizes))]
					s := scalars[trial%len(scalars)]
					tA, tB := trial&1 != 0, trial&2 != 0
					p := randProblem(rng, tA, tB, m, n, k, s[0], s[1], 3*(trial%2))
					p.check(t, p.run())
				}
				// Every transpose combination on a few shapes, all scalars.
				for _, sh := range [][3]int{{1, 1, 1}, {kern.mr + 1, kern.nr - 1, 3}, {2*kern.mr - 1, 2*kern.nr + 1, 300}, {37, 53, 71}} {
					for _, s := range scalars {
						for tr := 0; tr < 4; tr++ {
							p := randProblem(rng, tr&1 != 0, tr&2 != 0, sh[0], sh[1], sh[2], s[0], s[1], 2)
							p.check(t, p.run())
						}
					}
				}
			})
		})
	}
}

// TestKZero: with k = 0 the product is empty, so C = β·C (and C = 0 without
// reading it when β = 0); A and B may be empty.
func TestKZero(t *testing.T) {
	for _, beta := range []float32{0, 1, -2} {
		c := []float32{1, 2, 3, 9, 4, 5, 6}
		if beta == 0 {
			c[0] = float32(math.NaN())
		}
		Sgemm(false, true, 2, 3, 0, 1, nil, 1, nil, 1, beta, c, 4)
		want := []float32{1 * beta, 2 * beta, 3 * beta, 9, 4 * beta, 5 * beta, 6 * beta}
		for i := range c {
			if c[i] != want[i] {
				t.Fatalf("β=%v: C = %v, want %v", beta, c, want)
			}
		}
	}
}

// TestSentinel puts A, B and C inside larger buffers of sentinels, with C
// taken as a slice whose capacity runs on into the sentinels, and checks that
// nothing outside the logical matrices changes.
func TestSentinel(t *testing.T) {
	const guard = 67
	sentinel := float32(-12345.5)
	rng := rand.New(rand.NewPCG(2, 2))
	for _, v := range variants() {
		v.use(func() {
			for trial := 0; trial < 40; trial++ {
				m, n, k := 1+rng.IntN(90), 1+rng.IntN(90), 1+rng.IntN(70)
				// A third with a side of at most 5: the skinny path and
				// just past it.
				switch trial % 6 {
				case 1:
					m = 1 + rng.IntN(5)
				case 2:
					n = 1 + rng.IntN(5)
				}
				if trial == 0 {
					m, n, k = 260, 700, 300 // big enough to run in parallel
				}
				s := scalars[trial%len(scalars)]
				p := randProblem(rng, trial&1 != 0, trial&2 != 0, m, n, k, s[0], s[1], 2)
				embed := func(x []float32) (whole, inner []float32) {
					whole = make([]float32, len(x)+2*guard)
					for i := range whole {
						whole[i] = sentinel
					}
					copy(whole[guard:], x)
					return whole, whole[guard : guard+len(x)]
				}
				wa, a := embed(p.a)
				wb, b := embed(p.b)
				wc, c := embed(p.c)
				// Between rows of C the padding is sentinel too.
				for i := range c {
					if i%p.ldc >= n {
						c[i] = sentinel
					}
				}
				before := append([]float32(nil), wc...)
				ba, bb := append([]float32(nil), wa...), append([]float32(nil), wb...)
				Sgemm(p.transA, p.transB, m, n, k, p.alpha, a, p.lda, b, p.ldb, p.beta, c, p.ldc)
				for i := range wc {
					j := i - guard
					inside := j >= 0 && j < len(c) && j%p.ldc < n
					if !inside && math.Float32bits(wc[i]) != math.Float32bits(before[i]) {
						t.Fatalf("%s %v: wrote outside C at offset %d", v.name, p, j)
					}
				}
				for i := range wa {
					if math.Float32bits(wa[i]) != math.Float32bits(ba[i]) {
						t.Fatalf("%s %v: wrote into A", v.name, p)
					}
				}
				for i := range wb {
					if math.Float32bits(wb[i]) != math.Float32bits(bb[i]) {
						t.Fatalf("%s %v: wrote into B", v.name, p)
					}
				}
			}
		})
	}
}

// TestKernelsAgree runs the same products through every variant and compares
// each with the portable one (assembly off); and requires results within fp32 rounding of each other.
func TestKernelsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for trial := 0; trial < 30; trial++ {
		m, n, k := 1+rng.IntN(200), 1+rng.IntN(200), 1+rng.IntN(400)
		p := randProblem(rng, trial&1 != 0, trial&2 != 0, m, n, k, 0.9, 0.3, 1)
		_, scale := p.reference()
		vs := variants()
		generic := vs[len(vs)-2]
		var base []float32
		generic.use(func() { base = p.run() })
		for _, v := range vs {
			var got []float32
			v.use(func() { got = p.run() })
			for i := range got {
				if i%p.ldc >= n {
					continue
				}
				if d := math.Abs(float64(got[i] - base[i])); d > 2*tol*scale[i] {
					t.Fatalf("%s vs generic %v: C[%d] %v vs %v", v.name, p, i, got[i], base[i])
				}
			}
		}
	}
}

// TestParallel checks products large enough to be split, with every
// transpose combination and GOMAXPROCS above the core count, so chunks are
// shared unevenly.
func TestParallel(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(5))
	rng := rand.New(rand.NewPCG(4, 4))
	for _, sh := range [][3]int{{64, 1601, 37}, {1601, 64, 37}, {517, 515, 260}, {3, 1601, 300}, {1601, 2, 300}} {
		for tr := 0; tr < 4; tr++ {
			p := randProblem(rng, tr&1 != 0, tr&2 != 0, sh[0], sh[1], sh[2], 1, 0.5, 1)
			p.check(t, p.run())
		}
	}
}

func TestPanics(t *testing.T) {
	a := make([]float32, 12)
	for name, f := range map[string]func(){
		"negative m": func() { Sgemm(false, false, -1, 2, 2, 1, a, 2, a, 2, 0, a, 2) },
		"bad lda":    func() { Sgemm(false, false, 2, 2, 3, 1, a, 2, a, 2, 0, a, 2) },
		"bad ldb":    func() { Sgemm(false, true, 2, 2, 3, 1, a, 3, a, 2, 0, a, 2) },
		"bad ldc":    func() { Sgemm(false, false, 2, 3, 2, 1, a, 2, a, 3, 0, a, 2) },
		"short A":    func() { Sgemm(false, false, 5, 2, 3, 1, a, 3, a, 2, 0, a, 2) },
		"short C":    func() { Sgemm(false, false, 2, 4, 1, 1, a, 1, a, 4, 0, a[:7], 4) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

// TestNoAllocs: after a warm-up call, products allocate nothing, also when
// they run in parallel.
func TestNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	if runtime.GOMAXPROCS(0) < 2 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	}
	rng := rand.New(rand.NewPCG(5, 5))
	p := randProblem(rng, false, true, 256, 512, 128, 1, 0, 0)
	c := make([]float32, len(p.c))
	call := func() { Sgemm(p.transA, p.transB, p.m, p.n, p.k, 1, p.a, p.lda, p.b, p.ldb, 0, c, p.ldc) }
	call()
	if n := testing.AllocsPerRun(20, call); n > 0 {
		t.Errorf("%v allocations per call, want 0", n)
	}
}

// TestGPT2Shapes runs the benchmark shapes at full size and checks a random
// sample of entries against float64 dot products: the full-size blocking
// (several kc, mc and nc blocks, several chunks per worker) is only reached
// here.
func TestGPT2Shapes(t *testing.T) {
	if testing.Short() {
		t.Skip("large matrices")
	}
	rng := rand.New(rand.NewPCG(6, 6))
	for _, s := range gpt2Shapes {
		p := randProblem(rng, s.transA, s.transB, s.m, s.n, s.k, 0.5, 0.25, 0)
		got := p.run()
		for range 300 {
			i, j := rng.IntN(s.m), rng.IntN(s.n)
			var sum, abs float64
			for l := 0; l < s.k; l++ {
				x := p.opA(i, l) * p.opB(l, j)
				sum += x
				abs += math.Abs(x)
			}
			at := i*p.ldc + j
			want := 0.5*sum + 0.25*float64(p.c[at])
			if err := math.Abs(float64(got[at]) - want); err > tol*(0.5*abs+0.25*math.Abs(float64(p.c[at]))) {
				t.Fatalf("%s: C[%d][%d] = %v, want %v", s.name, i, j, got[at], want)
			}
		}
	}
}

// TestConcurrentCalls runs products from several goroutines at once: they
// share the helper goroutines and the buffer and task pools (run it with
// -race).
func TestConcurrentCalls(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3))
	rng := rand.New(rand.NewPCG(7, 7))
	var ps []*problem
	for i := range 6 {
		ps = append(ps, randProblem(rng, i&1 != 0, i&2 != 0, 150+i*7, 400-i*9, 90+i, 1, 0.5, 1))
	}
	wants := make([][]float32, len(ps))
	for i, p := range ps {
		wants[i] = p.run()
	}
	errs := make(chan string, len(ps))
	for _, i := range rand.Perm(len(ps)) {
		go func() {
			for range 5 {
				got := ps[i].run()
				for e := range got {
					if math.Float32bits(got[e]) != math.Float32bits(wants[i][e]) {
						errs <- fmt.Sprintf("%v: concurrent result differs at %d", ps[i], e)
						return
					}
				}
			}
			errs <- ""
		}()
	}
	for range ps {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
}
