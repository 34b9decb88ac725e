package loss

import (
	"errors"
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// DPOKind names a preference-optimization objective on (prompt, chosen,
// rejected) pairs. The formulas are TRL's: DPOTrainer's loss_type "sigmoid",
// "hinge", "ipo" and "robust", and CPOTrainer's loss_type "simpo" (with
// cpo_alpha = 0; add an SFT term for CPO's NLL part). The losses and
// gradients match TRL 1.16 called directly (testdata/dpo), with two
// deliberate differences kept from TRL 0.19 and the papers: sigmoid applies
// cDPO's label smoothing (TRL 1.16 silently ignores label_smoothing there),
// and IPO's reported rewards use the same per-token averages as its loss
// (TRL 1.16 logs them on summed log-probabilities).
type DPOKind uint8

const (
	// DPOSigmoid is DPO (Rafailov et al.), with cDPO's label smoothing ε:
	// −(1−ε)·log σ(β·h) − ε·log σ(−β·h), h = (π_c − π_r) − (ref_c − ref_r)
	// on summed response log-probabilities.
	DPOSigmoid DPOKind = iota
	// DPOHinge is RSO's hinge loss relu(1 − β·h) on summed log-probabilities.
	DPOHinge
	// DPOIPO is IPO (Azar et al., eq. 17): (h − 1/(2β))², with h built from
	// per-token averaged log-probabilities of policy and reference, as TRL's
	// DPOTrainer does for loss_type "ipo".
	DPOIPO
	// DPORobust is robust DPO (Chowdhury et al.), unbiased under label noise ε:
	// (−(1−ε)·log σ(β·h) + ε·log σ(−β·h)) / (1 − 2ε).
	DPORobust
	// SimPO (Meng et al.) needs no reference model: with per-token averaged
	// log-probabilities h = avg π_c − avg π_r and z = β·h − γ, the loss is
	// −(1−ε)·log σ(z) − ε·log σ(−z).
	SimPO
)

var dpoKindNames = []string{"sigmoid", "hinge", "ipo", "robust", "simpo"}

// String returns the name recipes use, TRL's loss_type: sigmoid, hinge, ipo,
// robust, simpo.
func (k DPOKind) String() string {
	if int(k) < len(dpoKindNames) {
		return dpoKindNames[k]
	}
	return fmt.Sprintf("DPOKind(%d)", uint8(k))
}

// ParseDPOKind is String's inverse.
func ParseDPOKind(name string) (DPOKind, error) {
	for i, n := range dpoKindNames {
		if n == name {
			return DPOKind(i), nil
		}
	}
	return 0, fmt.Errorf("dpo: unknown loss type %q (want one of sigmoid, hinge, ipo, robust, simpo)", name)
}

// NeedsReference reports whether the objective compares against a frozen
// reference model (every kind but SimPO).
func (k DPOKind) NeedsReference() bool { return k != SimPO }

// Averaged reports whether the objective uses per-token averaged
// log-probabilities (sum / response tokens) instead of sums: IPO and SimPO,
// as in TRL (average_log_prob for loss_type "ipo" and "simpo").
func (k DPOKind) Averaged() bool { return k == DPOIPO || k == SimPO }

// hasSmoothing reports whether the kind's formula has a label-smoothing term.
func (k DPOKind) hasSmoothing() bool { return k == DPOSigmoid || k == DPORobust || k == SimPO }

// DPOConfig chooses a preference objective and its hyperparameters. There are
// no implicit defaults; TRL's are Beta 0.1 (DPO and CPO/SimPO) and Gamma 0.5
// (CPOConfig.simpo_gamma).
type DPOConfig struct {
	Kind DPOKind
	// Beta is β: DPO's inverse temperature, IPO's regularization τ, SimPO's
	// reward scale. Must be > 0.
	Beta float64
	// LabelSmoothing is ε in [0, 0.5), the assumed probability that a pair's
	// preference label is flipped (cDPO for sigmoid and simpo, the noise rate
	// for robust). Hinge and IPO have no such term and refuse ε ≠ 0.
	LabelSmoothing float64
	// Gamma is SimPO's target reward margin γ (TRL's simpo_gamma); the other
	// kinds refuse γ ≠ 0.
	Gamma float64
}

// Validate reports a configuration outside the objectives' domains.
func (c DPOConfig) Validate() error {
	switch {
	case int(c.Kind) >= len(dpoKindNames):
		return fmt.Errorf("dpo: unknown loss type %v", c.Kind)
	case !(c.Beta > 0) || math.IsInf(c.Beta, 0):
		return fmt.Errorf("dpo: beta %g must be positive and finite", c.Beta)
	case !(c.LabelSmoothing >= 0 && c.LabelSmoothing < 0.5):
		return fmt.Errorf("dpo: label smoothing %g must be in [0, 0.5)", c.LabelSmoothing)
	case c.LabelSmoothing != 0 && !c.Kind.hasSmoothing():
		return fmt.Errorf("dpo: loss type %v has no label smoothing (got %g)", c.Kind, c.LabelSmoothing)
	case math.IsNaN(c.Gamma) || math.IsInf(c.Gamma, 0):
		return fmt.Errorf("dpo: gamma %g must be finite", c.Gamma)
	case c.Gamma != 0 && c.Kind != SimPO:
		return fmt.Errorf("dpo: gamma (SimPO's target margin) does not apply to loss type %v (got %g)", c.Kind, c.Gamma)
	}
	return nil
}

// SequenceLogProbs holds, per pair, one model's summed log-probabilities of
// the chosen and the rejected response tokens, log π(y|x) = Σ_t log π(y_t |
// x, y_<t), and the number of response tokens each sum covers. The token
// counts may be nil for sums handed to DPOLoss when the kind is not
// Averaged; SequenceSums always fills them.
type SequenceLogProbs struct {
	Chosen, Rejected             []float64
	ChosenTokens, RejectedTokens []int
}

// Pairs is the number of pairs.
func (s *SequenceLogProbs) Pairs() int { return len(s.Chosen) }

// DPOMetrics are the numbers DPO users read (TRL's rewards/chosen,
// rewards/rejected, rewards/margins, rewards/accuracies, logps/chosen,
// logps/rejected), all means over the batch's pairs.
type DPOMetrics struct {
	Pairs int
	// Loss is the mean loss over pairs (before any mixing scale).
	Loss float64
	// ChosenReward and RejectedReward are the means of the implicit rewards
	// β·(log π − log π_ref) of the chosen and rejected responses (SimPO:
	// β·avg log π). IPO's log-probabilities are per-token averages, as the
	// loss sees them.
	ChosenReward, RejectedReward float64
	// Margin is the mean of chosen − rejected reward.
	Margin float64
	// Accuracy is the fraction of pairs whose chosen reward exceeds the
	// rejected one (a tie counts as wrong).
	Accuracy float64
	// ChosenLogP and RejectedLogP are the means of the policy's log-probs,
	// summed or averaged as the loss sees them.
	ChosenLogP, RejectedLogP float64
}

// DPOLoss computes a preference objective from per-pair sequence
// log-probabilities of the policy and of the frozen reference model
// (reference is nil for SimPO, required otherwise). It returns the mean loss
// over pairs, its gradient with respect to the policy's summed
// log-probabilities policy.Chosen[i] and policy.Rejected[i] (for the averaged
// kinds this includes the 1/tokens factor), and the metrics. All arithmetic
// is float64, with log σ(x) = −softplus(−x) so that large |β·h| stays finite.
func DPOLoss(policy, reference *SequenceLogProbs, cfg DPOConfig) (loss float64, dChosen, dRejected []float64, m DPOMetrics, err error) {
	if err := cfg.Validate(); err != nil {
		return 0, nil, nil, m, err
	}
	if policy == nil {
		return 0, nil, nil, m, errors.New("dpo: no policy log-probabilities")
	}
	P := len(policy.Chosen)
	if err := checkSequenceLogProbs("policy", policy, P, cfg.Kind.Averaged()); err != nil {
		return 0, nil, nil, m, err
	}
	switch {
	case cfg.Kind.NeedsReference() && reference == nil:
		return 0, nil, nil, m, fmt.Errorf("dpo: loss type %v needs the reference model's log-probabilities", cfg.Kind)
	case !cfg.Kind.NeedsReference() && reference != nil:
		return 0, nil, nil, m, fmt.Errorf("dpo: loss type %v is reference-free, but reference log-probabilities were given", cfg.Kind)
	}
	if reference != nil {
		if err := checkSequenceLogProbs("reference", reference, P, false); err != nil {
			return 0, nil, nil, m, err
		}
		if err := sameTokens(policy.ChosenTokens, reference.ChosenTokens, "chosen"); err != nil {
			return 0, nil, nil, m, err
		}
		if err := sameTokens(policy.RejectedTokens, reference.RejectedTokens, "rejected"); err != nil {
			return 0, nil, nil, m, err
		}
	}

	beta, eps := cfg.Beta, cfg.LabelSmoothing
	dChosen, dRejected = make([]float64, P), make([]float64, P)
	m.Pairs = P
	for i := range P {
		// Per-pair log-probabilities as the loss sees them, and the factors
		// that carry d/d(that value) back to d/d(sum).
		pc, pr, fc, fr := policy.Chosen[i], policy.Rejected[i], 1.0, 1.0
		var rc, rr float64
		if reference != nil {
			rc, rr = reference.Chosen[i], reference.Rejected[i]
		}
		if cfg.Kind.Averaged() {
			tc, tr := float64(policy.ChosenTokens[i]), float64(policy.RejectedTokens[i])
			pc, pr, rc, rr = pc/tc, pr/tr, rc/tc, rr/tr
			fc, fr = 1/tc, 1/tr
		}
		// h is TRL's "logits"; SimPO has no reference terms (rc = rr = 0).
		h := (pc - pr) - (rc - rr)
		var l, dh float64 // the pair's loss and dl/dh
		switch cfg.Kind {
		case DPOSigmoid:
			z := beta * h
			l = (1-eps)*dpoSoftplus(-z) + eps*dpoSoftplus(z)
			dh = beta * (-(1-eps)*dpoSigmoid(-z) + eps*dpoSigmoid(z))
		case DPORobust:
			z := beta * h
			l = ((1-eps)*dpoSoftplus(-z) - eps*dpoSoftplus(z)) / (1 - 2*eps)
			dh = beta * (-(1-eps)*dpoSigmoid(-z) - eps*dpoSigmoid(z)) / (1 - 2*eps)
		case DPOHinge:
			z := beta * h
			if 1-z > 0 {
				l, dh = 1-z, -beta
			}
		case DPOIPO:
			d := h - 1/(2*beta)
			l, dh = d*d, 2*d
		case SimPO:
			z := beta*h - cfg.Gamma
			l = (1-eps)*dpoSoftplus(-z) + eps*dpoSoftplus(z)
			dh = beta * (-(1-eps)*dpoSigmoid(-z) + eps*dpoSigmoid(z))
		}
		loss += l
		dChosen[i] = dh * fc / float64(P)
		dRejected[i] = -dh * fr / float64(P)

		cr, rj := beta*(pc-rc), beta*(pr-rr)
		m.ChosenReward += cr
		m.RejectedReward += rj
		m.Margin += cr - rj
		if cr > rj {
			m.Accuracy++
		}
		m.ChosenLogP += pc
		m.RejectedLogP += pr
	}
	n := float64(P)
	loss /= n
	m.Loss = loss
	m.ChosenReward /= n
	m.RejectedReward /= n
	m.Margin /= n
	m.Accuracy /= n
	m.ChosenLogP /= n
	m.RejectedLogP /= n
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return 0, nil, nil, m, fmt.Errorf("dpo: %v loss is not finite (%g)", cfg.Kind, loss)
	}
	return loss, dChosen, dRejected, m, nil
}

