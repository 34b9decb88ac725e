package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

// randn returns n standard-normal float64 values from a fixed-seed source.
func randn(r *rand.Rand, n int, std float64) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = r.NormFloat64() * std
	}
	return x
}

func dot64(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// checkGrad compares an analytic gradient of loss with respect to x against
// central finite differences in float64. loss must read x afresh on each call.
func checkGrad(t *testing.T, what string, x []float64, analytic []float64, loss func() float64) {
	t.Helper()
	checkGradTol(t, what, x, analytic, loss, 1e-6)
}

// checkGradTol is checkGrad with a chosen tolerance. Entries of x that are
// −Inf (masked logits) are skipped: their gradient must be zero.
func checkGradTol(t *testing.T, what string, x []float64, analytic []float64, loss func() float64, tol float64) {
	t.Helper()
	// h balances truncation (∝ h²) against rounding (∝ ε·|loss|/h).
	const h = 1e-5
	num := make([]float64, len(x))
	for i := range x {
		if math.IsInf(x[i], -1) {
			num[i] = 0
			continue
		}
		orig := x[i]
		x[i] = orig + h
		lp := loss()
		x[i] = orig - h
		lm := loss()
		x[i] = orig
		num[i] = (lp - lm) / (2 * h)
	}
	// Central differences in float64 are good to about 1e-9 absolute here, so a
	// gradient that is itself tiny is judged against that floor.
	assertCloseFloor(t, what+" (analytic vs finite differences)", analytic, num, tol, 1e-3)
}

// assertClose fails unless ‖got − want‖ / max(‖want‖, tiny) < tol and every
// element is within tol·(max|want| + tiny) of its reference.
func assertClose(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	assertCloseFloor(t, what, got, want, tol, 1e-12)
}

// assertCloseFloor is assertClose with the reference's norm (and largest
// element) taken as at least floor.
func assertCloseFloor(t *testing.T, what string, got, want []float64, tol, floor float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	var dn, wn, wmax float64
	for i := range got {
		d := got[i] - want[i]
		dn += d * d
		wn += want[i] * want[i]
		wmax = max(wmax, math.Abs(want[i]))
	}
	rel := math.Sqrt(dn) / max(math.Sqrt(wn), floor)
	if rel > tol || math.IsNaN(rel) {
		t.Fatalf("%s: relative error %.3g > %.3g", what, rel, tol)
	}
	for i := range got {
		if math.Abs(got[i]-want[i]) > tol*max(wmax, floor) {
			t.Fatalf("%s: element %d is %.9g, want %.9g", what, i, got[i], want[i])
		}
	}
}

func to32(x []float64) []float32 {
	y := make([]float32, len(x))
	for i, v := range x {
		y[i] = float32(v)
	}
	return y
}

func to64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}
