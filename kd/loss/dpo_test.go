package loss_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/loss"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// ---- float64 reference, written straight from TRL's formulas ----

// dpoRefLogSigmoid is F.logsigmoid written the naive way; float64 keeps it
// finite for |x| < ~700, which covers every input the tests give it.
func dpoRefLogSigmoid(x float64) float64 { return math.Log(1 / (1 + math.Exp(-x))) }

// dpoRefPairLoss is one pair's loss from TRL's dpo_loss (sigmoid, hinge, ipo,
// robust) and CPOTrainer.cpo_loss (simpo). pc, pr, rc, rr are the
// log-probabilities as the loss sees them (averaged already for ipo/simpo;
// rc = rr = 0 for simpo).
func dpoRefPairLoss(kind string, beta, eps, gamma, pc, pr, rc, rr float64) float64 {
	logits := (pc - pr) - (rc - rr)
	switch kind {
	case "sigmoid":
		return -dpoRefLogSigmoid(beta*logits)*(1-eps) - dpoRefLogSigmoid(-beta*logits)*eps
	case "robust":
		return (-dpoRefLogSigmoid(beta*logits)*(1-eps) + dpoRefLogSigmoid(-beta*logits)*eps) / (1 - 2*eps)
	case "hinge":
		return math.Max(0, 1-beta*logits)
	case "ipo":
		return (logits - 1/(2*beta)) * (logits - 1/(2*beta))
	case "simpo":
		logits -= gamma / beta
		return -dpoRefLogSigmoid(beta*logits)*(1-eps) - dpoRefLogSigmoid(-beta*logits)*eps
	}
	panic(kind)
}

type dpoRefCase struct {
	kind             string
	beta, eps, gamma float64
}

func (c dpoRefCase) averaged() bool  { return c.kind == "ipo" || c.kind == "simpo" }
func (c dpoRefCase) reference() bool { return c.kind != "simpo" }

func (c dpoRefCase) config(t *testing.T) loss.DPOConfig {
	t.Helper()
	k, err := loss.ParseDPOKind(c.kind)
	if err != nil {
		t.Fatal(err)
	}
	return loss.DPOConfig{Kind: k, Beta: c.beta, LabelSmoothing: c.eps, Gamma: c.gamma}
}

type dpoRefMetrics struct {
	loss, chosen, rejected, margin, acc float64
}

// dpoRefBatch is the mean loss and the metrics from per-pair sums.
func dpoRefBatch(c dpoRefCase, pc, pr, rc, rr []float64, tc, tr []int) dpoRefMetrics {
	var m dpoRefMetrics
	for i := range pc {
		a, b, x, y := pc[i], pr[i], 0.0, 0.0
		if c.reference() {
			x, y = rc[i], rr[i]
		}
		if c.averaged() {
			a, b, x, y = a/float64(tc[i]), b/float64(tr[i]), x/float64(tc[i]), y/float64(tr[i])
		}
		m.loss += dpoRefPairLoss(c.kind, c.beta, c.eps, c.gamma, a, b, x, y)
		cr, rj := c.beta*(a-x), c.beta*(b-y)
		m.chosen += cr
		m.rejected += rj
		m.margin += cr - rj
		if cr > rj {
			m.acc++
		}
	}
	n := float64(len(pc))
	return dpoRefMetrics{m.loss / n, m.chosen / n, m.rejected / n, m.margin / n, m.acc / n}
}

func dpoAllCases() []dpoRefCase {
	return []dpoRefCase{
		{"sigmoid", 0.5, 0, 0}, {"sigmoid", 0.5, 0.1, 0},
		{"robust", 0.5, 0, 0}, {"robust", 0.5, 0.1, 0},
		{"hinge", 0.5, 0, 0}, // β·h spans both sides of the hinge in the fused test
		{"ipo", 0.5, 0, 0},
		{"simpo", 2, 0, 0.5}, {"simpo", 2, 0.1, 0.5},
	}
}