func checkSequenceLogProbs(who string, s *SequenceLogProbs, P int, needTokens bool) error {
	if P == 0 {
		return errors.New("dpo: no pairs")
	}
	if len(s.Chosen) != P || len(s.Rejected) != P {
		return fmt.Errorf("dpo: %s log-probabilities for %d chosen and %d rejected responses, want %d pairs", who, len(s.Chosen), len(s.Rejected), P)
	}
	if needTokens && (s.ChosenTokens == nil || s.RejectedTokens == nil) {
		return fmt.Errorf("dpo: per-token averaged log-probabilities need the %s's response token counts", who)
	}
	for _, side := range []struct {
		name   string
		lp     []float64
		tokens []int
	}{{"chosen", s.Chosen, s.ChosenTokens}, {"rejected", s.Rejected, s.RejectedTokens}} {
		if side.tokens != nil && len(side.tokens) != P {
			return fmt.Errorf("dpo: %s has %d %s token counts for %d pairs", who, len(side.tokens), side.name, P)
		}
		for i, v := range side.lp {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("dpo: pair %d: %s's %s log-probability %g is not finite", i, who, side.name, v)
			}
			if side.tokens != nil && side.tokens[i] <= 0 {
				return fmt.Errorf("dpo: pair %d has no %s response tokens", i, side.name)
			}
		}
	}
	return nil
}

