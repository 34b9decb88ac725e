package loss_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/internal/ref"
	"github.com/kdnative/kdnative/kd/loss"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// pgProblem is a policy-gradient case: hidden states and an lm_head, the
// sampled targets (some masked), the sampling policy's log-probabilities
// (another model's, so the importance weights are not 1) and advantages.
type pgProblem struct {
	N, C, V   int
	h, w      []float64
	targets   []int32
	behaviour []float64
	adv       []float64
}

func newPGProblem(seed uint64, N, C, V int) *pgProblem {
	r := rand.New(rand.NewPCG(seed, 99))
	g := func(n int, std float64) []float64 {
		x := make([]float64, n)
		for i := range x {
			x[i] = r.NormFloat64() * std
		}
		return x
	}
	p := &pgProblem{N: N, C: C, V: V, h: g(N*C, 1), w: g(V*C, 0.7)}
	logits := logits64(p.h, p.w, N, C, V)
	for n := range N {
		if n%4 == 3 { // a prompt or padding position
			p.targets = append(p.targets, kdrt.IgnoreIndex)
			p.behaviour = append(p.behaviour, 0)
			p.adv = append(p.adv, 0)
			continue
		}
		y := r.IntN(V)
		p.targets = append(p.targets, int32(y))
		// the sampling policy: the student's logits moved a little
		row := make([]float64, V)
		for v := range V {
			row[v] = logits[n*V+v] + 0.3*r.NormFloat64()
		}
		p.behaviour = append(p.behaviour, -ref.CrossEntropy(row, y))
		p.adv = append(p.adv, r.NormFloat64())
	}
	return p
}

// refLoss is the float64 loss at the problem's current h and w.
func (p *pgProblem) refLoss(scale float64) float64 {
	s := logits64(p.h, p.w, p.N, p.C, p.V)
	rows := make([][]float64, p.N)
	tg := make([]int, p.N)
	for n := range p.N {
		rows[n] = s[n*p.V : (n+1)*p.V]
		tg[n] = int(p.targets[n])
		if p.targets[n] == kdrt.IgnoreIndex {
			tg[n] = -1
		}
	}
	return ref.PolicyGradientLoss(rows, tg, p.behaviour, p.adv, scale)
}

// TestPolicyGradientMatchesReference: the fused policy-gradient loss, each
// row's log-probability and the gradients to the hidden states and the
// lm_head match the float64 definition and its central differences, for
// chunks of 1 row, a few rows and all rows, with and without a scale.
func TestPolicyGradientMatchesReference(t *testing.T) {
	for _, chunk := range []int{1, 3, 0} {
		for _, scale := range []float64{1, 0.3} {
			p := newPGProblem(uint64(11+chunk), 10, 6, 13)
			be := cpu.New()
			h := tensor(t, be, "h", p.h, p.N, p.C)
			w := tensor(t, be, "w", p.w, p.V, p.C)
			dh := zeros(t, be, "dh", p.N, p.C)
			gw := zeros(t, be, "gw", p.V, p.C)
			res, err := loss.PolicyGradient(be, h, loss.Head{W: w, G: gw}, dh, p.targets, p.behaviour, p.adv, scale, loss.Options{ChunkRows: chunk})
			if err != nil {
				t.Fatal(err)
			}
			want := p.refLoss(scale)
			if d := math.Abs(res.Loss-want) / math.Abs(want); d > 1e-5 {
				t.Fatalf("chunk %d scale %g: loss %.8g, reference %.8g (rel %.2g)", chunk, scale, res.Loss, want, d)
			}
			if res.Tokens != 8 {
				t.Fatalf("tokens %d, want 8", res.Tokens)
			}
			logits := logits64(p.h, p.w, p.N, p.C, p.V)
			var ratios float64
			for n, y := range p.targets {
				if y == kdrt.IgnoreIndex {
					if res.LogProbs[n] != 0 {
						t.Fatalf("masked row %d has log-probability %g", n, res.LogProbs[n])
					}
					continue
				}
				lp := -ref.CrossEntropy(logits[n*p.V:(n+1)*p.V], int(y))
				if math.Abs(res.LogProbs[n]-lp) > 1e-5 {
					t.Fatalf("row %d: log-probability %g, reference %g", n, res.LogProbs[n], lp)
				}
				ratios += math.Exp(lp - p.behaviour[n])
			}
			if math.Abs(res.MeanRatio-ratios/8) > 1e-5 || math.Abs(res.MeanRatio-1) < 1e-3 {
				t.Fatalf("mean ratio %g, reference %g (and it must not be 1 here)", res.MeanRatio, ratios/8)
			}
			gh := fd(p.h, func() float64 { return p.refLoss(scale) })
			gwRef := fd(p.w, func() float64 { return p.refLoss(scale) })
			if e := ref.MaxNormErr(to64(cpu.Float32s(dh)), gh); e > 1e-4 {
				t.Fatalf("chunk %d: hidden gradient off by %.2g of its max-norm", chunk, e)
			}
			if e := ref.MaxNormErr(to64(cpu.Float32s(gw)), gwRef); e > 1e-4 {
				t.Fatalf("chunk %d: lm_head gradient off by %.2g of its max-norm", chunk, e)
			}
		}
	}
}

