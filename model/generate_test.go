package model_test

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestGenerateKVCacheMatchesRecompute: greedy decoding with the key/value
// cache gives the tokens that recomputing the whole forward pass at every
// step gives (model.Sample), for every architecture including Mistral's
// sliding window, and the reported log-probabilities are those of the full
// forward pass over the final sequence.
func TestGenerateKVCacheMatchesRecompute(t *testing.T) {
	for _, name := range fixtureCases {
		t.Run(name, func(t *testing.T) {
			fx := openFixture(t, name)
			m, err := model.LoadDir(fx.dir, cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			prompt := []int32{3, 14, 15, 92, 65}
			n := 9 // beyond the mistral fixture's window of 4
			if m.Config.MaxPositions < len(prompt)+n {
				n = m.Config.MaxPositions - len(prompt)
			}
			want, err := m.Sample(prompt, n, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			g, err := m.Generate(prompt, model.GenerateParams{MaxTokens: n, TopLogProbs: 3})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(g.Tokens, want) || g.Finish != "length" {
				t.Fatalf("KV-cache greedy %v (%s), recompute %v", g.Tokens, g.Finish, want)
			}
			seq := append(slices.Clone(prompt), g.Tokens...)
			if _, err := m.Forward(model.Batch{B: 1, T: len(seq), IDs: seq}); err != nil {
				t.Fatal(err)
			}
			V := m.Config.Vocab
			logits := cpu.Float32s(m.Logits())
			for i, tok := range g.Tokens {
				row := logits[(len(prompt)-1+i)*V : (len(prompt)+i)*V]
				mx := math.Inf(-1)
				for _, v := range row {
					mx = math.Max(mx, float64(v))
				}
				var s float64
				for _, v := range row {
					s += math.Exp(float64(v) - mx)
				}
				lp := float64(row[tok]) - mx - math.Log(s)
				if math.Abs(lp-float64(g.LogProbs[i])) > 1e-4 {
					t.Fatalf("token %d: log-probability %g, forward pass %g", i, g.LogProbs[i], lp)
				}
				if g.Top[i][0].ID != tok || len(g.Top[i]) != 3 {
					t.Fatalf("token %d: top alternatives %v", i, g.Top[i])
				}
			}
		})
	}
}

func TestGenerateSampling(t *testing.T) {
	fx := openFixture(t, "llama_gqa")
	m, err := model.LoadDir(fx.dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int32{1, 2, 3}
	p := model.GenerateParams{MaxTokens: 20, Temperature: 1.2, TopP: 0.9, RepetitionPenalty: 1.3, Seed: 7}
	a, _ := m.Generate(prompt, p)
	b, _ := m.Generate(prompt, p)
	if !slices.Equal(a.Tokens, b.Tokens) {
		t.Fatalf("the same seed gave %v and %v", a.Tokens, b.Tokens)
	}
	greedy, _ := m.Generate(prompt, model.GenerateParams{MaxTokens: 10})
	top1, _ := m.Generate(prompt, model.GenerateParams{MaxTokens: 10, Temperature: 1, TopK: 1, Seed: 3})
	if !slices.Equal(greedy.Tokens, top1.Tokens) {
		t.Fatalf("top-k 1 %v, greedy %v", top1.Tokens, greedy.Tokens)
	}
	stop := greedy.Tokens[3]
	s, _ := m.Generate(prompt, model.GenerateParams{MaxTokens: 10, StopTokens: []int32{stop}})
	if s.Finish != "stop" || s.Tokens[len(s.Tokens)-1] != stop || len(s.Tokens) > 4 {
		t.Fatalf("stop at %d: %v (%s)", stop, s.Tokens, s.Finish)
	}
	for _, bad := range []model.GenerateParams{{MaxTokens: 0}, {MaxTokens: 5, Temperature: -1}, {MaxTokens: 5, TopP: 1.5}, {MaxTokens: 100}} {
		if _, err := m.Generate(prompt, bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := m.Generate(prompt, model.GenerateParams{MaxTokens: 100}); err == nil || !strings.Contains(err.Error(), "longer than the model allows") {
		t.Errorf("too long: %v", err)
	}
}

// TestGenerateBatchMatchesSingle: prompts of different lengths decoded
// together (left-padded, the padding masked out of attention, positions per
// row) give each row exactly what Generate gives for it alone — greedy and
// sampled (row i with seed Seed+i) — on every architecture.
func TestGenerateBatchMatchesSingle(t *testing.T) {
	prompts := [][]int32{{3, 14, 15, 92, 65}, {7}, {2, 71, 82}}
	for _, name := range fixtureCases {
		t.Run(name, func(t *testing.T) {
			fx := openFixture(t, name)
			m, err := model.LoadDir(fx.dir, cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []model.GenerateParams{
				{MaxTokens: 8, TopLogProbs: 2},
				{MaxTokens: 8, Temperature: 0.9, TopP: 0.95, Seed: 11},
			} {
				batch, err := m.GenerateBatch(prompts, p)
				if err != nil {
					t.Fatal(err)
				}
				for i, pr := range prompts {
					single := p
					single.Seed = p.Seed + uint64(i)
					want, err := m.Generate(pr, single)
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(batch[i].Tokens, want.Tokens) {
						t.Fatalf("T=%g row %d: batched %v, alone %v", p.Temperature, i, batch[i].Tokens, want.Tokens)
					}
					for j := range want.LogProbs {
						if math.Abs(float64(batch[i].LogProbs[j]-want.LogProbs[j])) > 1e-4 {
							t.Fatalf("row %d token %d: log-probability %g batched, %g alone", i, j, batch[i].LogProbs[j], want.LogProbs[j])
						}
					}
				}
			}
		})
	}
}
