package tasks

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// TestPassAtKHandComputed: the Codex estimator on cases worked by hand,
// 1 − C(n−c, k)/C(n, k).
func TestPassAtKHandComputed(t *testing.T) {
	cases := []struct {
		n, c, k int
		want    float64
	}{
		{5, 2, 2, 1 - 3.0/10},         // C(3,2)=3, C(5,2)=10
		{10, 3, 1, 0.3},               // pass@1 is c/n
		{10, 3, 5, 1 - 21.0/252},      // C(7,5)=21, C(10,5)=252
		{10, 0, 5, 0},                 // nothing correct
		{10, 10, 1, 1},                // everything correct
		{4, 1, 4, 1},                  // n−c < k: some draw of 4 holds the correct one
		{20, 5, 3, 1 - 455.0/1140},    // C(15,3)=455, C(20,3)=1140
		{200, 1, 10, 10.0 / 200},      // one correct: k/n
		{6, 2, 3, 1 - 4.0/20},         // C(4,3)=4, C(6,3)=20
		{100, 50, 2, 1 - 1225.0/4950}, // C(50,2)=1225, C(100,2)=4950
	}
	for _, c := range cases {
		if got := PassAtK(c.n, c.c, c.k); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("pass@%d with n=%d c=%d: %v, want %v", c.k, c.n, c.c, got, c.want)
		}
	}
}

// TestPassAtKExactBinomials: the stable product equals the binomial ratio
// computed exactly with big integers, over a grid that includes n = 200.
func TestPassAtKExactBinomials(t *testing.T) {
	for _, n := range []int{1, 2, 7, 30, 200} {
		for c := 0; c <= n; c += max(1, n/9) {
			for k := 1; k <= n; k += max(1, n/7) {
				num, den := new(big.Int), new(big.Int)
				if n-c >= k {
					num.Binomial(int64(n-c), int64(k))
				}
				den.Binomial(int64(n), int64(k))
				ratio, _ := new(big.Rat).SetFrac(num, den).Float64()
				if got, want := PassAtK(n, c, k), 1-ratio; math.Abs(got-want) > 1e-12 {
					t.Errorf("n=%d c=%d k=%d: %v, exact %v", n, c, k, got, want)
				}
			}
		}
	}
}

// TestWilson against the intervals Newcombe (1998, "Two-sided confidence
// intervals for the single proportion", Stat. Med. 17:857, Table I, method 3)
// publishes.
func TestWilson(t *testing.T) {
	cases := []struct {
		x, n   int
		lo, hi float64
	}{
		{81, 263, 0.2553, 0.3662},
		{15, 148, 0.0624, 0.1605},
		{0, 20, 0, 0.1611},
		{1, 29, 0.0061, 0.1718},
		{0, 10, 0, 0.2775},
		{5, 10, 0.2366, 0.7634},
	}
	for _, c := range cases {
		lo, hi := Wilson(float64(c.x), c.n)
		if math.Abs(lo-c.lo) > 5e-5 || math.Abs(hi-c.hi) > 5e-5 {
			t.Errorf("%d/%d: [%.5f, %.5f], Newcombe [%.4f, %.4f]", c.x, c.n, lo, hi, c.lo, c.hi)
		}
	}
}

// TestBootstrapMean: for many draws of a known distribution the percentile
// bootstrap interval of the mean is close to the normal one, mean ± 1.96·s/√n;
// it is reproducible for a seed and covers the mean.
func TestBootstrapMean(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	xs := make([]float64, 2000)
	var sum, sq float64
	for i := range xs {
		xs[i] = r.ExpFloat64() // skewed, sd 1
		sum += xs[i]
	}
	mu := sum / float64(len(xs))
	for _, x := range xs {
		sq += (x - mu) * (x - mu)
	}
	se := math.Sqrt(sq/float64(len(xs)-1)) / math.Sqrt(float64(len(xs)))
	lo, hi := BootstrapMean(xs, 4000, 1)
	if lo >= mu || hi <= mu {
		t.Fatalf("interval [%v, %v] misses the mean %v", lo, hi, mu)
	}
	if w, want := hi-lo, 2*z95*se; math.Abs(w-want) > 0.1*want {
		t.Errorf("width %v, normal theory %v", w, want)
	}
	lo2, hi2 := BootstrapMean(xs, 4000, 1)
	if lo2 != lo || hi2 != hi {
		t.Errorf("same seed, another interval: [%v, %v] vs [%v, %v]", lo2, hi2, lo, hi)
	}
	if lo3, hi3 := BootstrapMean(xs[:1], 100, 1); lo3 != xs[0] || hi3 != xs[0] {
		t.Errorf("one item: [%v, %v]", lo3, hi3)
	}
}
