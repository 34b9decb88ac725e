package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/kd/train"
	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// decodePrompts are left-padded in a batch (their lengths differ), so the
// decode attention sees per-sequence key starts.
var decodePrompts = [][]int32{{3, 14, 15, 92, 65}, {7}, {2, 71, 82, 9}}

// sameGenerations fails unless got has want's tokens and finish reasons,
// and its log-probabilities within tol.
func sameGenerations(t *testing.T, what string, got, want []*model.Generation, tol float64) {
	t.Helper()
	for i := range want {
		if !slices.Equal(got[i].Tokens, want[i].Tokens) || got[i].Finish != want[i].Finish {
			t.Fatalf("%s, sequence %d: tokens %v (%s), the CPU's %v (%s)", what, i, got[i].Tokens, got[i].Finish, want[i].Tokens, want[i].Finish)
		}
		for j := range want[i].LogProbs {
			if d := math.Abs(float64(got[i].LogProbs[j] - want[i].LogProbs[j])); d > tol {
				t.Fatalf("%s, sequence %d token %d: log-probability %g, the CPU's %g", what, i, j, got[i].LogProbs[j], want[i].LogProbs[j])
			}
		}
	}
}

// loadPair loads a fixture on the CPU and on g.
func loadPair(t *testing.T, name string, g *Backend) (cm, gm *model.Model) {
	t.Helper()
	var err error
	if cm, err = model.LoadDir(fixtureDir(name), cpu.New()); err != nil {
		t.Fatal(err)
	}
	if gm, err = model.LoadDir(fixtureDir(name), g, model.Storage(kdrt.F32)); err != nil {
		t.Fatal(err)
	}
	return cm, gm
}

// TestGraphedDecode: GenerateBatch's decode steps, which read their
// positions from the device, are one graph: the first step runs as usual,
// the second is captured, every later one replayed, and the tokens and
// log-probabilities are the CPU's (greedy and sampled, with a sliding
// window and without). The emulator runs a captured call only when its
// graph is launched, so a step the graph missed or replayed with stale
// positions would give other tokens.
func TestGraphedDecode(t *testing.T) {
	t.Setenv("KDNATIVE_CUDA_GRAPHS", "1")
	g := gpuOrSkip(t)
	for _, name := range []string{"qwen2_bias", "mistral_window"} {
		for _, p := range []model.GenerateParams{
			{MaxTokens: 12, TopLogProbs: 2},
			{MaxTokens: 12, Temperature: 0.8, TopK: 20, Seed: 3},
		} {
			cm, gm := loadPair(t, name, g)
			var notes []string
			gm.SetGraphLog(func(line string) { notes = append(notes, line) })
			want, err := cm.GenerateBatch(decodePrompts, p)
			if err != nil {
				t.Fatal(err)
			}
			launched, replayed := g.graph.launched, g.graph.replayed
			got, err := gm.GenerateBatch(decodePrompts, p)
			if err != nil {
				t.Fatal(err)
			}
			sameGenerations(t, name, got, want, 1e-4)
			// The prefill gives the first token; of the decode steps the
			// first runs as usual and the second is captured (unless an
			// earlier run, -count=N, left recordings of the same tensors).
			steps := p.MaxTokens - 1
			if l, r := g.graph.launched-launched, g.graph.replayed-replayed; r < steps-2 || l-r > 1 {
				t.Errorf("%s: %d decode steps launched %d graphs and replayed %d, want at least %d replays and at most one capture", name, steps, l, r, steps-2)
			}
			if len(notes) != 0 {
				t.Errorf("%s: the graphs said %q", name, notes)
			}
		}
	}
}

