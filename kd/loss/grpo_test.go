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

// TestGroupAdvantagesHandComputed: three groups of four rewards worked out
// by hand — (1, 0, 0, 1): mean ½, Bessel std √(1/3); all equal: 0; (0, 0,
// 0, 3): mean ¾, std 1.5 — with and without the std scaling.
func TestGroupAdvantagesHandComputed(t *testing.T) {
	rewards := []float64{1, 0, 0, 1, 2, 2, 2, 2, 0, 0, 0, 3}
	s1 := math.Sqrt(1.0/3) + 1e-4
	want := []float64{0.5 / s1, -0.5 / s1, -0.5 / s1, 0.5 / s1, 0, 0, 0, 0, -0.75 / 1.5001, -0.75 / 1.5001, -0.75 / 1.5001, 2.25 / 1.5001}
	got, err := loss.GroupAdvantages(rewards, 4, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-12 {
			t.Fatalf("advantage %d: %.10g, want %.10g", i, got[i], want[i])
		}
	}
	unscaled := []float64{0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0, -0.75, -0.75, -0.75, 2.25}
	got, err = loss.GroupAdvantages(rewards, 4, false)
	if err != nil {
		t.Fatal(err)
	}
	for i := range unscaled {
		if math.Abs(got[i]-unscaled[i]) > 1e-12 {
			t.Fatalf("unscaled advantage %d: %g, want %g", i, got[i], unscaled[i])
		}
	}
	// Unscored answers (NaN) are left out of their group's statistics and
	// get 0: (1, NaN, 0, 0) is the group (1, 0, 0): mean ⅓, std √(1/3);
	// a group with one scored answer teaches nothing.
	nan := math.NaN()
	got, err = loss.GroupAdvantages([]float64{1, nan, 0, 0, nan, 1, nan, nan}, 4, true)
	if err != nil {
		t.Fatal(err)
	}
	s3 := math.Sqrt(1.0/3) + 1e-4
	for i, w := range []float64{(2.0 / 3) / s3, 0, (-1.0 / 3) / s3, (-1.0 / 3) / s3, 0, 0, 0, 0} {
		if math.Abs(got[i]-w) > 1e-12 {
			t.Fatalf("with unscored answers, advantage %d: %g, want %g", i, got[i], w)
		}
	}
	for _, c := range []struct {
		rewards []float64
		g       int
		want    string
	}{
		{rewards, 1, "group size 1"},
		{rewards, 5, "12 rewards are not groups of 5"},
		{[]float64{1, math.Inf(1)}, 2, "reward +Inf of answer 1"},
	} {
		if _, err := loss.GroupAdvantages(c.rewards, c.g, true); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("group %d: error %v, want one saying %q", c.g, err, c.want)
		}
	}
}

// TestGRPOClipHandComputed: one token, logits (0, 0) so π(y) = ½, sampled
// with probability ¼ (ratio 2, outside [0.8, 1.2]). With A = +1 the clipped
// term 1.2 is the minimum: loss −1.2 and no gradient. With A = −1 the
// unclipped −2 is: loss 2, ∂ℓ/∂lp = 2, ∂L/∂logits = 2·(onehot − ½) = (1,
// −1). The KL term against a reference of ¼: x = log ¼ − log ½ = −log 2,
// k3 = ½ + log 2 − 1, ∂/∂lp = β·(1 − ½).
func TestGRPOClipHandComputed(t *testing.T) {
	be := cpu.New()
	cfg := loss.GRPOConfig{EpsLow: 0.2, EpsHigh: 0.2}
	old := []float64{math.Log(0.25)}
	for _, c := range []struct {
		A, beta  float64
		loss     float64
		g0, g1   float64 // the lm_head gradient's two rows (hidden is 1)
		clipFrac float64
	}{
		{1, 0, -1.2, 0, 0, 1},
		{-1, 0, 2, 1, -1, 0},
		{1, 0.1, -1.2 + 0.1*(math.Ln2-0.5), 0.1 * 0.5 * 0.5, -0.1 * 0.5 * 0.5, 1},
	} {
		h := tensor(t, be, "h", []float64{1}, 1, 1)
		w := tensor(t, be, "w", []float64{0, 0}, 2, 1)
		gw := zeros(t, be, "gw", 2, 1)
		cfg.Beta = c.beta
		res, err := loss.GRPO(be, h, loss.Head{W: w, G: gw}, nil, []int32{0}, old, []float64{math.Log(0.25)}, []float64{c.A}, []float64{1}, cfg, loss.Options{})
		if err != nil {
			t.Fatal(err)
		}
		g := cpu.Float32s(gw)
		if math.Abs(res.Loss-c.loss) > 1e-6 || math.Abs(float64(g[0])-c.g0) > 1e-6 || math.Abs(float64(g[1])-c.g1) > 1e-6 {
			t.Fatalf("A %g β %g: loss %g, lm_head gradient %v; want %g, (%g, %g)", c.A, c.beta, res.Loss, g, c.loss, c.g0, c.g1)
		}
		if res.ClipFraction != c.clipFrac || math.Abs(res.MeanRatio-2) > 1e-6 {
			t.Fatalf("A %g: clip fraction %g, mean ratio %g; want %g, 2", c.A, res.ClipFraction, res.MeanRatio, c.clipFrac)
		}
	}
}