// sameTokens checks that reference token counts, when given, are the
// policy's: both models score the same responses.
func sameTokens(policy, reference []int, side string) error {
	if policy == nil || reference == nil {
		return nil
	}
	for i := range policy {
		if policy[i] != reference[i] {
			return fmt.Errorf("dpo: pair %d: the policy scored %d %s response tokens, the reference %d", i, policy[i], side, reference[i])
		}
	}
	return nil
}

// dpoSoftplus is log(1 + eˣ) without overflow; log σ(x) = −softplus(−x).
func dpoSoftplus(x float64) float64 {
	return max(x, 0) + math.Log1p(math.Exp(-math.Abs(x)))
}

// dpoSigmoid is σ(x) = 1/(1 + e⁻ˣ) without overflow.
func dpoSigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// PairLayout says which sequence each row of a batch belongs to. A batch
// holds the chosen and the rejected sequence (prompt + response, shifted so
// that row n predicts targets[n]) of every pair, in any order and with any
// padding; rows whose target is runtime.IgnoreIndex (prompt, padding) count
// for nothing whatever their layout entry says.
type PairLayout struct {
	// Pairs is the number of (chosen, rejected) pairs in the batch.
	Pairs int
	// Pair[n] is row n's pair index in [0, Pairs), or −1 for a row outside
	// every sequence (its target must then be IgnoreIndex).
	Pair []int
	// Chosen[n] is true when row n is in the pair's chosen sequence, false
	// when in the rejected one.
	Chosen []bool
}

