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

// LogSumExp is log Σ exp(x_i), computed stably in float64.
func LogSumExp(x []float64) float64 {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = math.Max(mx, v)
	}
	if math.IsInf(mx, -1) {
		return mx
	}
	var s float64
	for _, v := range x {
		s += math.Exp(v - mx)
	}
	return mx + math.Log(s)
}

// CrossEntropy is −log softmax(x)[t] = logsumexp(x) − x[t].
func CrossEntropy(x []float64, t int) float64 { return LogSumExp(x) - x[t] }

// DivergenceGradQ is g_i = ∂D(p, q)/∂q_i, the gradient of Divergence with
// respect to the student's probabilities (p fixed, q treated as free
// coordinates), differentiated term by term from each definition. Entries
// where the derivative is infinite (q_i = 0 with p_i > 0 for forward KL) are
// left to the caller: pass q > 0.
func DivergenceGradQ(kind kdrt.DivergenceKind, p, q []float64, beta, alpha float64) []float64 {
	g := make([]float64, len(q))
	switch kind {
	case kdrt.JSD:
		switch beta {
		case 0:
			return DivergenceGradQ(kdrt.ForwardKL, p, q, 0, 0)
		case 1:
			return DivergenceGradQ(kdrt.ReverseKL, p, q, 0, 0)
		}
	}
	for i := range q {
		switch kind {
		case kdrt.ForwardKL: // ∂/∂q p·log(p/q) = −p/q
			g[i] = -p[i] / q[i]
		case kdrt.ReverseKL: // ∂/∂q q·log(q/p) = log(q/p) + 1
			g[i] = math.Log(q[i]/p[i]) + 1
		case kdrt.JSD: // m = βp + (1−β)q; ∂m/∂q = 1−β
			m := beta*p[i] + (1-beta)*q[i]
			dm := 1 - beta
			var gi float64
			if p[i] > 0 {
				gi += beta * (-p[i] / m * dm) // β·∂/∂q p·log(p/m)
			}
			if q[i] > 0 {
				gi += (1 - beta) * (math.Log(q[i]/m) + 1 - q[i]/m*dm) // (1−β)·∂/∂q q·log(q/m)
			}
			g[i] = gi
		case kdrt.TVD: // ∂/∂q ½|p − q|
			switch {
			case q[i] > p[i]:
				g[i] = 0.5
			case q[i] < p[i]:
				g[i] = -0.5
			}
		case kdrt.SkewKL: // m = αp + (1−α)q: ∂/∂q p·log(p/m) = −p·(1−α)/m
			m := alpha*p[i] + (1-alpha)*q[i]
			if p[i] > 0 {
				g[i] = -p[i] * (1 - alpha) / m
			}
		case kdrt.SkewReverseKL: // m = (1−α)p + αq: ∂/∂q q·log(q/m) = log(q/m) + 1 − α·q/m
			m := (1-alpha)*p[i] + alpha*q[i]
			if q[i] > 0 {
				g[i] = math.Log(q[i]/m) + 1 - alpha*q[i]/m
			}
		default:
			panic("ref: unknown divergence kind")
		}
	}
	return g
}

// SoftmaxBackward is the gradient with respect to the logits s of a function
// of q = softmax(s/T), given g = its gradient with respect to q:
// (1/T)·q_j·(g_j − Σ_i q_i·g_i).
func SoftmaxBackward(q, g []float64, T float64) []float64 {
	var s float64
	for i := range q {
		s += q[i] * g[i]
	}
	ds := make([]float64, len(q))
	for j := range q {
		ds[j] = q[j] * (g[j] - s) / T
	}
	return ds
}

// MaxNormErr is max|got − want| / max|want| (want's norm floored at 1e-30):
// an error measured against the largest entry, as gradients are compared.
func MaxNormErr(got, want []float64) float64 {
	var d, w float64
	for i := range want {
		d = math.Max(d, math.Abs(got[i]-want[i]))
		w = math.Max(w, math.Abs(want[i]))
	}
	return d / math.Max(w, 1e-30)
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

// PolicyGradientLoss is the importance-weighted policy-gradient loss of
// on-policy distillation, straight from its definition:
// (scale/n)·Σ_t −exp(log π(y_t) − behaviour_t)·adv_t, with log π(y_t) =
// log softmax(logits[t])[targets[t]], over the rows whose target is ≥ 0
// (n of them).
func PolicyGradientLoss(logits [][]float64, targets []int, behaviour, adv []float64, scale float64) float64 {
	var s float64
	n := 0
	for t, y := range targets {
		if y < 0 {
			continue
		}
		n++
		lp := -CrossEntropy(logits[t], y)
		s -= math.Exp(lp-behaviour[t]) * adv[t]
	}
	return scale * s / float64(n)
}

// DiscountedReverseKL is the advantage of each position of a sequence in
// reverse-KL on-policy distillation: −Σ_{s ≥ t} γ^(s−t)·(student_s −
// teacher_s) over the positions s ≥ t that are kept, the exponent counting
// kept positions only (γ⁰ = 1, also at γ = 0). Positions not kept get 0.
func DiscountedReverseKL(student, teacher []float64, keep []bool, gamma float64) []float64 {
	out := make([]float64, len(student))
	for t := range student {
		if !keep[t] {
			continue
		}
		k := 0
		for s := t; s < len(student); s++ {
			if !keep[s] {
				continue
			}
			out[t] -= math.Pow(gamma, float64(k)) * (student[s] - teacher[s])
			k++
		}
	}
	return out
}

// GRPOLoss is Σ_t w_t·ℓ_t with ℓ_t = −min(r_t·A_t, clip(r_t, 1−epsLow,
// 1+epsHigh)·A_t) + β·c_t·(exp(ref_t − lp_t) − (ref_t − lp_t) − 1), lp_t
// the log-softmax of logits[t] at targets[t], r_t = exp(lp_t − old_t) and
// c_t = r_t when klRatio is set (else 1), over the rows whose target is
// ≥ 0: GRPO's loss written out term by term.
func GRPOLoss(logits [][]float64, targets []int, old, refLP, adv, w []float64, epsLow, epsHigh, beta float64, klRatio bool) float64 {
	lp := make([]float64, len(targets))
	for t, y := range targets {
		if y >= 0 {
			lp[t] = -CrossEntropy(logits[t], y)
		}
	}
	s, _ := GRPOLossLogProbs(lp, targets, old, refLP, adv, w, epsLow, epsHigh, beta, klRatio)
	return s
}

// GRPOLossLogProbs is GRPOLoss from the policy's log-probabilities lp_t of
// the targets instead of its logits, with the count of rows whose clipped
// term is the strict minimum (r_t·A_t > clip(r_t)·A_t: no gradient through
// r_t).
func GRPOLossLogProbs(lp []float64, targets []int, old, refLP, adv, w []float64, epsLow, epsHigh, beta float64, klRatio bool) (float64, int) {
	var s float64
	clipped := 0
	for t, y := range targets {
		if y < 0 {
			continue
		}
		r := math.Exp(lp[t] - old[t])
		rc := math.Min(math.Max(r, 1-epsLow), 1+epsHigh)
		l := -math.Min(r*adv[t], rc*adv[t])
		if r*adv[t] > rc*adv[t] {
			clipped++
		}
		if beta != 0 {
			x := refLP[t] - lp[t]
			c := 1.0
			if klRatio {
				c = r
			}
			l += beta * c * (math.Exp(x) - x - 1)
		}
		s += w[t] * l
	}
	return s, clipped
}