// TestPolicyGradientOnPolicyIsReinforce: when the behaviour log-probabilities
// are the student's own (r = 1), the loss is −mean(A) and its gradient
// −(1/n)·Σ A_t·∇log π(y_t), the REINFORCE estimator, checked by finite
// differences of that surrogate.
func TestPolicyGradientOnPolicyIsReinforce(t *testing.T) {
	p := newPGProblem(5, 8, 5, 9)
	logits := logits64(p.h, p.w, p.N, p.C, p.V)
	var meanA float64
	for n, y := range p.targets {
		if y != kdrt.IgnoreIndex {
			p.behaviour[n] = -ref.CrossEntropy(logits[n*p.V:(n+1)*p.V], int(y))
			meanA += p.adv[n] / 6
		}
	}
	be := cpu.New()
	h := tensor(t, be, "h", p.h, p.N, p.C)
	w := tensor(t, be, "w", p.w, p.V, p.C)
	dh := zeros(t, be, "dh", p.N, p.C)
	res, err := loss.PolicyGradient(be, h, loss.Head{W: w}, dh, p.targets, p.behaviour, p.adv, 1, loss.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(res.Loss+meanA) > 1e-5 || math.Abs(res.MeanRatio-1) > 1e-5 {
		t.Fatalf("loss %g (want −mean A = %g), mean ratio %g", res.Loss, -meanA, res.MeanRatio)
	}
	surrogate := func() float64 {
		s := logits64(p.h, p.w, p.N, p.C, p.V)
		var l float64
		for n, y := range p.targets {
			if y != kdrt.IgnoreIndex {
				l -= p.adv[n] * -ref.CrossEntropy(s[n*p.V:(n+1)*p.V], int(y)) / 6
			}
		}
		return l
	}
	if e := ref.MaxNormErr(to64(cpu.Float32s(dh)), fd(p.h, surrogate)); e > 1e-4 {
		t.Fatalf("hidden gradient off the REINFORCE surrogate's by %.2g", e)
	}
}

// TestReverseKLAdvantages: the advantages are the discounted sums of the
// future tokens' −(student − teacher) within each sequence, as the explicit
// double sum of internal/ref writes them, for γ = 0, ½ and 1.
func TestReverseKLAdvantages(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const B, T = 3, 7
	targets := make([]int32, B*T)
	student, teacher := make([]float64, B*T), make([]float64, B*T)
	for i := range targets {
		pos := i % T
		// prompt positions first, then the response, then padding
		if pos < 2 || (i/T == 1 && pos > 4) {
			targets[i] = kdrt.IgnoreIndex
			continue
		}
		targets[i] = int32(r.IntN(50))
		student[i], teacher[i] = -3*r.Float64(), -3*r.Float64()
	}
	for _, gamma := range []float64{0, 0.5, 1} {
		got, err := loss.ReverseKLAdvantages(student, teacher, targets, T, gamma)
		if err != nil {
			t.Fatal(err)
		}
		for b := range B {
			keep := make([]bool, T)
			for j := range T {
				keep[j] = targets[b*T+j] != kdrt.IgnoreIndex
			}
			want := ref.DiscountedReverseKL(student[b*T:(b+1)*T], teacher[b*T:(b+1)*T], keep, gamma)
			for j := range T {
				if math.Abs(got[b*T+j]-want[j]) > 1e-12 {
					t.Fatalf("γ %g, sequence %d, position %d: advantage %g, want %g", gamma, b, j, got[b*T+j], want[j])
				}
			}
		}
	}
}

// TestPolicyGradientRefuses: inputs that cannot be a policy gradient are
// errors naming what is wrong, never a NaN loss.
func TestPolicyGradientRefuses(t *testing.T) {
	p := newPGProblem(9, 4, 3, 5)
	be := cpu.New()
	h := tensor(t, be, "h", p.h, p.N, p.C)
	w := tensor(t, be, "w", p.w, p.V, p.C)
	bad := func(name string, targets []int32, beh, adv []float64, want string) {
		t.Helper()
		_, err := loss.PolicyGradient(be, h, loss.Head{W: w}, nil, targets, beh, adv, 1, loss.Options{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one saying %q", name, err, want)
		}
	}
	clone := func(x []float64) []float64 { return append([]float64(nil), x...) }
	nanAdv := clone(p.adv)
	nanAdv[0] = math.NaN()
	bad("NaN advantage", p.targets, p.behaviour, nanAdv, "advantage NaN at row 0")
	pos := clone(p.behaviour)
	pos[1] = 0.5
	bad("positive behaviour", p.targets, pos, p.adv, "behaviour log-probability 0.5 at row 1")
	bad("short advantages", p.targets, p.behaviour, p.adv[:2], "2 advantages for 4 rows")
	none := []int32{kdrt.IgnoreIndex, kdrt.IgnoreIndex, kdrt.IgnoreIndex, kdrt.IgnoreIndex}
	bad("no tokens", none, p.behaviour, p.adv, "no sampled tokens")
	out := append([]int32(nil), p.targets...)
	out[0] = 99
	bad("target outside the vocabulary", out, p.behaviour, p.adv, "target 99 at row 0")
	if _, err := loss.ReverseKLAdvantages([]float64{0, math.Inf(-1)}, []float64{0, 0}, []int32{1, 2}, 2, 0); err == nil || !strings.Contains(err.Error(), "row 1") {
		t.Errorf("−Inf log-probability: %v", err)
	}
	if _, err := loss.ReverseKLAdvantages([]float64{0, 0}, []float64{0, 0}, []int32{1, 2}, 2, 1.5); err == nil || !strings.Contains(err.Error(), "discount 1.5") {
		t.Errorf("discount 1.5: %v", err)
	}
}
