package runtime

import (
	"fmt"
	"math"
)

// DivergenceKind names a divergence between the teacher's next-token
// distribution p and the student's q.
type DivergenceKind uint8

const (
	// ForwardKL is KL(p‖q) = Σ p·(log p − log q), mode-covering.
	ForwardKL DivergenceKind = iota
	// ReverseKL is KL(q‖p), mode-seeking (MiniLLM).
	ReverseKL
	// JSD is the generalized Jensen–Shannon divergence of GKD with weight β:
	// β·KL(p‖m) + (1−β)·KL(q‖m) with m = β·p + (1−β)·q; at β = 0 it is exactly
	// ForwardKL and at β = 1 exactly ReverseKL, as TRL's GKDTrainer defines it.
	JSD
	// TVD is the total variation distance ½·Σ|p − q|.
	TVD
	// SkewKL is KL(p ‖ α·p + (1−α)·q) (DistiLLM).
	SkewKL
	// SkewReverseKL is KL(q ‖ (1−α)·p + α·q) (DistiLLM).
	SkewReverseKL
)

var divergenceNames = []string{"forward_kl", "reverse_kl", "jsd", "tvd", "skew_kl", "skew_reverse_kl"}

// String returns the name recipes use (forward_kl, reverse_kl, jsd, tvd,
// skew_kl, skew_reverse_kl).
func (k DivergenceKind) String() string {
	if int(k) < len(divergenceNames) {
		return divergenceNames[k]
	}
	return fmt.Sprintf("DivergenceKind(%d)", uint8(k))
}

// ParseDivergence is String's inverse.
func ParseDivergence(name string) (DivergenceKind, error) {
	for i, n := range divergenceNames {
		if n == name {
			return DivergenceKind(i), nil
		}
	}
	return 0, fmt.Errorf("unknown divergence %q (want one of %v)", name, divergenceNames)
}

// TailMode says how a sparse (top-k) teacher's missing probability mass is
// treated.
type TailMode uint8

const (
	// Renormalize compares the teacher's top-k, renormalized to sum to 1, with
	// the student's distribution renormalized over the same k ids.
	Renormalize TailMode = iota
	// TailBucket keeps k+1 bins: the top-k ids, and one "tail" bin holding the
	// teacher's remaining mass 1 − Σ top-k, compared with the student's mass
	// on every other id. The student's gradient reaches its whole vocabulary.
	TailBucket
)

// DivergenceParams configure one Divergence or SparseDivergence call.
type DivergenceParams struct {
	Kind DivergenceKind
	// Temperature divides the student's logits (and dense teacher logits)
	// before the softmax. A sparse teacher's log-probabilities are taken as
	// given: they were computed at the teacher cache's temperature.
	Temperature float32
	// Beta is JSD's weight β in [0, 1]; Alpha is the skew divergences' α in
	// [0, 1].
	Beta, Alpha float32
	// Vocab, when > 0, limits a dense divergence to the first Vocab ids of
	// both vocabularies (teacher and student of one tokenizer family whose
	// padded vocabulary sizes differ); 0 requires equal widths.
	Vocab int
	// Tail is the sparse teacher's treatment of the mass outside its top-k.
	Tail TailMode
}

// LossOps are the row-wise losses of distillation. Each works on a block of
// rows [N, V] at a time, so that callers can compute logits a chunk at a
// time and never hold [tokens × vocabulary] in memory.
type LossOps interface {
	// Divergence computes, for each row n, losses[n] = weights[n]·D(p_n, q_n)
	// with q_n = softmax(student[n]/τ) and p_n = softmax(teacher[n]/τ), and,
	// when dstudent is not nil, accumulates dstudent[n] += weights[n]·∂D/∂student[n].
	// student, dstudent are [N, Vs], teacher is [N, Vt], losses and weights
	// F32 [N]; a row with weight 0 contributes nothing (masked tokens). The
	// caller folds normalization (1/count) and the T² convention into weights.
	Divergence(losses, dstudent, student, teacher, weights *Tensor, p DivergenceParams)
	// SparseDivergence is Divergence against a teacher given as its top-k per
	// row: ids I32 [N, K] (distinct, inside the student's vocabulary) and
	// logprobs F32 [N, K] (log-probabilities; −Inf marks an unused slot).
	// tail F32 [N], when not nil, is the log of the teacher's mass outside the
	// top-k as the teacher measured it (a teacher cache stores it); under
	// TailBucket the K+1 bins are then renormalized to sum to 1. Without it
	// the tail is 1 − Σ top-k, which quantized log-probabilities make
	// unreliable when the top-k holds nearly all the mass.
	SparseDivergence(losses, dstudent, student, ids, logprobs, tail, weights *Tensor, p DivergenceParams)
	// AddSum adds Σ_n x[n], x F32 [N], to the float64 acc[slot], acc being
	// F32 [2·S] read as S float64 values (Float64At: two elements hold
	// one float64's bits, low word first). The sum over x is formed first
	// and then added, in float64: the CPU adds in row order; a GPU in the
	// order its reduction takes. It lets a chunked loss keep its value on
	// the device, to be read once with everything else a step reports.
	AddSum(acc *Tensor, slot int, x *Tensor)
	// CrossTokenizerOps are the divergences between different tokenizers.
	CrossTokenizerOps
}

