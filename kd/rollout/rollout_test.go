package rollout_test

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/rollout"
	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// demoTeacher is the demo's teacher (a 0.8M-parameter Llama on bytes).
const demoTeacher = "../demo/assets/teacher"

func loadDemo(t *testing.T) *model.Model {
	t.Helper()
	m, err := model.LoadDir(demoTeacher, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func bytesOf(s string) []int32 {
	out := make([]int32, len(s))
	for i := range s {
		out[i] = int32(s[i])
	}
	return out
}

var testPrompts = [][]int32{bytesOf("Call me Ishmael. "), bytesOf("The whale"), bytesOf("It is a way I have of driving off the "), bytesOf("Q")}

// TestSampleMatchesGenerate: every row of one batched call gets the tokens
// and log-probabilities model.Generate gives that prompt and seed alone;
// the sampling log-probabilities are those of the tempered, truncated
// distribution (here: top-p < 1 makes them differ from the raw ones); a
// call with the rows in another order and another batch gives each row the
// same response (a row depends only on its prompt and seed).
func TestSampleMatchesGenerate(t *testing.T) {
	m := loadDemo(t)
	p := rollout.Params{Temperature: 0.9, TopP: 0.95, MaxNewTokens: 24, StopTokens: []int32{256}}
	seeds := []uint64{11, 12, 13, 14}
	s := rollout.NewSampler(m)
	defer s.Close()
	got, err := s.Sample(context.Background(), testPrompts, seeds, p)
	if err != nil {
		t.Fatal(err)
	}
	differ := false
	for i, pr := range testPrompts {
		want, err := m.Generate(pr, model.GenerateParams{MaxTokens: 24, Temperature: 0.9, TopP: 0.95, Seed: seeds[i], StopTokens: []int32{256}})
		if err != nil {
			t.Fatal(err)
		}
		r := got[i]
		if !slices.Equal(r.Response, want.Tokens) || r.Finish != want.Finish || !slices.Equal(r.Prompt, pr) {
			t.Fatalf("row %d: %v (%s), Generate %v (%s)", i, r.Response, r.Finish, want.Tokens, want.Finish)
		}
		for j := range want.Tokens {
			if math.Abs(float64(r.LogProbs[j]-want.LogProbs[j])) > 1e-5 || math.Abs(float64(r.SampleLogProbs[j]-want.SampleLogProbs[j])) > 1e-5 {
				t.Fatalf("row %d token %d: log-probabilities %g/%g, Generate %g/%g", i, j, r.LogProbs[j], r.SampleLogProbs[j], want.LogProbs[j], want.SampleLogProbs[j])
			}
			if r.SampleLogProbs[j] != r.LogProbs[j] {
				differ = true
			}
		}
	}
	if !differ {
		t.Fatal("sampling and raw log-probabilities never differ, at temperature 0.9 and top-p 0.95")
	}
	// Rows 2 and 0 alone, in that order, on the same sampler.
	again, err := s.Sample(context.Background(), [][]int32{testPrompts[2], testPrompts[0]}, []uint64{13, 11}, p)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again[0].Response, got[2].Response) || !slices.Equal(again[1].Response, got[0].Response) {
		t.Fatal("a row's response changed with the batch it was sampled in")
	}
	// MaxLen bounds prompt + response.
	capped, err := s.Sample(context.Background(), testPrompts[:1], seeds[:1], rollout.Params{Temperature: 1, MaxNewTokens: 24, MaxLen: 20})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(capped[0].Prompt) + len(capped[0].Response); n > 20 || (capped[0].Finish == "length" && n != 20) {
		t.Fatalf("MaxLen 20: %d tokens (%s)", n, capped[0].Finish)
	}
	groups, err := s.SampleGroups(context.Background(), testPrompts[:2], 3, []uint64{1, 2, 3, 4, 5, 6}, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 2 || len(groups[1]) != 3 || !slices.Equal(groups[1][0].Prompt, testPrompts[1]) {
		t.Fatalf("groups: %d × %d", len(groups), len(groups[0]))
	}
}

// TestSampleRefuses: bad parameters and prompts are errors naming them.
func TestSampleRefuses(t *testing.T) {
	m := loadDemo(t)
	s := rollout.NewSampler(m)
	defer s.Close()
	long := make([]int32, 128)
	for _, c := range []struct {
		prompts [][]int32
		seeds   []uint64
		p       rollout.Params
		want    string
	}{
		{testPrompts[:1], []uint64{1}, rollout.Params{MaxNewTokens: 0}, "max_new_tokens 0"},
		{testPrompts[:1], []uint64{1}, rollout.Params{MaxNewTokens: 4, TopP: 1.5}, "top_p 1.5"},
		{testPrompts[:1], []uint64{1}, rollout.Params{MaxNewTokens: 4, Temperature: math.NaN()}, "temperature NaN"},
		{[][]int32{{}}, []uint64{1}, rollout.Params{MaxNewTokens: 4}, "prompt 0 is empty"},
		{[][]int32{long}, []uint64{1}, rollout.Params{MaxNewTokens: 4}, "no room for a response"},
		{[][]int32{testPrompts[0]}, []uint64{1}, rollout.Params{MaxNewTokens: 4, MaxLen: 17}, "17 positions at most"},
		{testPrompts[:2], []uint64{1}, rollout.Params{MaxNewTokens: 4}, "1 seeds for 2 prompts"},
	} {
		_, err := s.Sample(context.Background(), c.prompts, c.seeds, c.p)
		if err == nil || !contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error saying %q", c.p, err, c.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Sample(ctx, testPrompts, []uint64{1, 2, 3, 4}, rollout.Params{MaxNewTokens: 4}); err != context.Canceled {
		t.Errorf("cancelled: %v", err)
	}
	// The sampler still works after a cancelled call.
	if _, err := s.Sample(context.Background(), testPrompts[:1], []uint64{1}, rollout.Params{MaxNewTokens: 4}); err != nil {
		t.Fatal(err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestMakeBatch: prompt + response per row, the targets at the positions
// that predict the response tokens only, the recorded log-probabilities
// beside them (NaN for a response that was not sampled), the sequences to
// score and the scatter back.
func TestMakeBatch(t *testing.T) {
	rs := []rollout.Rollout{
		{Prompt: []int32{1, 2, 3}, Response: []int32{4, 5}, SampleLogProbs: []float32{-0.5, -0.25}, LogProbs: []float32{-0.6, -0.3}},
		{Prompt: []int32{7}, Response: []int32{8, 9, 10}},
	}
	b, err := rollout.MakeBatch(rs, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	I := int32(kdrt.IgnoreIndex)
	if b.B != 2 || b.T != 5 || !slices.Equal(b.IDs, []int32{1, 2, 3, 4, 5, 7, 8, 9, 10, 0}) ||
		!slices.Equal(b.Targets, []int32{I, I, 4, 5, I, 8, 9, 10, I, I}) {
		t.Fatalf("batch %d×%d ids %v targets %v", b.B, b.T, b.IDs, b.Targets)
	}
	if b.Behaviour[2] != -0.5 || b.Behaviour[3] != -0.25 || b.Sampled[3] != float64(float32(-0.3)) || !math.IsNaN(b.Behaviour[5]) || b.Behaviour[0] != 0 {
		t.Fatalf("behaviour %v sampled %v", b.Behaviour, b.Sampled)
	}
	if b.AllSampled() {
		t.Fatal("a data response counted as sampled")
	}
	seqs := b.Sequences()
	if !slices.Equal(seqs[0].Tokens, []int32{1, 2, 3, 4, 5}) || seqs[0].Start != 3 || !slices.Equal(seqs[1].Tokens, []int32{7, 8, 9, 10}) || seqs[1].Start != 1 {
		t.Fatalf("sequences %+v", seqs)
	}
	sc, err := b.Scatter([][]float64{{-1, -2}, {-3, -4, -5}})
	if err != nil || !slices.Equal(sc, []float64{0, 0, -1, -2, 0, -3, -4, -5, 0, 0}) {
		t.Fatalf("scatter %v %v", sc, err)
	}
	if _, err := b.Scatter([][]float64{{-1}, {-3, -4, -5}}); err == nil {
		t.Fatal("a short score row was accepted")
	}
	if _, err := rollout.MakeBatch(rs, 0, 4); err == nil {
		t.Fatal("a row longer than the fixed length was accepted")
	}
	if _, err := rollout.MakeBatch([]rollout.Rollout{{Prompt: []int32{1}}}, 0, 0); err == nil {
		t.Fatal("an empty response was accepted")
	}
}

// refScores is each sequence's float64 log-softmax at its scored tokens,
// from the model's forward pass over that sequence alone.
func refScores(t *testing.T, m *model.Model, seqs []rollout.Sequence) [][]float64 {
	t.Helper()
	out := make([][]float64, len(seqs))
	V := m.Config.Vocab
	for i, s := range seqs {
		if _, err := m.Forward(model.Batch{B: 1, T: len(s.Tokens), IDs: s.Tokens}); err != nil {
			t.Fatal(err)
		}
		host := make([]float32, len(s.Tokens)*V)
		if err := m.Backend().Download(m.Logits(), host); err != nil {
			t.Fatal(err)
		}
		for j := s.Start; j < len(s.Tokens); j++ {
			row := host[(j-1)*V : j*V]
			mx := math.Inf(-1)
			for _, v := range row {
				mx = math.Max(mx, float64(v))
			}
			var z float64
			for _, v := range row {
				z += math.Exp(float64(v) - mx)
			}
			out[i] = append(out[i], float64(row[s.Tokens[j]])-mx-math.Log(z))
		}
	}
	return out
}

func scoreSeqs() []rollout.Sequence {
	return []rollout.Sequence{
		{Tokens: bytesOf("Call me Ishmael. Some years ago"), Start: 17},
		{Tokens: bytesOf("The whale swam"), Start: 1},
		{Tokens: append(bytesOf("Q: "), 256), Start: 3},
	}
}

// TestLocalScorer: the local teacher's scores are the log-softmax of its
// own forward pass on each sequence alone.
func TestLocalScorer(t *testing.T) {
	m := loadDemo(t)
	seqs := scoreSeqs()
	want := refScores(t, m, seqs)
	got, err := rollout.Local{Model: m, Pad: 256}.Score(context.Background(), seqs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("sequence %d: %d scores, want %d", i, len(got[i]), len(want[i]))
		}
		for j := range want[i] {
			if math.Abs(got[i][j]-want[i][j]) > 1e-5 {
				t.Fatalf("sequence %d token %d: %g, reference %g", i, j, got[i][j], want[i][j])
			}
		}
	}
	if _, err := (rollout.Local{Model: m}).Score(context.Background(), []rollout.Sequence{{Tokens: []int32{1, 2}, Start: 0}}); err == nil {
		t.Fatal("a sequence scored from token 0 was accepted")
	}
}
