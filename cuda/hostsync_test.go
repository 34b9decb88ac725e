package cuda

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/kd/optim"
	"github.com/kdnative/kdnative/kd/train"
	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestCounters: each kind of device traffic counts where it happens, with
// the bytes it moves; an upload is queued (no wait) and a download waits;
// the caching allocator's reuse reaches no driver call.
func TestCounters(t *testing.T) {
	g := gpuOrSkip(t)
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	x, err := g.Alloc("counters.x", kdrt.F32, 1000)
	if err != nil {
		t.Fatal(err)
	}
	// Warm up: the size class in the cache, the pinned staging memory.
	if err := g.Upload(x, make([]float32, 1000)); err != nil {
		t.Fatal(err)
	}
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	g.Free(x)
	g.ResetCounters()
	// A size class the cache now holds: no driver call, one fill.
	if x, err = g.Alloc("counters.x", kdrt.F32, 1000); err != nil {
		t.Fatal(err)
	}
	defer g.Free(x)
	vals := make([]float32, 1000)
	for i := range vals {
		vals[i] = float32(i)
	}
	if err := g.Upload(x, vals); err != nil {
		t.Fatal(err)
	}
	g.Zero(g.Slice(x, 0, 10))
	g.Scale(x, 2)
	back := make([]float32, 1000)
	if err := g.Download(x, back); err != nil {
		t.Fatal(err)
	}
	if back[10] != 20 || back[999] != 1998 || back[0] != 0 {
		t.Fatalf("the upload, zero and scale gave %v … %v", back[:12], back[999])
	}
	got := g.Counters()
	want := kdrt.Counters{Syncs: 1, Launches: 1, Memsets: 2, Uploads: 1, Downloads: 1, HostToDevice: 4000, DeviceToHost: 4000}
	if got != want {
		t.Errorf("counters:\n got %v\nwant %v", got, want)
	}
	// A size never seen before goes to the driver.
	countersRuns++
	g.ResetCounters()
	y, err := g.Alloc("counters.y", kdrt.F32, (3+countersRuns)<<20)
	if err != nil {
		t.Fatal(err)
	}
	g.Free(y)
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	if c := g.Counters(); c.AllocCalls < 1 || c.Syncs != 1 {
		t.Errorf("a tensor of a new size and a Sync counted %v", c)
	}
}

// countersRuns makes each run of TestCounters (-count) ask for a new size.
var countersRuns int

// TestAddSum compares AddSum with the CPU backend's on random rows: the
// float64 slot gets the sum of x added, other slots are left alone.
func TestAddSum(t *testing.T) {
	g := gpuOrSkip(t)
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 255, 1000, 4097} {
		xs := make([]float32, n)
		for i := range xs {
			xs[i] = float32(r.NormFloat64() * 3)
		}
		acc := make([]float32, 6)
		for s := range 3 {
			kdrt.SetFloat64At(acc, s, r.NormFloat64())
		}
		var out [2][]float32
		for i, be := range []kdrt.Backend{cpu.New(), g} {
			a, err := be.Alloc("acc", kdrt.F32, 6)
			if err != nil {
				t.Fatal(err)
			}
			x, err := be.Alloc("x", kdrt.F32, n)
			if err != nil {
				t.Fatal(err)
			}
			if err := be.Upload(a, acc); err != nil {
				t.Fatal(err)
			}
			if err := be.Upload(x, xs); err != nil {
				t.Fatal(err)
			}
			be.AddSum(a, 1, x)
			be.AddSum(a, 1, be.Slice(x, 0, n/2))
			out[i] = make([]float32, 6)
			if err := be.Download(a, out[i]); err != nil {
				t.Fatal(err)
			}
			be.Free(a)
			be.Free(x)
		}
		var ref float64 = kdrt.Float64At(acc, 1)
		for _, v := range xs {
			ref += float64(v)
		}
		for _, v := range xs[:n/2] {
			ref += float64(v)
		}
		for s := range 3 {
			c, d := kdrt.Float64At(out[0], s), kdrt.Float64At(out[1], s)
			if s != 1 {
				if c != kdrt.Float64At(acc, s) || d != c {
					t.Errorf("n=%d: slot %d changed: %v, %v (was %v)", n, s, c, d, kdrt.Float64At(acc, s))
				}
				continue
			}
			if math.Abs(c-ref) > 1e-12*(1+math.Abs(ref)) || math.Abs(d-c) > 1e-12*(1+math.Abs(c)) {
				t.Errorf("n=%d: sum %v (cpu) %v (cuda), want %v", n, c, d, ref)
			}
		}
	}
}

