// Package ref holds float64 reference implementations written straight from
// the definitions, for tests: the numbers the CPU kernels, the fused losses
// and (later) the GPU kernels are checked against. Nothing here is fast, and
// nothing in the product imports it.
package ref

import (
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// Softmax returns softmax(x/T), computed stably; −Inf entries get 0.
func Softmax(x []float64, T float64) []float64 {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = math.Max(mx, v/T)
	}
	p := make([]float64, len(x))
	var s float64
	for i, v := range x {
		p[i] = math.Exp(v/T - mx)
		s += p[i]
	}
	for i := range p {
		p[i] /= s
	}
	return p
}

// KL is Σ a·log(a/b) over the entries where a > 0.
func KL(a, b []float64) float64 {
	var d float64
	for i := range a {
		if a[i] > 0 {
			d += a[i] * math.Log(a[i]/b[i])
		}
	}
	return d
}

// Mix is wa·a + (1−wa)·b.
func Mix(a, b []float64, wa float64) []float64 {
	m := make([]float64, len(a))
	for i := range a {
		m[i] = wa*a[i] + (1-wa)*b[i]
	}
	return m
}

// Divergence is D(p, q) for the teacher's p and the student's q, as
// runtime.DivergenceKind defines each kind (JSD at β = 0 and 1 is exactly
// forward and reverse KL, as TRL's GKD defines it).
func Divergence(kind kdrt.DivergenceKind, p, q []float64, beta, alpha float64) float64 {
	switch kind {
	case kdrt.ForwardKL:
		return KL(p, q)
	case kdrt.ReverseKL:
		return KL(q, p)
	case kdrt.JSD:
		switch beta {
		case 0:
			return KL(p, q)
		case 1:
			return KL(q, p)
		}
		m := Mix(p, q, beta)
		return beta*KL(p, m) + (1-beta)*KL(q, m)
	case kdrt.TVD:
		var d float64
		for i := range p {
			d += 0.5 * math.Abs(p[i]-q[i])
		}
		return d
	case kdrt.SkewKL:
		return KL(p, Mix(p, q, alpha))
	case kdrt.SkewReverseKL:
		return KL(q, Mix(p, q, 1-alpha))
	}
	panic("ref: unknown divergence kind")
}

// CentralDiff is the central-difference gradient of f with respect to x,
// step h; f must read x afresh on each call.
func CentralDiff(x []float64, f func() float64, h float64) []float64 {
	g := make([]float64, len(x))
	for i := range x {
		o := x[i]
		x[i] = o + h
		a := f()
		x[i] = o - h
		b := f()
		x[i] = o
		g[i] = (a - b) / (2 * h)
	}
	return g
}

// RelErr is ‖got − want‖ / ‖want‖ (want's norm floored at 1e-30).
func RelErr(got, want []float64) float64 {
	var d, w float64
	for i := range want {
		d += (got[i] - want[i]) * (got[i] - want[i])
		w += want[i] * want[i]
	}
	return math.Sqrt(d) / math.Max(math.Sqrt(w), 1e-30)
}
