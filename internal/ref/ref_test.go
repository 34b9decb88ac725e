package ref

import (
	"math"
	"math/rand/v2"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
)

var kinds = []kdrt.DivergenceKind{kdrt.ForwardKL, kdrt.ReverseKL, kdrt.JSD, kdrt.TVD, kdrt.SkewKL, kdrt.SkewReverseKL}

func randVec(r *rand.Rand, n int, std float64) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = r.NormFloat64() * std
	}
	return x
}

// TestDivergenceGradQ checks the term-by-term derivatives against central
// differences of Divergence itself, with q moved as free coordinates.
func TestDivergenceGradQ(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, kind := range kinds {
		for _, ba := range []float64{0, 0.25, 0.5, 1} {
			if kind == kdrt.SkewKL || kind == kdrt.SkewReverseKL {
				if ba == 1 {
					continue // m = p or q alone: α ∈ [0, 1)
				}
			}
			p, q := Softmax(randVec(r, 9, 1.5), 1), Softmax(randVec(r, 9, 1.5), 1)
			got := DivergenceGradQ(kind, p, q, ba, ba)
			want := CentralDiff(q, func() float64 { return Divergence(kind, p, q, ba, ba) }, 1e-7)
			if e := RelErr(got, want); e > 1e-6 {
				t.Errorf("%v β=α=%g: ∂D/∂q %v, finite differences %v (relative error %.2g)", kind, ba, got, want, e)
			}
		}
	}
}

// TestSoftmaxBackward checks the chain through q = softmax(s/T) against
// central differences over the logits.
func TestSoftmaxBackward(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, kind := range kinds {
		for _, T := range []float64{0.5, 1, 2} {
			s, p := randVec(r, 7, 2), Softmax(randVec(r, 7, 2), 1)
			q := Softmax(s, T)
			got := SoftmaxBackward(q, DivergenceGradQ(kind, p, q, 0.5, 0.25), T)
			want := CentralDiff(s, func() float64 { return Divergence(kind, p, Softmax(s, T), 0.5, 0.25) }, 1e-6)
			if e := RelErr(got, want); e > 1e-6 {
				t.Errorf("%v T=%g: ∂D/∂s %v, finite differences %v (relative error %.2g)", kind, T, got, want, e)
			}
		}
	}
}

// TestCrossEntropy compares with −log of the explicit softmax, including
// logits large enough to overflow a naive exp.
func TestCrossEntropy(t *testing.T) {
	x := []float64{800, 799, -3, 0}
	for tg := range x {
		want := -math.Log(Softmax(x, 1)[tg])
		if got := CrossEntropy(x, tg); math.Abs(got-want) > 1e-12*math.Max(1, want) {
			t.Errorf("target %d: %g, want %g", tg, got, want)
		}
	}
}

func TestMaxNormErr(t *testing.T) {
	if e := MaxNormErr([]float64{1, 2.5, -4}, []float64{1, 2, -4}); e != 0.125 {
		t.Errorf("MaxNormErr = %g, want 0.125", e)
	}
}