// ConcatPairLayout is the layout of the usual DPO batch: the Pairs chosen
// sequences of seqLen rows each, then the Pairs rejected ones (TRL's
// concatenated forward).
func ConcatPairLayout(pairs, seqLen int) PairLayout {
	l := PairLayout{Pairs: pairs, Pair: make([]int, 2*pairs*seqLen), Chosen: make([]bool, 2*pairs*seqLen)}
	for n := range l.Pair {
		s := n / seqLen
		l.Pair[n] = s % pairs
		l.Chosen[n] = s < pairs
	}
	return l
}

func (l PairLayout) check(targets []int32) error {
	if l.Pairs <= 0 {
		return fmt.Errorf("dpo: layout with %d pairs", l.Pairs)
	}
	if len(l.Pair) != len(targets) || len(l.Chosen) != len(targets) {
		return fmt.Errorf("dpo: layout of %d pair indices and %d chosen flags for %d rows", len(l.Pair), len(l.Chosen), len(targets))
	}
	for n, p := range l.Pair {
		if p < -1 || p >= l.Pairs {
			return fmt.Errorf("dpo: row %d is in pair %d, outside [0, %d)", n, p, l.Pairs)
		}
		if p < 0 && targets[n] != kdrt.IgnoreIndex {
			return fmt.Errorf("dpo: row %d has target %d but belongs to no pair", n, targets[n])
		}
	}
	return nil
}

