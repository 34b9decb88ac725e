package cuda

import (
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// The row-wise losses (kernels/loss.cu): cross-entropy and the distillation
// divergences against a dense or a sparse (top-k) teacher. Logits, losses,
// weights and log-probabilities are F32 (fp32 end to end, by design: see
// DESIGN.md on Liger's bf16 rounding); targets and ids are I32. Anything else
// panics, as do shapes that do not agree (the CPU backend's checks).
//
// Each kernel takes one block per row, so a block of rows of any vocabulary
// width (151,936 and more) is one launch. Targets and ids are not read back
// to the host to be checked (that would stall the stream): a target or id
// outside the vocabulary gives a NaN loss (and CrossEntropyBackward a NaN
// row of dlogits) instead of the CPU's panic.

// lossThreads is the block size of a loss kernel for rows of V columns: about
// 16 columns per thread, a multiple of 32 between 32 and 1024 (the kernels use
// about 32 registers, so 1024 threads always fit).
func lossThreads(V int) int { return min(1024, 32*blocks(blocks(V, 16), 32)) }

// lossMaxShared is the most dynamic shared memory SparseDivergence asks for
// (top-k up to ~2,000 with a 151,936 vocabulary under TailBucket stays below
// 48 KiB). Above 48 KiB launch opts in, which sm_80 and sm_90 allow (sm_86/89
// up to 99 KiB; Turing only 64 KiB, where the launch fails with the
// driver's error).
const lossMaxShared = 96 << 10

// lossF32 panics unless every non-nil tensor is F32.
func lossF32(op string, ts ...*kdrt.Tensor) {
	for _, t := range ts {
		if t != nil && t.DType != kdrt.F32 {
			panic(fmt.Sprintf("cuda: %s: %v must be F32 (the loss kernels compute and store fp32)", op, t))
		}
	}
}

// lossI32 panics unless t is I32.
func lossI32(op string, t *kdrt.Tensor) {
	if t.DType != kdrt.I32 {
		panic(fmt.Sprintf("cuda: %s: %v must be I32", op, t))
	}
}

// lossWidth panics when a row width does not fit the kernels' int columns.
func lossWidth(op string, V int, t *kdrt.Tensor) {
	if V > math.MaxInt32 {
		panic(fmt.Sprintf("cuda: %s: %v has rows of %d columns, more than the kernels index", op, t, V))
	}
}

// CrossEntropy implements runtime.Backend: losses[n] = logsumexp(logits[n]) −
// logits[n, targets[n]], 0 for IgnoreIndex rows.
func (b *Backend) CrossEntropy(losses, logits, targets *kdrt.Tensor) {
	const op = "cross entropy"
	lossCheckTargets(op, logits, targets)
	if losses.Numel() != targets.Numel() {
		panic(fmt.Sprintf("cuda: %s: %v and %v differ in size", op, losses, targets))
	}
	lossF32(op, losses, logits)
	N, V := logits.Rows(), logits.Cols()
	if N == 0 {
		return
	}
	b.launch(op, "loss_ce_forward", d1(N), d1(lossThreads(V)), 0,
		b.dptr(losses), b.dptr(logits), b.dptr(targets), int32(V))
}

// CrossEntropyBackward implements runtime.Backend: dlogits[n] +=
// scale·w[n]·(softmax(logits[n]) − onehot(targets[n])), skipping IgnoreIndex
// rows and (with weights) rows whose scale·w[n] is 0; weights may be nil.
func (b *Backend) CrossEntropyBackward(dlogits, logits, targets, weights *kdrt.Tensor, scale float32) {
	const op = "cross entropy backward"
	lossCheckTargets(op, logits, targets)
	if dlogits.Numel() != logits.Numel() {
		panic(fmt.Sprintf("cuda: %s: %v and %v differ in size", op, dlogits, logits))
	}
	if weights != nil && weights.Numel() != targets.Numel() {
		panic(fmt.Sprintf("cuda: %s: %v and %v differ in size", op, weights, targets))
	}
	lossF32(op, dlogits, logits, weights)
	N, V := logits.Rows(), logits.Cols()
	if N == 0 {
		return
	}
	b.launch(op, "loss_ce_backward", d1(N), d1(lossThreads(V)), 0,
		b.dptr(dlogits), b.dptr(logits), b.dptr(targets), b.dptr(weights), int32(V), scale)
}

// lossCheckTargets panics unless targets is I32 with one entry per row of
// logits. (Their values are checked by the kernels: see above.)
func lossCheckTargets(op string, logits, targets *kdrt.Tensor) {
	lossI32(op, targets)
	if targets.Numel() != logits.Rows() {
		panic(fmt.Sprintf("cuda: %s: %v for %v", op, targets, logits))
	}
	lossWidth(op, logits.Cols(), logits)
}

// lossDivParams are the divergence kernels' trailing parameters: the kind,
// 1/τ, β, α, log β, log(1 − β), log α and log(1 − α).
type lossDivParams struct {
	kind                                int32
	invT, beta, alpha, lb, l1b, la, l1a float32
}

// lossDivArgs computes lossDivParams as runtime/cpu computes them: 1/τ in
// float32, the logs in float64 of the float32 values, rounded. JSD at β = 0
// and β = 1 is exactly forward and reverse KL, as in binDivergence.
func lossDivArgs(op string, p kdrt.DivergenceParams) lossDivParams {
	kind := p.Kind
	if kind > kdrt.SkewReverseKL {
		panic(fmt.Sprintf("cuda: %s: unknown divergence %v", op, kind))
	}
	if kind == kdrt.JSD && p.Beta == 0 {
		kind = kdrt.ForwardKL
	} else if kind == kdrt.JSD && p.Beta == 1 {
		kind = kdrt.ReverseKL
	}
	beta, alpha := p.Beta, p.Alpha
	return lossDivParams{
		kind: int32(kind), invT: 1 / p.Temperature, beta: beta, alpha: alpha,
		lb: float32(math.Log(float64(beta))), l1b: float32(math.Log(float64(1 - beta))),
		la: float32(math.Log(float64(alpha))), l1a: float32(math.Log(float64(1 - alpha))),
	}
}

// Divergence implements runtime.Backend: losses[n] = w[n]·D(p_n, q_n) over the
// first V columns (p.Vocab, or the common width), and dstudent[n] +=
// w[n]·∂D/∂student[n] when dstudent is not nil; a row of weight 0 gets loss 0
// and no gradient. The T² convention and the normalization are the caller's
// (folded into the weights), as on the CPU.
func (b *Backend) Divergence(losses, dstudent, student, teacher, weights *kdrt.Tensor, p kdrt.DivergenceParams) {
	const op = "divergence"
	N, Vs, Vt := student.Rows(), student.Cols(), teacher.Cols()
	V := p.Vocab
	if V == 0 && Vs != Vt {
		panic(fmt.Sprintf("cuda: %s between %v and %v: vocabularies differ and no shared width is given", op, student, teacher))
	}
	if V < 0 || V > Vs || V > Vt || teacher.Rows() != N || losses.Numel() != N || weights.Numel() != N {
		panic(fmt.Sprintf("cuda: %s %v vs %v (vocab %d, losses %v, weights %v): shapes do not agree", op, student, teacher, V, losses, weights))
	}
	if V == 0 {
		V = Vs
	}
	if dstudent != nil && dstudent.Numel() != student.Numel() {
		panic(fmt.Sprintf("cuda: %s: %v and %v differ in size", op, dstudent, student))
	}
	lossF32(op, losses, dstudent, student, teacher, weights)
	lossWidth(op, Vs, student)
	lossWidth(op, Vt, teacher)
	if N == 0 {
		return
	}
	d := lossDivArgs(op, p)
	b.launch(op, "loss_divergence", d1(N), d1(lossThreads(V)), 0,
		b.dptr(losses), b.dptr(dstudent), b.dptr(student), b.dptr(teacher), b.dptr(weights),
		int32(V), int32(Vs), int32(Vt), d.kind, d.invT, d.beta, d.alpha, d.lb, d.l1b, d.la, d.l1a)
}

// SparseDivergence implements runtime.Backend: Divergence against a teacher
// given as its top-k (ids, logprobs) per row, with the tail mass renormalized
// away (Renormalize) or kept as a (K+1)-th bin (TailBucket), measured by tail
// when it is not nil and as 1 − Σ top-k otherwise.
func (b *Backend) SparseDivergence(losses, dstudent, student, ids, logprobs, tail, weights *kdrt.Tensor, p kdrt.DivergenceParams) {
	const op = "sparse divergence"
	N, V, K := student.Rows(), student.Cols(), ids.Cols()
	if ids.Rows() != N || logprobs.Numel() != ids.Numel() || losses.Numel() != N || weights.Numel() != N {
		panic(fmt.Sprintf("cuda: %s %v vs %v %v: shapes do not agree", op, student, ids, logprobs))
	}
	if dstudent != nil && dstudent.Numel() != student.Numel() {
		panic(fmt.Sprintf("cuda: %s: %v and %v differ in size", op, dstudent, student))
	}
	if tail != nil && tail.Numel() != N {
		panic(fmt.Sprintf("cuda: %s tail: %v and %v differ in size", op, tail, losses))
	}
	lossI32(op, ids)
	lossF32(op, losses, dstudent, student, logprobs, tail, weights)
	lossWidth(op, V, student)
	var tailBucket int32
	bins := K
	switch p.Tail {
	case kdrt.Renormalize:
	case kdrt.TailBucket:
		tailBucket, bins = 1, K+1
	default:
		panic(fmt.Sprintf("cuda: %s: unknown tail mode %d", op, p.Tail))
	}
	// Shared memory: the bins' lp, lq and q·g, and under TailBucket a bitmask
	// of the row's top-k ids over the vocabulary.
	shmem := 4 * 3 * bins
	if tailBucket == 1 {
		shmem += 4 * ((V + 31) / 32)
	}
	if shmem > lossMaxShared {
		panic(fmt.Sprintf("cuda: %s: top-%d of a vocabulary of %d needs %d bytes of shared memory per row, more than the %d the kernel may use",
			op, K, V, shmem, lossMaxShared))
	}
	if N == 0 {
		return
	}
	d := lossDivArgs(op, p)
	b.launch(op, "loss_sparse_divergence", d1(N), d1(lossThreads(V)), shmem,
		b.dptr(losses), b.dptr(dstudent), b.dptr(student), b.dptr(ids), b.dptr(logprobs), b.dptr(tail),
		b.dptr(weights), int32(V), int32(K), tailBucket, d.kind, d.invT, d.beta, d.alpha, d.lb, d.l1b, d.la, d.l1a)
}

// xtokThreads is loss_xtok's block size (XTOK_THREADS in kernels/loss.cu).
const xtokThreads = 256

// xtokScratchBytes bounds the sort scratch of one CrossTokenizerDivergence
// launch; rows beyond it go in further launches (waves) over the same
// scratch. At 16 bytes per free student id and 8 per free teacher id, 512
// MiB holds about 160 rows of two 150k vocabularies: enough blocks to fill
// a large GPU.
const xtokScratchBytes = 512 << 20

// CrossTokenizerDivergence implements runtime.Backend (kernel loss_xtok):
// one block per row sorts the row's free student ids by logit (a stable
// 4-bit LSD radix sort of (key, id) pairs in global scratch) and the
// teacher's free logits likewise, walks both sorted lists for the ULD term
// and its gradient, and compares the matched ids directly. Scratch is 16
// bytes per free student id and 8 per free teacher id, per row, for a wave
// of rows at a time (xtokScratchBytes). The vocabulary match's ids are not
// read back to be checked (the CPU checks them; kd/loss builds them once):
// an id outside its vocabulary reads out of bounds.
func (b *Backend) CrossTokenizerDivergence(losses, dstudent, dslog, student, teacher, slog, tlog, weights *kdrt.Tensor, m kdrt.VocabMatch, p kdrt.CrossTokenizerParams) {
	const op = "cross-tokenizer divergence"
	N, Vs, Vt := student.Rows(), student.Cols(), teacher.Cols()
	if teacher.Rows() != N || losses.Numel() != N || weights.Numel() != N {
		panic(fmt.Sprintf("cuda: %s %v vs %v (losses %v, weights %v): shapes do not agree", op, student, teacher, losses, weights))
	}
	if dstudent != nil && dstudent.Numel() != student.Numel() {
		panic(fmt.Sprintf("cuda: %s: %v and %v differ in size", op, dstudent, student))
	}
	for _, v := range []*kdrt.Tensor{dslog, slog, tlog} {
		if v != nil && v.Numel() != N {
			panic(fmt.Sprintf("cuda: %s: %v should have %d elements, one per row", op, v, N))
		}
	}
	lossF32(op, losses, dstudent, dslog, student, teacher, slog, tlog, weights)
	lossWidth(op, Vs, student)
	lossWidth(op, Vt, teacher)
	if m.StudentFree == nil || m.TeacherFree == nil {
		panic(fmt.Sprintf("cuda: %s: the vocabulary match has no free-id lists", op))
	}
	M := 0
	if m.Pairs != nil {
		lossI32(op, m.Pairs)
		if m.Pairs.Cols() != 2 {
			panic(fmt.Sprintf("cuda: %s: pairs %v must be [M, 2]", op, m.Pairs))
		}
		M = m.Pairs.Rows()
	}
	lossI32(op, m.StudentFree)
	lossI32(op, m.TeacherFree)
	ns, nt := m.StudentFree.Numel(), m.TeacherFree.Numel()
	if M+ns != Vs || M+nt != Vt {
		panic(fmt.Sprintf("cuda: %s: the vocabulary match (%d pairs, %d and %d free ids) does not cover vocabularies of %d and %d", op, M, ns, nt, Vs, Vt))
	}
	if N == 0 {
		return
	}
	perRow := 16*ns + 8*nt
	wave := max(1, min(N, xtokScratchBytes/max(perRow, 1)))
	sk, ok := b.scratch(op, kdrt.I32, max(1, wave*2*ns))
	if !ok {
		return
	}
	defer b.Free(sk)
	sv, ok := b.scratch(op, kdrt.I32, max(1, wave*2*ns))
	if !ok {
		return
	}
	defer b.Free(sv)
	tk, ok := b.scratch(op, kdrt.I32, max(1, wave*2*nt))
	if !ok {
		return
	}
	defer b.Free(tk)
	invT := 1 / p.Temperature
	for r0 := 0; r0 < N; r0 += wave {
		rows := min(wave, N-r0)
		b.launch(op, "loss_xtok", d1(rows), d1(xtokThreads), 0,
			b.dptr(losses), b.dptr(dstudent), b.dptr(dslog), b.dptr(student), b.dptr(teacher),
			b.dptr(slog), b.dptr(tlog), b.dptr(weights), b.dptr(m.Pairs), int32(M),
			b.dptr(m.StudentFree), int32(ns), b.dptr(m.TeacherFree), int32(nt), int32(Vs), int32(Vt), invT,
			p.MatchedWeight, p.UnmatchedWeight, b.dptr(sk), b.dptr(sv), b.dptr(tk), int32(r0))
	}
}

// AddSum implements runtime.Backend: one block sums x in double and adds
// the sum to acc's slot, on the stream; nothing is read back.
func (b *Backend) AddSum(acc *kdrt.Tensor, slot int, x *kdrt.Tensor) {
	kdrt.CheckAddSum(acc, slot, x)
	b.launch("add sum", "loss_add_sum", d1(1), d1(256), 0, b.dptr(acc)+uint64(8*slot), b.dptr(x), int64(x.Numel()))
}