// kdStep is one optimizer step of KD with an online teacher as the trainer
// makes it (kd/train's trainStep and sftMicroBatch): the sums reset, the
// gradients zeroed, the student's forward, the teacher's inference forward,
// the fused forward KL at T = 2 in chunks, the student's backward, and
// AdamW with clipping, launched and then read back with the loss in one
// download. With eager set it makes the calls the way they were made before
// the device kept the values: the loss read back by KD itself and the norm
// by AdamW.Step.
type kdStep struct {
	be               kdrt.Backend
	student, teacher *model.Model
	opt              *optim.AdamW
	sums             *loss.Sums
	batch            model.Batch
	mask             []float32
	// graph, when set, brackets each step with BeginGraph(graph) and
	// EndGraph (runtime.StepGraphs), as the trainer does; syncInStep adds a
	// Sync in the middle of the step, which a graph cannot hold; notes
	// collects what EndGraph said.
	graph      string
	syncInStep bool
	notes      []string
}

func newKDStep(t *testing.T, be kdrt.Backend) *kdStep {
	t.Helper()
	s := &kdStep{be: be}
	var err error
	if s.student, err = model.LoadDir(fixtureDir("qwen2_bias"), be); err != nil {
		t.Fatal(err)
	}
	if s.teacher, err = model.LoadDir(fixtureDir("llama_gqa"), be); err != nil {
		t.Fatal(err)
	}
	if err := s.student.ZeroGrad(); err != nil {
		t.Fatal(err)
	}
	var slots []optim.Slot
	for _, p := range s.student.Params() {
		slots = append(slots, optim.Slot{Name: p.Name, W: p.W, G: p.G, Master: p.Master, Decay: !p.NoDecay})
	}
	cfg := optim.DefaultAdamW
	cfg.MaxGradNorm = 0.5 // the fixture's gradients are larger: clipping acts
	if s.opt, err = optim.NewAdamW(be, slots, cfg); err != nil {
		t.Fatal(err)
	}
	if s.sums, err = loss.NewSums(be, 2); err != nil {
		t.Fatal(err)
	}
	s.batch = randomBatch(rand.New(rand.NewPCG(5, 6)), 2, 13, s.student.Config.Vocab)
	s.mask = make([]float32, len(s.batch.Targets))
	for i, tg := range s.batch.Targets {
		if tg != kdrt.IgnoreIndex {
			s.mask[i] = 1
		}
	}
	return s
}