// VocabMatch pairs the ids of two vocabularies (a student's and a
// teacher's of another tokenizer) for CrossTokenizerDivergence: the ids
// whose tokens both vocabularies have, and the others of each side. Every
// id of each vocabulary appears exactly once, in Pairs or in its side's
// free list. The tensors are I32 and built once per run.
type VocabMatch struct {
	// Pairs [M, 2] holds (student id, teacher id) of the tokens both
	// vocabularies have; nil when M = 0 (ULD compares everything sorted).
	Pairs *Tensor
	// StudentFree [Vs − M] and TeacherFree [Vt − M] are the other ids of
	// each side, in increasing order.
	StudentFree, TeacherFree *Tensor
}

// CrossTokenizerParams configure CrossTokenizerDivergence.
type CrossTokenizerParams struct {
	// Temperature τ divides the student's and the teacher's logits.
	Temperature float32
	// MatchedWeight multiplies the forward KL over the matched ids and
	// UnmatchedWeight the sorted L1 distance (ULD) over the free ids.
	MatchedWeight, UnmatchedWeight float32
}

// CrossTokenizerOps are the losses between a student and a teacher whose
// tokenizers differ (kd/loss's cross-tokenizer objectives).
type CrossTokenizerOps interface {
	// CrossTokenizerDivergence compares, for each row n, the student's
	// distribution m_s = exp(slog[n])·softmax(student[n]/τ) over its Vs ids
	// with the teacher's m_t = exp(tlog[n])·softmax(teacher[n]/τ) over its Vt
	// ids (the scales exp(slog), exp(tlog) ≤ 1 are the probabilities of the
	// tokens merged into an aligned span, as GOLD merges them):
	//
	//	D = a·Σ_{(i,j) ∈ Pairs} m_t[j]·(log m_t[j] − log m_s[i])
	//	  + b·Σ_r |sort↓(m_s[StudentFree])_r − sort↓(m_t[TeacherFree])_r|
	//
	// with a = MatchedWeight, b = UnmatchedWeight, the sorted vectors padded
	// with zeros to the longer one (Universal Logit Distillation's
	// Wasserstein-1 between sorted probabilities, Boizard et al. 2024).
	// losses[n] = weights[n]·D; when dstudent is not nil it accumulates
	// dstudent[n] += weights[n]·∂D/∂student[n], and when dslog is not nil it
	// is set to weights[n]·∂D/∂slog[n] (through which the caller reaches the
	// merged tokens' own logits). student, dstudent are [N, Vs], teacher is
	// [N, Vt], slog, tlog (nil: 0), losses, weights and dslog F32 [N]. A row
	// of weight 0 gets loss 0 and no gradient. Ties in the sort are broken
	// by logit, then by id (which changes only which of two equal values a
	// gradient goes to).
	CrossTokenizerDivergence(losses, dstudent, dslog, student, teacher, slog, tlog, weights *Tensor, m VocabMatch, p CrossTokenizerParams)
}

// Float64At is the float64 that AddSum keeps in slot of an accumulator read
// back as float32 values (Backend.Download copies their bits unchanged).
func Float64At(acc []float32, slot int) float64 {
	lo, hi := math.Float32bits(acc[2*slot]), math.Float32bits(acc[2*slot+1])
	return math.Float64frombits(uint64(hi)<<32 | uint64(lo))
}

// SetFloat64At stores v into slot of an accumulator's float32 values, as
// Float64At reads it.
func SetFloat64At(acc []float32, slot int, v float64) {
	u := math.Float64bits(v)
	acc[2*slot], acc[2*slot+1] = math.Float32frombits(uint32(u)), math.Float32frombits(uint32(u>>32))
}

// CheckAddSum panics unless AddSum's operands fit: acc and x F32, x a
// vector or a column, slot inside acc.
func CheckAddSum(acc *Tensor, slot int, x *Tensor) {
	if acc.DType != F32 || x.DType != F32 {
		panic(fmt.Sprintf("AddSum: %v and %v must be F32", acc, x))
	}
	if slot < 0 || 2*slot+1 >= acc.Numel() {
		panic(fmt.Sprintf("AddSum: slot %d is outside the %d float64 values of %v", slot, acc.Numel()/2, acc))
	}
}
