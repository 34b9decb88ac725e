package model

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// samplingDist is the distribution choose draws from, written from its
// definition in float64: logits divided by the temperature, the top-k most
// likely kept, then the smallest prefix (by probability) whose mass reaches
// top-p, renormalized. Zero outside the kept set.
func samplingDist(logits []float32, T float64, topK int, topP float64) []float64 {
	V := len(logits)
	idx := make([]int, V)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	keep := V
	if topK > 0 {
		keep = min(keep, topK)
	}
	w := make([]float64, keep)
	var s float64
	for j := range keep {
		w[j] = math.Exp((float64(logits[idx[j]]) - float64(logits[idx[0]])) / T)
		s += w[j]
	}
	if topP > 0 && topP < 1 {
		var cum float64
		for j := range keep {
			cum += w[j] / s
			if cum >= topP {
				keep = j + 1
				break
			}
		}
	}
	var z float64
	for j := range keep {
		z += w[j]
	}
	p := make([]float64, V)
	for j := range keep {
		p[idx[j]] = w[j] / z
	}
	return p
}

// TestSampleLogProbIsTheSamplingDistribution: the log-probability choose
// reports for a drawn token is the log of that token's probability under
// the tempered, truncated distribution it was drawn from (what importance
// weights against the sampling policy use), and the raw one is the plain
// log-softmax; greedy decoding reports 0.
func TestSampleLogProbIsTheSamplingDistribution(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const V = 37
	logits := make([]float32, V)
	for i := range logits {
		logits[i] = float32(2 * r.NormFloat64())
	}
	var lse float64
	for _, v := range logits {
		lse += math.Exp(float64(v))
	}
	lse = math.Log(lse)
	for _, c := range []struct {
		T    float64
		topK int
		topP float64
	}{{1, 0, 0}, {0.7, 0, 0}, {1.5, 0, 0.9}, {1, 5, 0}, {0.8, 10, 0.6}} {
		want := samplingDist(logits, c.T, c.topK, c.topP)
		p := GenerateParams{Temperature: c.T, TopK: c.topK, TopP: c.topP}
		rng := rand.New(rand.NewPCG(1, 2))
		for range 200 {
			tok, lp, slp, _ := choose(logits, nil, p, rng)
			if want[tok] == 0 {
				t.Fatalf("%+v: drew token %d outside the kept set", c, tok)
			}
			if d := math.Abs(float64(slp) - math.Log(want[tok])); d > 1e-6 {
				t.Fatalf("%+v: token %d: sampling log-probability %g, want %g", c, tok, slp, math.Log(want[tok]))
			}
			if d := math.Abs(float64(lp) - (float64(logits[tok]) - lse)); d > 1e-6 {
				t.Fatalf("%+v: token %d: raw log-probability %g, want %g", c, tok, lp, float64(logits[tok])-lse)
			}
		}
	}
	if _, _, slp, _ := choose(logits, nil, GenerateParams{}, rng0()); slp != 0 {
		t.Fatalf("greedy: sampling log-probability %g, want 0", slp)
	}
}

func rng0() *rand.Rand { return rand.New(rand.NewPCG(0, 0)) }