// grpoProblem is a GRPO case whose ratios sit at ½, 1 and 3/2 with positive
// and negative advantages, so every branch of the clipped minimum is taken,
// and a reference that differs from the student.
type grpoProblem struct {
	N, C, V                 int
	h, w                    []float64
	targets                 []int32
	old, refLP, adv, weight []float64
	clipped                 int
}

func newGRPOProblem(seed uint64, N, C, V int) *grpoProblem {
	r := rand.New(rand.NewPCG(seed, 7))
	g := func(n int, std float64) []float64 {
		x := make([]float64, n)
		for i := range x {
			x[i] = r.NormFloat64() * std
		}
		return x
	}
	p := &grpoProblem{N: N, C: C, V: V, h: g(N*C, 1), w: g(V*C, 0.7)}
	logits := logits64(p.h, p.w, N, C, V)
	ratios := []float64{0.5, 1, 1.5}
	k := 0
	for n := range N {
		p.targets = append(p.targets, kdrt.IgnoreIndex)
		p.old, p.refLP, p.adv, p.weight = append(p.old, 0), append(p.refLP, 0), append(p.adv, 0), append(p.weight, 0)
		if n%5 == 4 { // a prompt or padding position
			continue
		}
		y := r.IntN(V)
		lp := -ref.CrossEntropy(logits[n*V:(n+1)*V], y)
		ratio := ratios[k%3]
		A := 0.5 + r.Float64()
		if k%2 == 1 {
			A = -A
		}
		k++
		if ratio > 1.2 && A > 0 || ratio < 0.8 && A < 0 {
			p.clipped++
		}
		p.targets[n], p.old[n], p.adv[n] = int32(y), lp-math.Log(ratio), A
		p.refLP[n] = lp + 0.5*r.NormFloat64() - 0.3
		p.refLP[n] = min(p.refLP[n], -1e-3)
		p.weight[n] = 0.1 + r.Float64()
	}
	return p
}

func (p *grpoProblem) refLoss(beta float64, klRatio bool) float64 {
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
	return ref.GRPOLoss(rows, tg, p.old, p.refLP, p.adv, p.weight, 0.2, 0.2, beta, klRatio)
}