// SequenceSums runs one model's first pass over a batch: the log-probability
// of every target token (TokenLogProbs, fused and chunked, no gradient),
// summed in float64 per pair and side, with the response token counts. It
// is how the caller gets the frozen reference model's log-probabilities
// (from its own final hidden states and lm_head, on the same targets and
// layout) before calling DPO; DPO uses it for the policy. A pair without
// chosen or rejected response tokens is an error naming the pair.
func SequenceSums(be kdrt.Backend, hidden *kdrt.Tensor, head Head, targets []int32, layout PairLayout, opt Options) (*SequenceLogProbs, error) {
	if err := checkTargetRows(hidden, head, targets); err != nil {
		return nil, err
	}
	if err := layout.check(targets); err != nil {
		return nil, err
	}
	lp, err := TokenLogProbs(be, hidden, head, targets, opt)
	if err != nil {
		return nil, err
	}
	P := layout.Pairs
	s := &SequenceLogProbs{Chosen: make([]float64, P), Rejected: make([]float64, P),
		ChosenTokens: make([]int, P), RejectedTokens: make([]int, P)}
	for n, t := range targets {
		if t == kdrt.IgnoreIndex {
			continue
		}
		p := layout.Pair[n]
		if layout.Chosen[n] {
			s.Chosen[p] += lp[n]
			s.ChosenTokens[p]++
		} else {
			s.Rejected[p] += lp[n]
			s.RejectedTokens[p]++
		}
	}
	for p := range P {
		switch {
		case s.ChosenTokens[p] == 0:
			return nil, fmt.Errorf("dpo: pair %d has no chosen response tokens", p)
		case s.RejectedTokens[p] == 0:
			return nil, fmt.Errorf("dpo: pair %d has no rejected response tokens", p)
		}
	}
	return s, nil
}

// DPOResult is what DPO computed.
type DPOResult struct {
	// Loss is Metrics.Loss times the caller's scale: the quantity whose
	// gradient was accumulated.
	Loss    float64
	Metrics DPOMetrics
	// Policy are the policy's per-pair sums and token counts.
	Policy *SequenceLogProbs
}

// DPO computes a preference objective for the policy whose final hidden
// states [N, C] and lm_head are given, on a batch of N rows laid out by
// layout, with targets [N] holding runtime.IgnoreIndex outside the
// responses. reference holds the frozen reference model's sums from
// SequenceSums on the same targets and layout (nil for SimPO). It is two
// fused, chunked passes, so the [N × V] logits never exist: TokenLogProbs
// for the per-sequence sums, then, once DPOLoss has turned them into
// per-sequence gradients, TokenLogProbsBackward with each row weighted by
// its sequence's dLoss/dlog π, which accumulates scale times the gradient
// into dHidden and head.G (either may be nil; both nil: no second pass).
func DPO(be kdrt.Backend, hidden *kdrt.Tensor, head Head, dHidden *kdrt.Tensor, targets []int32, layout PairLayout, reference *SequenceLogProbs, cfg DPOConfig, scale float64, opt Options) (DPOResult, error) {
	var res DPOResult
	if err := cfg.Validate(); err != nil {
		return res, err
	}
	if err := checkHidden(hidden, head, dHidden); err != nil {
		return res, err
	}
	if err := checkScale(scale); err != nil {
		return res, err
	}
	if reference != nil && len(reference.Chosen) != layout.Pairs {
		return res, fmt.Errorf("dpo: reference log-probabilities for %d pairs, layout has %d", len(reference.Chosen), layout.Pairs)
	}
	policy, err := SequenceSums(be, hidden, head, targets, layout, opt)
	if err != nil {
		return res, err
	}
	loss, dc, dr, m, err := DPOLoss(policy, reference, cfg)
	if err != nil {
		return res, err
	}
	res = DPOResult{Loss: scale * loss, Metrics: m, Policy: policy}
	if dHidden == nil && head.G == nil {
		return res, nil
	}
	coef := make([]float64, len(targets))
	for n, t := range targets {
		if t == kdrt.IgnoreIndex {
			continue
		}
		if p := layout.Pair[n]; layout.Chosen[n] {
			coef[n] = scale * dc[p]
		} else {
			coef[n] = scale * dr[p]
		}
	}
	if err := TokenLogProbsBackward(be, hidden, head, dHidden, targets, coef, opt); err != nil {
		return res, err
	}
	return res, nil
}