func dpoClose(a, b, tol float64) bool {
	return math.Abs(a-b) <= tol*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

// ---- DPOLoss: the float64 math on per-pair sums ----

func TestDPOLossMatchesTRLFormulas(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const P = 7
	for _, c := range dpoAllCases() {
		t.Run(fmt.Sprintf("%s/eps=%g", c.kind, c.eps), func(t *testing.T) {
			cfg := c.config(t)
			pol := &loss.SequenceLogProbs{Chosen: make([]float64, P), Rejected: make([]float64, P),
				ChosenTokens: make([]int, P), RejectedTokens: make([]int, P)}
			ref := &loss.SequenceLogProbs{Chosen: make([]float64, P), Rejected: make([]float64, P)}
			for i := range P {
				pol.ChosenTokens[i], pol.RejectedTokens[i] = 1+rng.IntN(9), 1+rng.IntN(9)
				pol.Chosen[i] = -float64(pol.ChosenTokens[i]) * (0.5 + 3*rng.Float64())
				pol.Rejected[i] = -float64(pol.RejectedTokens[i]) * (0.5 + 3*rng.Float64())
				ref.Chosen[i] = pol.Chosen[i] + rng.NormFloat64()
				ref.Rejected[i] = pol.Rejected[i] + rng.NormFloat64()
			}
			refArg := ref
			if !c.reference() {
				refArg = nil
			}
			got, dc, dr, m, err := loss.DPOLoss(pol, refArg, cfg)
			if err != nil {
				t.Fatal(err)
			}
			want := dpoRefBatch(c, pol.Chosen, pol.Rejected, ref.Chosen, ref.Rejected, pol.ChosenTokens, pol.RejectedTokens)
			if !dpoClose(got, want.loss, 1e-12) || !dpoClose(m.Loss, want.loss, 1e-12) {
				t.Errorf("loss %.15g (metrics %.15g), want %.15g", got, m.Loss, want.loss)
			}
			if !dpoClose(m.ChosenReward, want.chosen, 1e-12) || !dpoClose(m.RejectedReward, want.rejected, 1e-12) ||
				!dpoClose(m.Margin, want.margin, 1e-12) || m.Accuracy != want.acc || m.Pairs != P {
				t.Errorf("metrics %+v, want %+v", m, want)
			}
			// Central differences of the reference with respect to each
			// policy sum.
			const h = 1e-6
			f := func(i int, chosen bool, d float64) float64 {
				c2, r2 := append([]float64(nil), pol.Chosen...), append([]float64(nil), pol.Rejected...)
				if chosen {
					c2[i] += d
				} else {
					r2[i] += d
				}
				return dpoRefBatch(c, c2, r2, ref.Chosen, ref.Rejected, pol.ChosenTokens, pol.RejectedTokens).loss
			}
			for i := range P {
				fdc := (f(i, true, h) - f(i, true, -h)) / (2 * h)
				fdr := (f(i, false, h) - f(i, false, -h)) / (2 * h)
				if math.Abs(dc[i]-fdc) > 1e-7 || math.Abs(dr[i]-fdr) > 1e-7 {
					t.Errorf("pair %d: gradient (%.10g, %.10g), finite differences (%.10g, %.10g)", i, dc[i], dr[i], fdc, fdr)
				}
			}
		})
	}
}

// TestDPOLossExtremeLogits drives β·h to ±200 (where float32's naive
// log σ overflows; float64's reference still works) and ±5000 (where the
// float64 naive form overflows too): the loss and gradient stay finite and
// follow the asymptotes.
func TestDPOLossExtremeLogits(t *testing.T) {
	for _, c := range dpoAllCases() {
		for _, hv := range []float64{200, -200, 5000, -5000} {
			t.Run(fmt.Sprintf("%s/eps=%g/h=%g", c.kind, c.eps, hv), func(t *testing.T) {
				cfg := c.config(t)
				cfg.Beta = 1
				// One token per response so that averaging is the identity,
				// and h = hv exactly.
				pol := &loss.SequenceLogProbs{Chosen: []float64{-1}, Rejected: []float64{-1 - hv},
					ChosenTokens: []int{1}, RejectedTokens: []int{1}}
				var ref *loss.SequenceLogProbs
				if c.reference() {
					ref = &loss.SequenceLogProbs{Chosen: []float64{-3}, Rejected: []float64{-3}}
				}
				got, dc, dr, _, err := loss.DPOLoss(pol, ref, cfg)
				if err != nil {
					t.Fatal(err)
				}
				for _, v := range []float64{got, dc[0], dr[0]} {
					if math.IsNaN(v) || math.IsInf(v, 0) {
						t.Fatalf("not finite: loss %g, gradient (%g, %g)", got, dc[0], dr[0])
					}
				}
				if dc[0] != -dr[0] {
					t.Errorf("with one token per response dChosen %g should be −dRejected %g", dc[0], dr[0])
				}
				z := hv - c.gamma // β = 1
				var want, wantGrad float64
				switch c.kind {
				case "sigmoid", "simpo":
					if math.Abs(z) < 700 {
						want = dpoRefPairLoss(c.kind, 1, c.eps, c.gamma, -1, -1-hv, 0, 0)
					} else if z > 0 { // −log σ(z) → 0, −log σ(−z) → z
						want = c.eps * z
					} else {
						want = -(1 - c.eps) * z
					}
					if z > 0 {
						wantGrad = c.eps
					} else {
						wantGrad = -(1 - c.eps)
					}
				case "robust":
					if z > 0 { // (0 + ε·(−z)) / (1−2ε)
						want = -c.eps * z / (1 - 2*c.eps)
					} else {
						want = -(1 - c.eps) * z / (1 - 2*c.eps)
					}
					wantGrad = -map[bool]float64{true: c.eps, false: 1 - c.eps}[z > 0] / (1 - 2*c.eps)
				case "hinge":
					want = math.Max(0, 1-z)
					if z < 1 {
						wantGrad = -1
					}
				case "ipo":
					want = (hv - 0.5) * (hv - 0.5)
					wantGrad = 2 * (hv - 0.5)
				}
				if !dpoClose(got, want, 1e-9) {
					t.Errorf("loss %.15g, want %.15g", got, want)
				}
				if !dpoClose(dc[0], wantGrad, 1e-9) {
					t.Errorf("dChosen %.15g, want %.15g", dc[0], wantGrad)
				}
			})
		}
	}
}

// TestDPOMetricsHandBuilt checks rewards, margins and accuracy on pairs whose
// answers are worked out by hand.
func TestDPOMetricsHandBuilt(t *testing.T) {
	// β = 0.5. Pair 0: rewards 0.5 vs −0.5 (right). Pair 1: 0 vs 1 (wrong).
	// Pair 2: −0.5 vs −0.5 (a tie: wrong). Pair 3: 1 vs 0 (right).
	pol := &loss.SequenceLogProbs{Chosen: []float64{-10, -8, -5, -3}, Rejected: []float64{-12, -6, -7, -9}}
	ref := &loss.SequenceLogProbs{Chosen: []float64{-11, -8, -4, -5}, Rejected: []float64{-11, -8, -6, -9}}
	l, _, _, m, err := loss.DPOLoss(pol, ref, loss.DPOConfig{Kind: loss.DPOSigmoid, Beta: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	want := loss.DPOMetrics{Pairs: 4, ChosenReward: 0.25, RejectedReward: 0, Margin: 0.25, Accuracy: 0.5,
		ChosenLogP: -6.5, RejectedLogP: -8.5}
	// Per-pair margins β·h are 1, −1, 0, 1: loss = mean of softplus(−margin).
	want.Loss = (2*math.Log1p(math.Exp(-1)) + math.Log1p(math.Exp(1)) + math.Ln2) / 4
	if !dpoMetricsEqual(m, want) || l != m.Loss {
		t.Errorf("metrics %+v, want %+v", m, want)
	}

	// SimPO, β = 2: rewards are 2·(average log-prob). Pair 0: −12/4 = −3 →
	// −6 against −4/1 → −8 (right); pair 1: −2/2 → −2 against −3/3 → −2 (tie).
	pol = &loss.SequenceLogProbs{Chosen: []float64{-12, -2}, Rejected: []float64{-4, -3},
		ChosenTokens: []int{4, 2}, RejectedTokens: []int{1, 3}}
	_, _, _, m, err = loss.DPOLoss(pol, nil, loss.DPOConfig{Kind: loss.SimPO, Beta: 2, Gamma: 1})
	if err != nil {
		t.Fatal(err)
	}
	want = loss.DPOMetrics{Pairs: 2, ChosenReward: -4, RejectedReward: -5, Margin: 1, Accuracy: 0.5,
		ChosenLogP: -2, RejectedLogP: -2.5}
	// z = β·h − γ: 2·1 − 1 = 1 and 0 − 1 = −1.
	want.Loss = (math.Log1p(math.Exp(-1)) + math.Log1p(math.Exp(1))) / 2
	if !dpoMetricsEqual(m, want) {
		t.Errorf("simpo metrics %+v, want %+v", m, want)
	}

	// IPO rewards use the averaged log-probs of both models: pair 0 has
	// chosen (−6/3) − (−9/3) = 1 → 0.5, rejected (−4/2) − (−2/2) = −1 → −0.5.
	pol = &loss.SequenceLogProbs{Chosen: []float64{-6}, Rejected: []float64{-4}, ChosenTokens: []int{3}, RejectedTokens: []int{2}}
	ref = &loss.SequenceLogProbs{Chosen: []float64{-9}, Rejected: []float64{-2}}
	_, _, _, m, err = loss.DPOLoss(pol, ref, loss.DPOConfig{Kind: loss.DPOIPO, Beta: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	// h = 2, target 1/(2β) = 1: loss 1.
	want = loss.DPOMetrics{Pairs: 1, Loss: 1, ChosenReward: 0.5, RejectedReward: -0.5, Margin: 1, Accuracy: 1,
		ChosenLogP: -2, RejectedLogP: -2}
	if !dpoMetricsEqual(m, want) {
		t.Errorf("ipo metrics %+v, want %+v", m, want)
	}
}

func dpoMetricsEqual(a, b loss.DPOMetrics) bool {
	return a.Pairs == b.Pairs && dpoClose(a.Loss, b.Loss, 1e-14) && dpoClose(a.ChosenReward, b.ChosenReward, 1e-14) &&
		dpoClose(a.RejectedReward, b.RejectedReward, 1e-14) && dpoClose(a.Margin, b.Margin, 1e-14) &&
		a.Accuracy == b.Accuracy && dpoClose(a.ChosenLogP, b.ChosenLogP, 1e-14) && dpoClose(a.RejectedLogP, b.RejectedLogP, 1e-14)
}

func TestDPOKindNames(t *testing.T) {
	for _, k := range []loss.DPOKind{loss.DPOSigmoid, loss.DPOHinge, loss.DPOIPO, loss.DPORobust, loss.SimPO} {
		got, err := loss.ParseDPOKind(k.String())
		if err != nil || got != k {
			t.Errorf("ParseDPOKind(%q) = %v, %v", k.String(), got, err)
		}
	}
	if _, err := loss.ParseDPOKind("kto_pair"); err == nil {
		t.Error("ParseDPOKind accepted kto_pair")
	}
}

func TestDPOLossErrors(t *testing.T) {
	pol := func() *loss.SequenceLogProbs {
		return &loss.SequenceLogProbs{Chosen: []float64{-1, -2}, Rejected: []float64{-3, -4},
			ChosenTokens: []int{2, 3}, RejectedTokens: []int{1, 2}}
	}
	ref := func() *loss.SequenceLogProbs {
		return &loss.SequenceLogProbs{Chosen: []float64{-1, -2}, Rejected: []float64{-3, -4}}
	}
	sig := loss.DPOConfig{Kind: loss.DPOSigmoid, Beta: 0.1}
	cases := []struct {
		name     string
		pol, ref *loss.SequenceLogProbs
		cfg      loss.DPOConfig
		want     string
	}{
		{"beta zero", pol(), ref(), loss.DPOConfig{Kind: loss.DPOSigmoid}, "beta"},
		{"beta negative", pol(), ref(), loss.DPOConfig{Kind: loss.DPOSigmoid, Beta: -1}, "beta"},
		{"beta NaN", pol(), ref(), loss.DPOConfig{Kind: loss.DPOSigmoid, Beta: math.NaN()}, "beta"},
		{"smoothing 0.5", pol(), ref(), loss.DPOConfig{Kind: loss.DPORobust, Beta: 0.1, LabelSmoothing: 0.5}, "label smoothing"},
		{"smoothing negative", pol(), ref(), loss.DPOConfig{Kind: loss.DPOSigmoid, Beta: 0.1, LabelSmoothing: -0.1}, "label smoothing"},
		{"smoothing on ipo", pol(), ref(), loss.DPOConfig{Kind: loss.DPOIPO, Beta: 0.1, LabelSmoothing: 0.1}, "label smoothing"},
		{"smoothing on hinge", pol(), ref(), loss.DPOConfig{Kind: loss.DPOHinge, Beta: 0.1, LabelSmoothing: 0.1}, "label smoothing"},
		{"gamma infinite", pol(), nil, loss.DPOConfig{Kind: loss.SimPO, Beta: 0.1, Gamma: math.Inf(1)}, "gamma"},
		{"gamma on sigmoid", pol(), ref(), loss.DPOConfig{Kind: loss.DPOSigmoid, Beta: 0.1, Gamma: 1}, "gamma"},
		{"unknown kind", pol(), ref(), loss.DPOConfig{Kind: 9, Beta: 0.1}, "unknown"},
		{"reference missing", pol(), nil, sig, "reference"},
		{"reference for simpo", pol(), ref(), loss.DPOConfig{Kind: loss.SimPO, Beta: 0.1}, "reference-free"},
		{"no pairs", &loss.SequenceLogProbs{}, &loss.SequenceLogProbs{}, sig, "no pairs"},
		{"policy lengths", func() *loss.SequenceLogProbs { p := pol(); p.Rejected = p.Rejected[:1]; return p }(), ref(), sig, "want 2 pairs"},
		{"reference lengths", pol(), func() *loss.SequenceLogProbs { r := ref(); r.Chosen = append(r.Chosen, 0); return r }(), sig, "want 2 pairs"},
		{"token lengths", func() *loss.SequenceLogProbs { p := pol(); p.ChosenTokens = p.ChosenTokens[:1]; return p }(), ref(), sig, "token counts"},
		{"no rejected tokens", func() *loss.SequenceLogProbs { p := pol(); p.RejectedTokens[1] = 0; return p }(), ref(), sig, "pair 1 has no rejected"},
		{"no chosen tokens", func() *loss.SequenceLogProbs { p := pol(); p.ChosenTokens[0] = 0; return p }(), nil, loss.DPOConfig{Kind: loss.SimPO, Beta: 1}, "pair 0 has no chosen"},
		{"averaged without tokens", func() *loss.SequenceLogProbs { p := pol(); p.ChosenTokens = nil; return p }(), ref(), loss.DPOConfig{Kind: loss.DPOIPO, Beta: 1}, "token counts"},
		{"token counts differ", pol(), func() *loss.SequenceLogProbs { r := ref(); r.ChosenTokens = []int{2, 4}; return r }(), sig, "pair 1"},
		{"NaN log-prob", func() *loss.SequenceLogProbs { p := pol(); p.Chosen[1] = math.NaN(); return p }(), ref(), sig, "not finite"},
	}
	for _, c := range cases {
		_, _, _, _, err := loss.DPOLoss(c.pol, c.ref, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
	}
	// Summed kinds accept sums without token counts.
	if _, _, _, _, err := loss.DPOLoss(&loss.SequenceLogProbs{Chosen: []float64{-1}, Rejected: []float64{-2}},
		&loss.SequenceLogProbs{Chosen: []float64{-1}, Rejected: []float64{-2}}, sig); err != nil {
		t.Errorf("sums without token counts: %v", err)
	}
}

// ---- the fused, chunked DPO on the CPU backend ----

// dpoBatch is a small batch of 3 pairs of different lengths, the sequences
// interleaved out of order, prompt rows masked and one padding row.
type dpoBatch struct {
	N, C, V, P     int
	targets        []int32
	layout         loss.PairLayout
	hidden, weight []float64 // policy [N, C], [V, C]
	refH, refW     []float64 // reference model
}

func newDPOBatch(rng *rand.Rand) *dpoBatch {
	b := &dpoBatch{C: 8, V: 30, P: 3}
	type seq struct {
		pair           int
		chosen         bool
		prompt, answer int
	}
	seqs := []seq{
		{0, true, 2, 3}, {1, false, 1, 1}, {2, true, 2, 1}, {0, false, 2, 2},
		{-1, false, 1, 0}, // padding
		{1, true, 1, 4}, {2, false, 2, 3},
	}
	b.layout.Pairs = b.P
	for _, s := range seqs {
		for i := range s.prompt + s.answer {
			tg := int32(kdrt.IgnoreIndex)
			if i >= s.prompt {
				tg = int32(rng.IntN(b.V))
			}
			b.targets = append(b.targets, tg)
			b.layout.Pair = append(b.layout.Pair, s.pair)
			b.layout.Chosen = append(b.layout.Chosen, s.chosen)
		}
	}
	b.N = len(b.targets)
	fill := func(n int, sd float64) []float64 {
		x := make([]float64, n)
		for i := range x {
			x[i] = sd * rng.NormFloat64()
		}
		return x
	}
	b.hidden, b.weight = fill(b.N*b.C, 1), fill(b.V*b.C, 0.5)
	b.refH, b.refW = fill(b.N*b.C, 1), fill(b.V*b.C, 0.5)
	return b
}

// sums is the float64 first pass: logits, log-softmax, per-sequence sums.
func (b *dpoBatch) sums(hidden, weight []float64) (c, r []float64, tc, tr []int) {
	c, r, tc, tr = make([]float64, b.P), make([]float64, b.P), make([]int, b.P), make([]int, b.P)
	logits := make([]float64, b.V)
	for n := range b.N {
		if b.targets[n] == kdrt.IgnoreIndex {
			continue
		}
		mx := math.Inf(-1)
		for v := range b.V {
			s := 0.0
			for k := range b.C {
				s += hidden[n*b.C+k] * weight[v*b.C+k]
			}
			logits[v] = s
			mx = math.Max(mx, s)
		}
		z := 0.0
		for _, l := range logits {
			z += math.Exp(l - mx)
		}
		lp := logits[b.targets[n]] - mx - math.Log(z)
		p := b.layout.Pair[n]
		if b.layout.Chosen[n] {
			c[p] += lp
			tc[p]++
		} else {
			r[p] += lp
			tr[p]++
		}
	}
	return
}

func (b *dpoBatch) refLoss(c dpoRefCase, hidden, weight []float64) dpoRefMetrics {
	pc, pr, tc, tr := b.sums(hidden, weight)
	rc, rr, _, _ := b.sums(b.refH, b.refW)
	return dpoRefBatch(c, pc, pr, rc, rr, tc, tr)
}

func dpoUpload(t *testing.T, be kdrt.Backend, name string, x []float64, shape ...int) *kdrt.Tensor {
	t.Helper()
	tt, err := be.Alloc(name, kdrt.F32, shape...)
	if err != nil {
		t.Fatal(err)
	}
	f := make([]float32, len(x))
	for i, v := range x {
		f[i] = float32(v)
	}
	if err := be.Upload(tt, f); err != nil {
		t.Fatal(err)
	}
	return tt
}

func dpoDownload(t *testing.T, be kdrt.Backend, x *kdrt.Tensor) []float64 {
	t.Helper()
	f := make([]float32, x.Numel())
	if err := be.Download(x, f); err != nil {
		t.Fatal(err)
	}
	out := make([]float64, len(f))
	for i, v := range f {
		out[i] = float64(v)
	}
	return out
}

// dpoRelErr is max|got − want| / max|want|.
func dpoRelErr(got, want []float64) float64 {
	var d, s float64
	for i := range want {
		d = math.Max(d, math.Abs(got[i]-want[i]))
		s = math.Max(s, math.Abs(want[i]))
	}
	return d / s
}

func TestDPOFusedMatchesFloat64Reference(t *testing.T) {
	be := cpu.New()
	rng := rand.New(rand.NewPCG(7, 11))
	b := newDPOBatch(rng)
	if b.N%7 == 0 {
		t.Fatalf("pick a batch whose row count %d some chunk size does not divide", b.N)
	}
	const scale = 0.7
	hidden := dpoUpload(t, be, "hidden", b.hidden, b.N, b.C)
	W := dpoUpload(t, be, "lm_head", b.weight, b.V, b.C)
	refHidden := dpoUpload(t, be, "ref.hidden", b.refH, b.N, b.C)
	refW := dpoUpload(t, be, "ref.lm_head", b.refW, b.V, b.C)
	const prefill = 0.25 // gradients accumulate: start from a nonzero buffer

	for _, c := range dpoAllCases() {
		t.Run(fmt.Sprintf("%s/eps=%g", c.kind, c.eps), func(t *testing.T) {
			cfg := c.config(t)
			want := b.refLoss(c, b.hidden, b.weight)
			if c.kind == "hinge" { // keep finite differences off the kink
				pc, pr, _, _ := b.sums(b.hidden, b.weight)
				rc, rr, _, _ := b.sums(b.refH, b.refW)
				for i := range b.P {
					if z := c.beta * ((pc[i] - pr[i]) - (rc[i] - rr[i])); math.Abs(1-z) < 1e-2 {
						t.Fatalf("pair %d sits at the hinge (β·h = %g)", i, z)
					}
				}
			}
			// Finite differences of the float64 reference.
			const h = 1e-6
			fd := func(x []float64) []float64 {
				g := make([]float64, len(x))
				for i := range x {
					x0 := x[i]
					x[i] = x0 + h
					lp := b.refLoss(c, b.hidden, b.weight).loss
					x[i] = x0 - h
					lm := b.refLoss(c, b.hidden, b.weight).loss
					x[i] = x0
					g[i] = scale * (lp - lm) / (2 * h)
				}
				return g
			}
			wantDH, wantDW := fd(b.hidden), fd(b.weight)

			chunks := []loss.Options{{}, {MemoryBudget: 3 * 8 * int64(b.V)}}
			for r := 1; r <= b.N+3; r++ {
				chunks = append(chunks, loss.Options{ChunkRows: r})
			}
			var worstH, worstW float64
			for _, opt := range chunks {
				var ref *loss.SequenceLogProbs
				if c.reference() {
					var err error
					if ref, err = loss.SequenceSums(be, refHidden, loss.Head{W: refW}, b.targets, b.layout, opt); err != nil {
						t.Fatal(err)
					}
				}
				dH := dpoUpload(t, be, "dhidden", dpoConst(b.N*b.C, prefill), b.N, b.C)
				G := dpoUpload(t, be, "lm_head.grad", dpoConst(b.V*b.C, prefill), b.V, b.C)
				res, err := loss.DPO(be, hidden, loss.Head{W: W, G: G}, dH, b.targets, b.layout, ref, cfg, scale, opt)
				if err != nil {
					t.Fatalf("%+v: %v", opt, err)
				}
				m := res.Metrics
				const tol = 2e-5
				if !dpoClose(res.Loss, scale*want.loss, tol) || !dpoClose(m.Loss, want.loss, tol) ||
					!dpoClose(m.ChosenReward, want.chosen, tol) || !dpoClose(m.RejectedReward, want.rejected, tol) ||
					!dpoClose(m.Margin, want.margin, tol) || m.Accuracy != want.acc || m.Pairs != b.P {
					t.Errorf("%+v: loss %.8g, metrics %+v; want loss %.8g, %+v", opt, res.Loss, m, scale*want.loss, want)
				}
				gotDH, gotDW := dpoDownload(t, be, dH), dpoDownload(t, be, G)
				for i := range gotDH {
					gotDH[i] -= prefill
				}
				for i := range gotDW {
					gotDW[i] -= prefill
				}
				eH, eW := dpoRelErr(gotDH, wantDH), dpoRelErr(gotDW, wantDW)
				if !(eH < 1e-3) {
					t.Errorf("%+v: dHidden relative error %.3g", opt, eH)
				}
				if !(eW < 1e-3) {
					t.Errorf("%+v: lm_head gradient relative error %.3g", opt, eW)
				}
				worstH, worstW = math.Max(worstH, eH), math.Max(worstW, eW)
				// Without gradient buffers: the same loss, one pass.
				res2, err := loss.DPO(be, hidden, loss.Head{W: W}, nil, b.targets, b.layout, ref, cfg, scale, opt)
				if err != nil || res2.Loss != res.Loss {
					t.Errorf("%+v: loss without gradient %g (%v), with %g", opt, res2.Loss, err, res.Loss)
				}
			}
			t.Logf("loss %.6g, accuracy %g; worst relative gradient error over %d chunkings: hidden %.2g, lm_head %.2g",
				want.loss, want.acc, len(chunks), worstH, worstW)
		})
	}
}

func dpoConst(n int, v float64) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = v
	}
	return x
}

func TestDPOFusedErrors(t *testing.T) {
	be := cpu.New()
	rng := rand.New(rand.NewPCG(3, 4))
	b := newDPOBatch(rng)
	hidden := dpoUpload(t, be, "hidden", b.hidden, b.N, b.C)
	W := dpoUpload(t, be, "lm_head", b.weight, b.V, b.C)
	head := loss.Head{W: W}
	sig := loss.DPOConfig{Kind: loss.DPOSigmoid, Beta: 0.1}
	ref, err := loss.SequenceSums(be, hidden, head, b.targets, b.layout, loss.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clone := func() ([]int32, loss.PairLayout) {
		return append([]int32(nil), b.targets...), loss.PairLayout{Pairs: b.P,
			Pair: append([]int(nil), b.layout.Pair...), Chosen: append([]bool(nil), b.layout.Chosen...)}
	}
	check := func(name string, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one mentioning %q", name, err, want)
		}
	}

	// Masking pair 2's rejected response leaves it without tokens.
	tg, lay := clone()
	for n := range tg {
		if lay.Pair[n] == 2 && !lay.Chosen[n] {
			tg[n] = kdrt.IgnoreIndex
		}
	}
	_, err = loss.DPO(be, hidden, head, nil, tg, lay, ref, sig, 1, loss.Options{})
	check("empty rejected", err, "pair 2 has no rejected response tokens")
	_, err = loss.SequenceSums(be, hidden, head, tg, lay, loss.Options{})
	check("empty rejected (SequenceSums)", err, "pair 2 has no rejected response tokens")

	tg, lay = clone()
	_, err = loss.DPO(be, hidden, head, nil, tg[:len(tg)-1], lay, ref, sig, 1, loss.Options{})
	check("short targets", err, "targets")
	lay.Chosen = lay.Chosen[1:]
	_, err = loss.DPO(be, hidden, head, nil, tg, lay, ref, sig, 1, loss.Options{})
	check("short layout", err, "layout")

	tg, lay = clone()
	lay.Pair[len(lay.Pair)-1] = 3
	_, err = loss.DPO(be, hidden, head, nil, tg, lay, ref, sig, 1, loss.Options{})
	check("pair out of range", err, "outside [0, 3)")

	tg, lay = clone()
	for n := range lay.Pair {
		if tg[n] != kdrt.IgnoreIndex {
			lay.Pair[n] = -1
			break
		}
	}
	_, err = loss.DPO(be, hidden, head, nil, tg, lay, ref, sig, 1, loss.Options{})
	check("target outside every pair", err, "belongs to no pair")

	tg, lay = clone()
	_, err = loss.DPO(be, hidden, head, nil, tg, lay, nil, sig, 1, loss.Options{})
	check("reference missing", err, "reference")
	_, err = loss.DPO(be, hidden, head, nil, tg, lay, &loss.SequenceLogProbs{Chosen: []float64{-1}, Rejected: []float64{-1}}, sig, 1, loss.Options{})
	check("reference for other pairs", err, "1 pairs")
	_, err = loss.DPO(be, hidden, head, nil, tg, lay, ref, loss.DPOConfig{Kind: loss.DPOSigmoid}, 1, loss.Options{})
	check("beta zero", err, "beta")
	_, err = loss.DPO(be, hidden, head, nil, tg, lay, ref, sig, math.NaN(), loss.Options{})
	check("scale NaN", err, "scale")
}

func TestConcatPairLayout(t *testing.T) {
	l := loss.ConcatPairLayout(2, 3)
	wantPair := []int{0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1}
	wantChosen := []bool{true, true, true, true, true, true, false, false, false, false, false, false}
	if l.Pairs != 2 || fmt.Sprint(l.Pair) != fmt.Sprint(wantPair) || fmt.Sprint(l.Chosen) != fmt.Sprint(wantChosen) {
		t.Errorf("ConcatPairLayout(2, 3) = %+v", l)
	}
}
