package tasks

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// harnessExpected is testdata/harness/expected.json, written by
// scripts/fixtures/make_task_fixtures.py from lm-evaluation-harness's own
// run of the same task files on the same model (in float64).
type harnessExpected struct {
	ChoiceMaxLen int `json:"choice_max_len"`
	PPLMaxLen    int `json:"perplexity_max_len"`
	Choice       struct {
		Docs []struct {
			ID             string    `json:"id"`
			LogLikelihoods []float64 `json:"loglikelihoods"`
			Acc            float64   `json:"acc"`
			AccNorm        float64   `json:"acc_norm"`
			Requests       []struct {
				Context      []int32 `json:"context"`
				Continuation []int32 `json:"continuation"`
			} `json:"requests"`
		} `json:"docs"`
		Metrics map[string]float64 `json:"metrics"`
	} `json:"choice"`
	Perplexity struct {
		Docs []struct {
			ID            string  `json:"id"`
			LogLikelihood float64 `json:"loglikelihood"`
			Tokens        int     `json:"tokens"`
		} `json:"docs"`
		Metrics map[string]float64 `json:"metrics"`
	} `json:"perplexity"`
}

func loadHarness(t *testing.T) (*harnessExpected, *model.Model, *tokenizer.Tokenizer) {
	t.Helper()
	dir := filepath.Join("testdata", "harness")
	raw, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var exp harnessExpected
	if err := json.Unmarshal(raw, &exp); err != nil {
		t.Fatal(err)
	}
	m, err := model.LoadDir(filepath.Join(dir, "model"), cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.LoadDir(filepath.Join(dir, "model"))
	if err != nil {
		t.Fatal(err)
	}
	return &exp, m, tok
}

// close64 compares a float32-computed log-likelihood with the float64
// reference: sums of a few log-probabilities of magnitude ~10 carry float32
// rounding of ~1e-6 relative.
func close64(got, want float64) bool {
	return math.Abs(got-want) <= 1e-4+1e-5*math.Abs(want)
}

// TestChoiceTokenizationMatchesHarness: each (context, " "+choice) request
// is tokenized as lm-evaluation-harness's _encode_pair tokenizes it
// (trailing whitespace moved, whole-then-split, empty context → EOS).
func TestChoiceTokenizationMatchesHarness(t *testing.T) {
	exp, m, tok := loadHarness(t)
	task, err := Load(filepath.Join("testdata", "harness", "choice.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	s := newScorer(m, tok, exp.ChoiceMaxLen, 4)
	for i, ex := range task.Examples {
		d := exp.Choice.Docs[i]
		for j, c := range ex.Choices {
			r, err := s.encodePair(ex.Context, ex.Delimiter+c)
			if err != nil {
				t.Fatal(err)
			}
			want := d.Requests[j]
			if !slices.Equal(r.ctx, want.Context) || !slices.Equal(r.cont, want.Continuation) {
				t.Errorf("%s choice %d (%q | %q): got %v | %v, the harness %v | %v", d.ID, j, ex.Context, c, r.ctx, r.cont, want.Context, want.Continuation)
			}
		}
	}
}

// TestChoiceMatchesHarness: every choice's log-likelihood, acc and
// acc_norm per document, and the task's acc and acc_norm, equal what the
// harness computed — at several batch sizes (batching must not matter).
func TestChoiceMatchesHarness(t *testing.T) {
	exp, m, tok := loadHarness(t)
	task, err := Load(filepath.Join("testdata", "harness", "choice.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bs := range []int{1, 5, 64} {
		res, err := Evaluate(context.Background(), m, tok, task, Options{BatchSize: bs, MaxLen: exp.ChoiceMaxLen})
		if err != nil {
			t.Fatal(err)
		}
		for i, rec := range res.Records {
			d := exp.Choice.Docs[i]
			got := rec["loglikelihoods"].([]float64)
			for j := range got {
				if !close64(got[j], d.LogLikelihoods[j]) {
					t.Errorf("batch %d, %s choice %d: log-likelihood %.9g, the harness %.9g", bs, d.ID, j, got[j], d.LogLikelihoods[j])
				}
			}
			if rec["acc"] != d.Acc || rec["acc_norm"] != d.AccNorm {
				t.Errorf("batch %d, %s: acc %v acc_norm %v, the harness %v %v", bs, d.ID, rec["acc"], rec["acc_norm"], d.Acc, d.AccNorm)
			}
		}
		for _, name := range []string{"acc", "acc_norm"} {
			if got, want := res.Metric(name).Value, exp.Choice.Metrics[name]; got != want {
				t.Errorf("batch %d: %s %v, the harness %v", bs, name, got, want)
			}
		}
	}
}

// TestPerplexityMatchesHarness: rolling-window log-likelihoods of texts
// longer than the window (24 tokens) and the harness's word perplexity,
// byte perplexity and bits per byte.
func TestPerplexityMatchesHarness(t *testing.T) {
	exp, m, tok := loadHarness(t)
	task, err := Load(filepath.Join("testdata", "harness", "perplexity.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bs := range []int{1, 3} {
		res, err := Evaluate(context.Background(), m, tok, task, Options{BatchSize: bs, MaxLen: exp.PPLMaxLen})
		if err != nil {
			t.Fatal(err)
		}
		for i, rec := range res.Records {
			d := exp.Perplexity.Docs[i]
			if got := rec["loglikelihood"].(float64); !close64(got, d.LogLikelihood) {
				t.Errorf("batch %d, %s: log-likelihood %.9g, the harness %.9g", bs, d.ID, got, d.LogLikelihood)
			}
			if rec["tokens"] != d.Tokens {
				t.Errorf("%s: %v tokens, the harness %d", d.ID, rec["tokens"], d.Tokens)
			}
		}
		bpb := res.Metric("bits_per_byte").Value
		rel := func(a, b float64) float64 { return math.Abs(a-b) / math.Abs(b) }
		for name, got := range map[string]float64{"bits_per_byte": bpb, "byte_perplexity": math.Exp2(bpb),
			"word_perplexity": res.Metric("word_perplexity").Value} {
			if want := exp.Perplexity.Metrics[name]; rel(got, want) > 1e-5 {
				t.Errorf("batch %d: %s %.9g, the harness %.9g", bs, name, got, want)
			}
		}
	}
}