// TestGRPOMatchesReference: the fused GRPO loss and its gradients to the
// hidden states and the lm_head match the float64 definition
// (internal/ref.GRPOLoss) and its central differences, with and without the
// KL penalty (plain, and times the ratio), at chunks of 1 row, a few rows
// and all rows; the clip fraction is the count of tokens the construction
// put on the clipped side.
func TestGRPOMatchesReference(t *testing.T) {
	for i, chunk := range []int{1, 4, 0} {
		for _, beta := range []float64{0, 0.3} {
			klRatio := i%2 == 1 // plain k3 at chunks 1 and all, times the ratio at 4
			p := newGRPOProblem(uint64(21+chunk), 15, 6, 13)
			be := cpu.New()
			h := tensor(t, be, "h", p.h, p.N, p.C)
			w := tensor(t, be, "w", p.w, p.V, p.C)
			dh := zeros(t, be, "dh", p.N, p.C)
			gw := zeros(t, be, "gw", p.V, p.C)
			cfg := loss.GRPOConfig{EpsLow: 0.2, EpsHigh: 0.2, Beta: beta, KLRatio: klRatio}
			res, err := loss.GRPO(be, h, loss.Head{W: w, G: gw}, dh, p.targets, p.old, p.refLP, p.adv, p.weight, cfg, loss.Options{ChunkRows: chunk})
			if err != nil {
				t.Fatal(err)
			}
			want := p.refLoss(beta, klRatio)
			if d := math.Abs(res.Loss - want); d > 1e-5*math.Max(1, math.Abs(want)) {
				t.Fatalf("chunk %d β %g: loss %.8g, reference %.8g", chunk, beta, res.Loss, want)
			}
			if res.Tokens != 12 || math.Abs(res.ClipFraction-float64(p.clipped)/12) > 1e-12 || p.clipped == 0 || p.clipped == 12 {
				t.Fatalf("tokens %d, clip fraction %g; want 12 and %d/12 (some, not all)", res.Tokens, res.ClipFraction, p.clipped)
			}
			gh := fd(p.h, func() float64 { return p.refLoss(beta, klRatio) })
			gwRef := fd(p.w, func() float64 { return p.refLoss(beta, klRatio) })
			if e := ref.MaxNormErr(to64(cpu.Float32s(dh)), gh); e > 1e-4 {
				t.Fatalf("chunk %d β %g: hidden gradient off by %.2g of its max-norm", chunk, beta, e)
			}
			if e := ref.MaxNormErr(to64(cpu.Float32s(gw)), gwRef); e > 1e-4 {
				t.Fatalf("chunk %d β %g: lm_head gradient off by %.2g of its max-norm", chunk, beta, e)
			}
		}
	}
}