// TestGraphedEngineDecode: the engine's steps that only decode are replayed
// graphs once warm (one launch, one download and no allocator call each),
// through a change in the number of sequences, and every sequence gets the
// CPU engine's tokens.
func TestGraphedEngineDecode(t *testing.T) {
	t.Setenv("KDNATIVE_CUDA_GRAPHS", "1")
	g := gpuOrSkip(t)
	cm, gm := loadPair(t, "qwen2_bias", g)
	params := []model.GenerateParams{{MaxTokens: 14}, {MaxTokens: 9, Temperature: 0.7, Seed: 5}, {MaxTokens: 14, TopLogProbs: 1}}
	run := func(m *model.Model, each func(step int, replayed bool, c kdrt.Counters)) []*model.Generation {
		e, err := m.NewEngine(model.EngineConfig{MaxRows: 4})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		seqs := make([]*model.Seq, len(decodePrompts))
		for i, pr := range decodePrompts {
			seqs[i] = &model.Seq{Prompt: pr, Params: params[i]}
			if ok, err := e.Add(seqs[i]); err != nil || !ok {
				t.Fatalf("adding sequence %d: %v, %v", i, ok, err)
			}
		}
		for step := 0; e.Rows() > 0; step++ {
			g.ResetCounters()
			before := g.graph.replayed
			if _, err := e.Step(); err != nil {
				t.Fatal(err)
			}
			if each != nil {
				each(step, g.graph.replayed > before, g.Counters())
			}
		}
		out := make([]*model.Generation, len(seqs))
		for i, s := range seqs {
			out[i] = &s.Gen
		}
		return out
	}
	want := run(cm, nil)
	replays := 0
	var asUsual, asGraph kdrt.Counters
	got := run(gm, func(step int, replayed bool, c kdrt.Counters) {
		if step == 1 {
			asUsual = c // the first decode step runs as usual
		}
		if !replayed {
			return
		}
		asGraph = c
		replays++
		if c.Launches != 1 || c.Memsets != 0 || c.Downloads != 1 || c.AllocCalls != 0 || c.Syncs > 1 {
			t.Errorf("step %d, replayed: counted %v, want one launch (the graph), one download, no allocator call", step, c)
		}
	})
	sameGenerations(t, "engine", got, want, 1e-4)
	t.Logf("a decode step of 3 sequences: %v as usual; replayed: %v", asUsual, asGraph)
	// After the step that reads the prompts in (and gives each sequence
	// its first token), 8 steps decode all three sequences (until the
	// second has its 9 tokens), then 5 decode the other two: all but the
	// first two of each kind are replays (more under -count=N, where an
	// earlier run's recordings may fit).
	if want := (8 - 2) + (5 - 2); replays < want {
		t.Errorf("%d steps replayed, want at least %d", replays, want)
	}
}

