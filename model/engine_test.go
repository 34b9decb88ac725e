package model_test

import (
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// engineCase is a sequence for the engine tests: when it joins (the step
// count), its prompt and its parameters.
type engineCase struct {
	join   int
	prompt []int32
	p      model.GenerateParams
}

// engineCases are mixed-length prompts with mixed parameters (greedy and
// sampled, top-k/top-p, repetition penalty, log-probabilities, stop tokens)
// that join a running engine at different steps; lengths fit the gpt2
// fixture's 16 positions.
func engineCases() []engineCase {
	var out []engineCase
	prompts := [][]int32{{3, 14, 15, 92, 65}, {7}, {2, 71, 82}, {5, 5, 5, 5, 5, 5, 5, 5, 5}, {40, 41}, {9, 8, 7, 6, 5, 4, 3}, {11}}
	params := []model.GenerateParams{
		{MaxTokens: 6, TopLogProbs: 2},
		{MaxTokens: 5},
		{MaxTokens: 6, Temperature: 0.9, TopP: 0.95, Seed: 11},
		{MaxTokens: 4, Temperature: 1.3, TopK: 5, Seed: 4, RepetitionPenalty: 1.2},
		{MaxTokens: 7, RepetitionPenalty: 1.5, TopLogProbs: 3},
	}
	for i := range 12 {
		out = append(out, engineCase{join: i / 3 * 2, prompt: prompts[i%len(prompts)], p: params[i%len(params)]})
	}
	return out
}

// runEngine adds the cases as they join and steps until all are done; it
// returns the sequences and the engine's peak cache memory.
func runEngine(t *testing.T, m *model.Model, cfg model.EngineConfig, cases []engineCase) ([]*model.Seq, *model.Engine) {
	t.Helper()
	e, err := m.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	model.SetEngineMinCache(e, 2)
	seqs := make([]*model.Seq, len(cases))
	var waiting []int
	for step := 0; ; step++ {
		for i, c := range cases {
			if c.join == step {
				seqs[i] = &model.Seq{Prompt: c.prompt, Params: c.p}
				waiting = append(waiting, i)
			}
		}
		for len(waiting) > 0 {
			ok, err := e.Add(seqs[waiting[0]])
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			waiting = waiting[1:]
		}
		if e.KVBytes() > cfg.KVBytes && cfg.KVBytes > 0 {
			t.Fatalf("step %d: caches hold %d bytes, budget %d", step, e.KVBytes(), cfg.KVBytes)
		}
		if e.Rows() == 0 && len(waiting) == 0 && step > cases[len(cases)-1].join {
			return seqs, e
		}
		if _, err := e.Step(); err != nil {
			t.Fatal(err)
		}
		if step > 10000 {
			t.Fatal("the engine does not finish")
		}
	}
}

// TestEngineMatchesGenerate: sequences that join a running engine at
// different steps, decoded together with their own parameters, their
// prompts read in chunks between other sequences' decoding steps, give each
// exactly what Generate gives it alone — on every architecture, with few
// rows (so sequences wait for one) and with a cache budget so small that
// sequences give their caches up and are recomputed.
func TestEngineMatchesGenerate(t *testing.T) {
	cases := engineCases()
	for _, name := range fixtureCases {
		t.Run(name, func(t *testing.T) {
			fx := openFixture(t, name)
			m, err := model.LoadDir(fx.dir, cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			e0, err := m.NewEngine(model.EngineConfig{})
			if err != nil {
				t.Fatal(err)
			}
			perToken := e0.KVBytesPerToken()
			e0.Close()
			want := make([]*model.Generation, len(cases))
			for i, c := range cases {
				if want[i], err = m.Generate(c.prompt, c.p); err != nil {
					t.Fatal(err)
				}
			}
			for _, cfg := range []model.EngineConfig{
				{MaxRows: 16, StepTokens: 64},
				{MaxRows: 3, StepTokens: 4},
				{MaxRows: 5, StepTokens: 6, KVBytes: 20 * perToken},
			} {
				seqs, e := runEngine(t, m, cfg, cases)
				preempted := 0
				for i, s := range seqs {
					preempted += s.Preempted()
					if !s.Done || !slices.Equal(s.Gen.Tokens, want[i].Tokens) || s.Gen.Finish != want[i].Finish {
						t.Fatalf("%+v: sequence %d (prompt %v, %+v): engine %v (%s), Generate %v (%s)",
							cfg, i, cases[i].prompt, cases[i].p, s.Gen.Tokens, s.Gen.Finish, want[i].Tokens, want[i].Finish)
					}
					for j := range want[i].LogProbs {
						if math.Abs(float64(s.Gen.LogProbs[j]-want[i].LogProbs[j])) > 1e-4 {
							t.Fatalf("%+v: sequence %d token %d: log-probability %g, Generate %g", cfg, i, j, s.Gen.LogProbs[j], want[i].LogProbs[j])
						}
					}
					if len(s.Gen.Top) != len(want[i].Top) {
						t.Fatalf("sequence %d: %d top rows, Generate %d", i, len(s.Gen.Top), len(want[i].Top))
					}
					for j := range want[i].Top {
						for a := range want[i].Top[j] {
							if s.Gen.Top[j][a].ID != want[i].Top[j][a].ID {
								t.Fatalf("sequence %d token %d: top %v, Generate %v", i, j, s.Gen.Top[j], want[i].Top[j])
							}
						}
					}
				}
				if cfg.KVBytes > 0 && (preempted == 0 || e.PeakKVBytes() > cfg.KVBytes) {
					t.Fatalf("budget %d: %d preemptions, peak %d", cfg.KVBytes, preempted, e.PeakKVBytes())
				}
				if e.KVBytes() != 0 {
					t.Fatalf("caches hold %d bytes after every sequence finished", e.KVBytes())
				}
			}
		})
	}
}

// TestEngineStopAndCancel: a stop token and Params.Stop end a sequence as
// in Generate; Cancel takes one out and frees its cache.
func TestEngineStopAndCancel(t *testing.T) {
	fx := openFixture(t, "llama_gqa")
	m, err := model.LoadDir(fx.dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int32{1, 2, 3}
	greedy, _ := m.Generate(prompt, model.GenerateParams{MaxTokens: 10})
	stop := greedy.Tokens[3]
	e, err := m.NewEngine(model.EngineConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	a := &model.Seq{Prompt: prompt, Params: model.GenerateParams{MaxTokens: 10, StopTokens: []int32{stop}}}
	b := &model.Seq{Prompt: prompt, Params: model.GenerateParams{MaxTokens: 10, Stop: func(g []int32) bool { return len(g) == 2 }}}
	c := &model.Seq{Prompt: prompt, Params: model.GenerateParams{MaxTokens: 10}}
	for _, s := range []*model.Seq{a, b, c} {
		if ok, err := e.Add(s); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	for range 3 {
		if _, err := e.Step(); err != nil {
			t.Fatal(err)
		}
	}
	e.Cancel(c)
	for e.Rows() > 0 {
		if _, err := e.Step(); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(a.Gen.Tokens, greedy.Tokens[:slices.Index(greedy.Tokens, stop)+1]) || a.Gen.Finish != "stop" {
		t.Fatalf("stop token %d: %v (%s), greedy %v", stop, a.Gen.Tokens, a.Gen.Finish, greedy.Tokens)
	}
	if !slices.Equal(b.Gen.Tokens, greedy.Tokens[:2]) || b.Gen.Finish != "stop" {
		t.Fatalf("Stop: %v (%s)", b.Gen.Tokens, b.Gen.Finish)
	}
	if !c.Done || len(c.Gen.Tokens) != 3 || e.KVBytes() != 0 {
		t.Fatalf("cancelled: done %v, %d tokens, caches %d bytes", c.Done, len(c.Gen.Tokens), e.KVBytes())
	}
}

// TestEngineRefuses: bad sequences are errors naming what is wrong, a
// sequence larger than the whole cache budget a KVBudgetError; a full
// engine says to wait.
func TestEngineRefuses(t *testing.T) {
	fx := openFixture(t, "llama_gqa")
	m, err := model.LoadDir(fx.dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	e, err := m.NewEngine(model.EngineConfig{MaxRows: 1, KVBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for _, s := range []*model.Seq{
		{Prompt: nil, Params: model.GenerateParams{MaxTokens: 1}},
		{Prompt: []int32{97}, Params: model.GenerateParams{MaxTokens: 1}},
		{Prompt: []int32{1}, Params: model.GenerateParams{MaxTokens: 0}},
		{Prompt: []int32{1}, Params: model.GenerateParams{MaxTokens: 64}},
		{Prompt: []int32{1}, Params: model.GenerateParams{MaxTokens: 1, TopP: 2}},
	} {
		if ok, err := e.Add(s); ok || err == nil {
			t.Errorf("%v %+v accepted", s.Prompt, s.Params)
		}
	}
	per := e.KVBytesPerToken()
	_, err = e.Add(&model.Seq{Prompt: []int32{1, 2}, Params: model.GenerateParams{MaxTokens: 20}})
	var be *model.KVBudgetError
	if !errors.As(err, &be) || be.Need != 22*per || be.Budget != 1000 {
		t.Fatalf("over budget: %v", err)
	}
	e2, _ := m.NewEngine(model.EngineConfig{MaxRows: 1})
	defer e2.Close()
	if ok, err := e2.Add(&model.Seq{Prompt: []int32{1}, Params: model.GenerateParams{MaxTokens: 2}}); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if ok, err := e2.Add(&model.Seq{Prompt: []int32{1}, Params: model.GenerateParams{MaxTokens: 2}}); ok || err != nil {
		t.Fatalf("second sequence in a one-row engine: %v %v", ok, err)
	}
}

// TestEngineBF16: under BF16 storage (the GPU's default precision) the
// engine keeps its activations and key/value caches in BF16 and decodes
// what Generate decodes in BF16 (whole prompts in one chunk, so both read
// them in the same order); its caches take half the F32 bytes per token.
func TestEngineBF16(t *testing.T) {
	cases := engineCases()
	for _, name := range fixtureCases {
		t.Run(name, func(t *testing.T) {
			fx := openFixture(t, name)
			m32, err := model.LoadDir(fx.dir, cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			m, err := model.LoadDir(fx.dir, cpu.New(), model.Storage(kdrt.BF16))
			if err != nil {
				t.Fatal(err)
			}
			e32, err := m32.NewEngine(model.EngineConfig{})
			if err != nil {
				t.Fatal(err)
			}
			e16, err := m.NewEngine(model.EngineConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if 2*e16.KVBytesPerToken() != e32.KVBytesPerToken() {
				t.Errorf("BF16 caches take %d bytes per token, F32 %d", e16.KVBytesPerToken(), e32.KVBytesPerToken())
			}
			e32.Close()
			e16.Close()
			seqs, _ := runEngine(t, m, model.EngineConfig{MaxRows: 16, StepTokens: 64}, cases)
			for i, c := range cases {
				want, err := m.Generate(c.prompt, c.p)
				if err != nil {
					t.Fatal(err)
				}
				s := seqs[i]
				if !s.Done || !slices.Equal(s.Gen.Tokens, want.Tokens) {
					t.Fatalf("sequence %d (prompt %v): engine %v, Generate %v", i, c.prompt, s.Gen.Tokens, want.Tokens)
				}
				for j := range want.LogProbs {
					if math.Abs(float64(s.Gen.LogProbs[j]-want.LogProbs[j])) > 2e-2 {
						t.Fatalf("sequence %d token %d: log-probability %g, Generate %g", i, j, s.Gen.LogProbs[j], want.LogProbs[j])
					}
				}
			}
		})
	}
}