// TestGRPOOwnPolicy: with no sampling log-probabilities (old nil: the
// policy being trained sampled the answers — the first of μ steps on them)
// every ratio is exactly 1, nothing is clipped, and the loss and its
// gradients are the float64 definition's with old held at the policy's own
// log-probabilities (computed here from the logits in float64) — the
// gradient of TRL's exp(lp − lp.detach()); the step's LogProbs are those
// log-probabilities, the old ones for the steps after.
func TestGRPOOwnPolicy(t *testing.T) {
	p := newGRPOProblem(5, 15, 6, 13)
	logits := logits64(p.h, p.w, p.N, p.C, p.V)
	for n, y := range p.targets {
		if y != kdrt.IgnoreIndex {
			p.old[n] = -ref.CrossEntropy(logits[n*p.V:(n+1)*p.V], int(y))
		}
	}
	be := cpu.New()
	h := tensor(t, be, "h", p.h, p.N, p.C)
	w := tensor(t, be, "w", p.w, p.V, p.C)
	dh := zeros(t, be, "dh", p.N, p.C)
	gw := zeros(t, be, "gw", p.V, p.C)
	cfg := loss.GRPOConfig{EpsLow: 0.2, EpsHigh: 0.2, Beta: 0.3, KLRatio: true}
	res, err := loss.GRPO(be, h, loss.Head{W: w, G: gw}, dh, p.targets, nil, p.refLP, p.adv, p.weight, cfg, loss.Options{ChunkRows: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.MeanRatio != 1 || res.ClipFraction != 0 || res.Tokens != 12 {
		t.Fatalf("mean ratio %v, clip fraction %v, %d tokens; want exactly 1, 0 and 12", res.MeanRatio, res.ClipFraction, res.Tokens)
	}
	for n, y := range p.targets {
		if y != kdrt.IgnoreIndex && math.Abs(res.LogProbs[n]-p.old[n]) > 1e-5 {
			t.Fatalf("row %d: log-probability %g, float64 %g", n, res.LogProbs[n], p.old[n])
		}
	}
	want := p.refLoss(cfg.Beta, cfg.KLRatio)
	if d := math.Abs(res.Loss - want); d > 1e-5*math.Max(1, math.Abs(want)) {
		t.Fatalf("loss %.8g, reference %.8g", res.Loss, want)
	}
	// old stays at the unperturbed log-probabilities: the detached ratio.
	gh := fd(p.h, func() float64 { return p.refLoss(cfg.Beta, cfg.KLRatio) })
	gwRef := fd(p.w, func() float64 { return p.refLoss(cfg.Beta, cfg.KLRatio) })
	if e := ref.MaxNormErr(to64(cpu.Float32s(dh)), gh); e > 1e-4 {
		t.Fatalf("hidden gradient off by %.2g of its max-norm", e)
	}
	if e := ref.MaxNormErr(to64(cpu.Float32s(gw)), gwRef); e > 1e-4 {
		t.Fatalf("lm_head gradient off by %.2g of its max-norm", e)
	}
}

// TestGRPOTokenWeights: GRPO's per-sequence mean gives each target of a
// sequence with n targets 1/(n·B) of the B sequences with targets; the
// token mean gives every target 1/total.
func TestGRPOTokenWeights(t *testing.T) {
	I := int32(kdrt.IgnoreIndex)
	targets := []int32{I, 5, 6, I, I, I, I, I, I, 7, 8, 9}
	seq, err := loss.GRPOTokenWeights(targets, 4, true, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{0, 2.0 / 4, 2.0 / 4, 0, 0, 0, 0, 0, 0, 2.0 / 6, 2.0 / 6, 2.0 / 6}
	tok, err := loss.GRPOTokenWeights(targets, 4, false, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		wt := 0.0
		if targets[i] != I {
			wt = 2.0 / 5
		}
		if math.Abs(seq[i]-want[i]) > 1e-15 || math.Abs(tok[i]-wt) > 1e-15 {
			t.Fatalf("row %d: weights %g and %g, want %g and %g", i, seq[i], tok[i], want[i], wt)
		}
	}
	if _, err := loss.GRPOTokenWeights([]int32{I, I}, 2, true, 1); err == nil {
		t.Fatal("no targets: no error")
	}
}

// TestGRPORefuses: inputs that cannot be a GRPO step are errors that say
// what is wrong.
func TestGRPORefuses(t *testing.T) {
	p := newGRPOProblem(3, 5, 3, 7)
	be := cpu.New()
	h := tensor(t, be, "h", p.h, p.N, p.C)
	w := tensor(t, be, "w", p.w, p.V, p.C)
	ok := loss.GRPOConfig{EpsLow: 0.2, EpsHigh: 0.28, Beta: 0.04}
	bad := func(name string, cfg loss.GRPOConfig, old, refLP, adv []float64, want string) {
		t.Helper()
		_, err := loss.GRPO(be, h, loss.Head{W: w}, nil, p.targets, old, refLP, adv, p.weight, cfg, loss.Options{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one saying %q", name, err, want)
		}
	}
	clone := func(x []float64) []float64 { return append([]float64(nil), x...) }
	badOld := clone(p.old)
	badOld[0] = math.NaN()
	bad("NaN sampling log-probability", ok, badOld, p.refLP, p.adv, "sampling log-probability NaN at row 0")
	bad("no reference with β", ok, p.old, nil, p.adv, "0 reference log-probabilities for 5 rows")
	bad("ε_low 1", loss.GRPOConfig{EpsLow: 1, EpsHigh: 0.2}, p.old, p.refLP, p.adv, "clip range")
	bad("negative β", loss.GRPOConfig{EpsLow: 0.2, EpsHigh: 0.2, Beta: -1}, p.old, p.refLP, p.adv, "KL coefficient -1")
	infA := clone(p.adv)
	infA[1] = math.Inf(1)
	bad("infinite advantage", ok, p.old, p.refLP, infA, "advantage +Inf at row 1")
}