// TestGraphedEval: a validation pass with a teacher makes one graph per
// batch shape: once warm (the first batches of a shape run as usual while
// the caching allocator settles, then one is captured), every batch is
// replayed as one launch with one download and no allocator call; the loss
// and KL are the CPU's in every pass.
func TestGraphedEval(t *testing.T) {
	t.Setenv("KDNATIVE_CUDA_GRAPHS", "1")
	g := gpuOrSkip(t)
	cs, gs := loadPair(t, "qwen2_bias", g)
	ct, gt := loadPair(t, "llama_gqa", g)
	r := rand.New(rand.NewPCG(8, 9))
	var rows []data.Example
	for _, n := range []int{11, 11, 11, 11, 11, 11, 7, 7} { // batches of 2: 2×11 three times, then 2×7
		ex := data.Example{Tokens: make([]int32, n), Labels: make([]int32, n)}
		for j := range n {
			ex.Tokens[j] = int32(r.IntN(97))
			ex.Labels[j] = ex.Tokens[j]
			if j < 3 {
				ex.Labels[j] = data.IgnoreIndex // a prompt
			}
		}
		rows = append(rows, ex)
	}
	want, err := train.EvaluateSFT(cpu.New(), cs, ct, rows, 2, 0, loss.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The same sums for every pass, as the trainer gives its own.
	sums, err := loss.NewSums(g, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Free()
	var c kdrt.Counters
	replayed := 0
	for pass := range 3 {
		g.ResetCounters()
		r0 := g.graph.replayed
		got, err := train.EvaluateSFT(g, gs, gt, rows, 2, 0, loss.Options{Sums: sums})
		if err != nil {
			t.Fatal(err)
		}
		c, replayed = g.Counters(), g.graph.replayed-r0
		t.Logf("pass %d: %d of 4 batches replayed; %v", pass+1, replayed, c)
		if got.Tokens != want.Tokens || !got.HasKL || math.Abs(got.Loss-want.Loss) > 1e-5*want.Loss || math.Abs(got.KL-want.KL) > 1e-4*want.KL {
			t.Errorf("pass %d: %v; the CPU's %v", pass+1, got, want)
		}
	}
	if replayed != 4 || c.Launches != 4 || c.Memsets != 0 || c.Downloads != 4 || c.AllocCalls != 0 {
		t.Errorf("the third pass replayed %d batches and counted %v, want 4 of 4: 4 launches (one graph per batch), 4 downloads, no allocator call", replayed, c)
	}
}

// tinyStep is a graphed step small enough to run hundreds of: under its
// own key, x = 2·(i + 1) computed on the device from an uploaded i.
type tinyStep struct {
	g   *Backend
	key string
	one *kdrt.Tensor
}

func newTinyStep(t *testing.T, g *Backend, name string) *tinyStep {
	t.Helper()
	one := tinyTensor(t, g, "tiny.one")
	if err := g.Upload(one, slices.Repeat([]float32{1}, 64)); err != nil {
		t.Fatal(err)
	}
	// A key of its own on every run (-count=N): the backend remembers keys.
	return &tinyStep{g: g, key: fmt.Sprintf("%s %d", name, graphTestKeys.Add(1)), one: one}
}

// tinyTensor is an F32 [64] tensor on g freed when the test ends.
func tinyTensor(t *testing.T, g *Backend, name string) *kdrt.Tensor {
	t.Helper()
	x, err := g.Alloc(name, kdrt.F32, 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Free(x) })
	return x
}

// run makes step i on x, checks x after the step's read, and returns what
// EndGraph said and whether the step was a replay.
func (s *tinyStep) run(t *testing.T, x *kdrt.Tensor, i int) (note string, replayed bool) {
	t.Helper()
	g := s.g
	g.BeginGraph(s.key)
	if err := g.Upload(x, slices.Repeat([]float32{float32(i)}, 64)); err != nil {
		t.Fatal(err)
	}
	g.Add(x, x, s.one)
	g.Scale(x, 2)
	r0 := g.graph.replayed
	note = g.EndGraph()
	if got := values(t, g, x); got[0] != float32(2*(i+1)) || got[63] != got[0] {
		t.Fatalf("step %d: %v…%v, want %v", i, got[0], got[63], 2*(i+1))
	}
	return note, g.graph.replayed > r0
}

// TestGraphChurn: a step whose tensors change every time (as a decode
// batch's do when sequences come and go at each step) is never replayed;
// after graphMaxRecs recordings in a row are dropped unreplayed its graphs
// turn off with one line saying why, and every step's result stays right.
func TestGraphChurn(t *testing.T) {
	t.Setenv("KDNATIVE_CUDA_GRAPHS", "1")
	g := gpuOrSkip(t)
	s := newTinyStep(t, g, "churn test")
	var notes []string
	var keep []*kdrt.Tensor // every step's tensor stays: a new address each time
	const steps = 4 * graphMaxRecs * 2
	launchedAt := 0
	for i := range steps {
		x := tinyTensor(t, g, "churn.x")
		keep = append(keep, x)
		if note, _ := s.run(t, x, i); note != "" {
			notes = append(notes, note)
			launchedAt = g.graph.launched
		}
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "changes from step to step") {
		t.Fatalf("EndGraph said %q, want one line saying the work changes from step to step", notes)
	}
	if launchedAt != g.graph.launched {
		t.Errorf("%d graphs launched after the key's graphs were turned off", g.graph.launched-launchedAt)
	}
	if k := g.graph.keys[s.key]; len(k.recs) != 0 {
		t.Errorf("the key kept %d recordings after its graphs went off", len(k.recs))
	}
	t.Logf("%s", notes[0])
	// When the steps settle, the key tries graphs again after
	// graphRetryAfter steps, and replays; the line is not said again.
	defer func(n int) { graphRetryAfter = n }(graphRetryAfter)
	graphRetryAfter = 10
	replays := 0
	for i := range 40 {
		note, replayed := s.run(t, keep[0], i)
		if note != "" {
			t.Errorf("EndGraph said %q again", note)
		}
		if replayed {
			replays++
		}
	}
	if replays < 20 {
		t.Errorf("%d of 40 settled steps replayed after the retry, want at least 20", replays)
	}
}

// TestGraphBuckets: a step of graphMaxRecs kinds in random order (a
// training run's length buckets under one key) keeps one recording of each
// kind: a step captured after a miss that repeats a recorded kind runs that
// recording, and once every kind is recorded every step is a replay; the
// key's graphs never turn off, and every result is right.
func TestGraphBuckets(t *testing.T) {
	t.Setenv("KDNATIVE_CUDA_GRAPHS", "1")
	g := gpuOrSkip(t)
	s := newTinyStep(t, g, "buckets test")
	kinds := make([]*kdrt.Tensor, graphMaxRecs)
	for i := range kinds {
		kinds[i] = tinyTensor(t, g, "buckets.x")
	}
	r := rand.New(rand.NewPCG(4, 5))
	const steps, tail = 600, 100
	var notes []string
	replayed := 0
	for i := range steps {
		note, rep := s.run(t, kinds[r.IntN(len(kinds))], i)
		if note != "" {
			notes = append(notes, note)
		}
		if i >= steps-tail && rep {
			replayed++
		}
	}
	k := g.graph.keys[s.key]
	if len(notes) != 0 || k.off {
		t.Fatalf("the key's graphs turned off: %q", notes)
	}
	if len(k.recs) != len(kinds) || replayed != tail {
		t.Errorf("%d recordings for %d kinds of step; %d of the last %d steps replayed", len(k.recs), len(kinds), replayed, tail)
	}
}