// run makes one step and returns its loss and gradient norm.
func (s *kdStep) run(t *testing.T, eager bool) (lossValue, norm float64) {
	t.Helper()
	be := s.be
	sg, graphed := be.(kdrt.StepGraphs)
	graphed = graphed && s.graph != ""
	if graphed {
		sg.BeginGraph(s.graph)
	}
	s.sums.Reset()
	if err := s.student.ZeroGrad(); err != nil {
		t.Fatal(err)
	}
	h, err := s.student.ForwardHidden(s.batch)
	if err != nil {
		t.Fatal(err)
	}
	if s.syncInStep {
		if err := be.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	dh, err := be.Alloc("grad.hidden", h.DType, h.Shape...)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Free(dh)
	th, err := s.teacher.InferHidden(s.batch)
	if err != nil {
		t.Fatal(err)
	}
	opt := loss.Options{ChunkRows: 8} // 26 rows: four chunks
	if !eager {
		opt.Sums = s.sums
	}
	cfg := loss.KDConfig{Divergence: kdrt.ForwardKL, Temperature: 2}
	res, err := loss.KD(be, h, loss.Head{W: s.student.Head().W, G: s.student.Head().G}, dh,
		loss.TeacherHidden{Hidden: th, Head: s.teacher.Head().W}, s.mask, cfg, 1, opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.student.BackwardHidden(dh); err != nil {
		t.Fatal(err)
	}
	if eager {
		if norm, err = s.opt.Step(1e-3); err != nil {
			t.Fatal(err)
		}
		return res.Loss, norm
	}
	s.opt.Launch(1e-3, s.sums.Head())
	if graphed {
		if note := sg.EndGraph(); note != "" {
			s.notes = append(s.notes, note)
		}
	}
	head, err := s.sums.Read()
	if norm, err = s.opt.Finish(float64(head), err); err != nil {
		t.Fatal(err)
	}
	return s.sums.Last().Value(), norm
}

// TestKDStepRoundTrips is the steady-state KD step's budget of host
// round-trips (issue 15): at most 2 host synchronizations and no call to
// the driver's allocator once warmed up, whatever the number of loss
// chunks. The loss and gradient norm it reads back once are checked against
// the CPU backend's made the way they were before (each read by its own
// call), and on the CPU the one-read step gives them to the last bit.
// Launches per step are logged.
func TestKDStepRoundTrips(t *testing.T) {
	g := gpuOrSkip(t)
	t.Setenv("KDNATIVE_CUDA_GRAPHS", "0")
	const steps = 3 // the first warms the caches up
	ref := cpuKDSteps(t, steps)
	cs := newKDStep(t, cpu.New())
	for i := range steps {
		if l, n := cs.run(t, false); l != ref[i][0] || n != ref[i][1] {
			t.Errorf("cpu, step %d: read once per step the loss and norm are %v and %v, read by each call %v and %v", i+1, l, n, ref[i][0], ref[i][1])
		}
	}
	for _, eager := range []bool{true, false} {
		gs := newKDStep(t, g)
		var c kdrt.Counters
		for i := range steps {
			g.ResetCounters()
			l, n := gs.run(t, eager)
			c = g.Counters()
			if math.Abs(l-ref[i][0]) > 1e-4*math.Abs(ref[i][0]) || math.Abs(n-ref[i][1]) > 1e-4*ref[i][1] {
				t.Errorf("eager %v, step %d: loss %.7g and norm %.7g, the CPU's %.7g and %.7g", eager, i+1, l, n, ref[i][0], ref[i][1])
			}
		}
		what := map[bool]string{true: "values read by each call (KD per call, AdamW.Step)", false: "values read once per step (loss.Sums)"}[eager]
		t.Logf("steady-state KD step, %s: %v", what, c)
		if eager {
			continue
		}
		if c.Syncs > 2 {
			t.Errorf("the steady-state KD step made %d host syncs, want at most 2", c.Syncs)
		}
		if c.AllocCalls != 0 {
			t.Errorf("the steady-state KD step made %d allocator calls, want none", c.AllocCalls)
		}
		if c.Downloads != 1 {
			t.Errorf("the steady-state KD step made %d downloads, want one", c.Downloads)
		}
	}
}

// cpuKDSteps is the reference: the loss and gradient norm of each of n KD
// steps on the CPU backend, each value read by the call that makes it.
func cpuKDSteps(t *testing.T, n int) [][2]float64 {
	cs := newKDStep(t, cpu.New())
	ref := make([][2]float64, n)
	for i := range ref {
		ref[i][0], ref[i][1] = cs.run(t, true)
	}
	return ref
}

// TestGraphedKDStep: with the steps bracketed as the trainer brackets them,
// the first runs as usual, the second is captured and launched as one
// graph, and each later one is replayed: one launch per step, the values
// still the CPU's. The emulator captures as the driver does (a captured
// call does not run until the graph is launched), so a step the graph
// missed would give wrong values.
func TestGraphedKDStep(t *testing.T) {
	t.Setenv("KDNATIVE_CUDA_GRAPHS", "1")
	g := gpuOrSkip(t)
	const steps = 5
	ref := cpuKDSteps(t, steps)
	gs := newKDStep(t, g)
	gs.graph = "kd test"
	launched, replayed := g.graph.launched, g.graph.replayed
	var c kdrt.Counters
	for i := range steps {
		g.ResetCounters()
		l, n := gs.run(t, false)
		c = g.Counters()
		if math.Abs(l-ref[i][0]) > 1e-4*math.Abs(ref[i][0]) || math.Abs(n-ref[i][1]) > 1e-4*ref[i][1] {
			t.Errorf("step %d: loss %.7g and norm %.7g, the CPU's %.7g and %.7g", i+1, l, n, ref[i][0], ref[i][1])
		}
	}
	t.Logf("replayed KD step: %v", c)
	if got := g.graph.launched - launched; got != steps-1 {
		t.Errorf("%d graphs launched in %d steps, want %d (all but the first)", got, steps, steps-1)
	}
	if got := g.graph.replayed - replayed; got != steps-2 {
		t.Errorf("%d steps replayed, want %d", got, steps-2)
	}
	if c.Launches != 1 || c.Memsets != 0 || c.Syncs > 2 || c.AllocCalls != 0 || c.Downloads != 1 || c.Uploads == 0 {
		t.Errorf("a replayed step counted %v, want 1 launch (the graph), no memsets, one download, its uploads", c)
	}
	if len(gs.notes) != 0 {
		t.Errorf("EndGraph said %q", gs.notes)
	}
}

// TestGraphFallback: a step that synchronizes in the middle cannot be a
// graph. Each such step runs as usual with the same values, and after a
// few the step's graphs are turned off with one line saying why.
var graphTestKeys atomic.Int64

func TestGraphFallback(t *testing.T) {
	t.Setenv("KDNATIVE_CUDA_GRAPHS", "1")
	g := gpuOrSkip(t)
	const steps = 6
	ref := cpuKDSteps(t, steps)
	gs := newKDStep(t, g)
	// A key of its own on every run (-count=N): the backend remembers a
	// key whose graphs it turned off, and an address can be reused.
	gs.graph, gs.syncInStep = fmt.Sprintf("kd fallback test %d", graphTestKeys.Add(1)), true
	launched := g.graph.launched
	for i := range steps {
		if l, n := gs.run(t, false); math.Abs(l-ref[i][0]) > 1e-4*math.Abs(ref[i][0]) || math.Abs(n-ref[i][1]) > 1e-4*ref[i][1] {
			t.Errorf("step %d: loss %.7g and norm %.7g, the CPU's %.7g and %.7g", i+1, l, n, ref[i][0], ref[i][1])
		}
	}
	if got := g.graph.launched - launched; got != 0 {
		t.Errorf("%d graphs launched for steps that synchronize", got)
	}
	if len(gs.notes) != 1 || !strings.Contains(gs.notes[0], "synchronizes") {
		t.Errorf("EndGraph said %q, want one line saying the step synchronizes", gs.notes)
	}
	t.Logf("%s", gs.notes)
}

// TestGraphsOff: KDNATIVE_CUDA_GRAPHS=0 (and its absence: graphs are
// opt-in until a GPU run confirms them) turns the graphs off: every step
// runs as usual.
func TestGraphsOff(t *testing.T) {
	g := gpuOrSkip(t)
	for _, v := range []string{"0", ""} {
		t.Setenv("KDNATIVE_CUDA_GRAPHS", v)
		gs := newKDStep(t, g)
		gs.graph = "kd graphs off test " + v
		launched := g.graph.launched
		var c kdrt.Counters
		for range 3 {
			g.ResetCounters()
			gs.run(t, false)
			c = g.Counters()
		}
		if got := g.graph.launched - launched; got != 0 || c.Launches < 10 {
			t.Errorf("KDNATIVE_CUDA_GRAPHS=%q: %d graphs launched, the last step counted %v", v, got, c)
		}
	}
}

// TestBenchCountsKDStep: kdnative bench's KD step is the trainer's (one
// read per step), and on a backend that counts it prints the counters of
// each step and puts them in its JSON, where the GPU check's summary reads
// them.
func TestBenchCountsKDStep(t *testing.T) {
	g := gpuOrSkip(t)
	var log strings.Builder
	res, err := train.Bench(g, train.BenchConfig{Model: fixtureDir("qwen2_bias"), Teacher: fixtureDir("llama_gqa"), B: 2, T: 13, Steps: 2, Precision: "fp32"}, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	t.Logf("\n%s", log.String())
	c := res.PerStep
	if c == nil || c.Syncs > 2 || c.AllocCalls != 0 || c.Launches == 0 {
		t.Fatalf("bench's steady-state KD step counted %v, want at most 2 host syncs, no allocator calls", c)
	}
	if n := strings.Count(log.String(), "host syncs"); n != 3 { // each timed step, and the summary
		t.Errorf("the log names host syncs %d times, want 3:\n%s", n, log.String())
	}
	js, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if back["host_syncs_per_step"] != float64(c.Syncs) || back["launches_per_step"] != float64(c.Launches) {
		t.Errorf("bench's JSON lacks the per-step counters: %s", js)
	}
}
