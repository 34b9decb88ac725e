package runtime

// Backend is the one interface every computation in kdnative goes through. The
// model and the distillation objectives see nothing else; the CPU backend
// (runtime/cpu) is the numerical reference and the CUDA backend (cuda/) is
// tested against it.
//
// Conventions for every op:
//   - Tensors are row-major. "Viewed as [N, C]" means C is the last dimension and
//     N the product of the others (Tensor.Rows, Tensor.Cols).
//   - Forward ops overwrite their outputs.
//   - Backward ops ACCUMULATE (+=) into every gradient they produce, inputs' and
//     parameters' alike, as llm.c does: the residual stream's gradient and the
//     parameter gradients of gradient accumulation need nothing else. The caller
//     zeroes gradient buffers when a new accumulation starts. The two exceptions,
//     RoPE and RoPEBackward, transform in place and say so.
//   - Storage: the float tensors an op computes with share one dtype, F32 or
//     BF16, with float32 arithmetic (a BF16 output is rounded once, when
//     stored). A parameter's gradient accumulated from activations (MatMul's
//     C, a norm's dw and db, BiasBackward's and QKVBiasRoPEBackward's dbias,
//     EmbeddingBackward's dtable) may be F32 under BF16 activations: mixed
//     precision keeps gradients in F32. Saved statistics (rstd, mean, lse),
//     per-row vectors, logits and every loss tensor are F32.
//   - Shape mismatches are programming errors and panic with the tensors' names.
//     Failures of the device (out of memory, a failed launch) are errors: Alloc
//     returns them directly, and asynchronous ones are returned by Sync.
type Backend interface {
	// The distillation objectives' ops, declared beside their parameter types
	// (losses.go, feature.go).
	LossOps
	FeatureOps
	DecodeOps
	OptimizerOps

	// Name is the backend's registered name ("cpu", "cuda").
	Name() string
	// Describe is one line for logs: the device, its memory, its library versions.
	Describe() string

	// Alloc returns a zero-filled tensor. name appears in error messages.
	Alloc(name string, dt DType, shape ...int) (*Tensor, error)
	// Free releases a tensor's memory; the tensor must not be used again.
	Free(t *Tensor)
	// Upload copies host float32 values into dst, converting to dst's float dtype.
	Upload(dst *Tensor, src []float32) error
	// UploadInt32 copies host int32 values into an I32 tensor.
	UploadInt32(dst *Tensor, src []int32) error
	// Download copies a float tensor to the host as float32.
	Download(src *Tensor, dst []float32) error
	// DownloadInt32 copies an I32 tensor to the host.
	DownloadInt32(src *Tensor, dst []int32) error
	// Slice returns rows [start, end) of t viewed as [N, C]: a tensor of shape
	// [end−start, C] that shares t's storage (writes go through).
	Slice(t *Tensor, start, end int) *Tensor
	// Zero sets every element of t to zero.
	Zero(t *Tensor)
	// Copy copies src into dst; both have the same element count and dtype.
	Copy(dst, src *Tensor)
	// Cast converts src into dst, of the same element count: F32 to BF16
	// rounds to nearest even, BF16 to F32 is exact, equal dtypes copy.
	Cast(dst, src *Tensor)
	// Sync waits for queued work and returns the first device error since the
	// last Sync, naming the op that failed.
	Sync() error

	// MatMul computes C = α·op(A)·op(B) + β·C with A, B, C viewed as matrices
	// [Rows, Cols]; op(X) is X or Xᵀ. op(A) is [M, K], op(B) is [K, N], C is [M, N].
	// A and B share a dtype, F32 or BF16; C is F32 or theirs. Products
	// accumulate in float32 (BF16 operands: FP32 compute, a BF16 C rounded
	// once), so BF16 activations times BF16 weights can give F32 logits and
	// F32 weight gradients directly.
	MatMul(c, a, b *Tensor, transA, transB bool, alpha, beta float32)
	// AddBias adds bias[C] to every row of y[N, C].
	AddBias(y, bias *Tensor)
	// BiasBackward accumulates dbias[C] += Σ_rows dy[N, C].
	BiasBackward(dbias, dy *Tensor)
	// Add computes dst = a + b elementwise; dst may alias a or b.
	Add(dst, a, b *Tensor)
	// Scale multiplies every element of t by s.
	Scale(t *Tensor, s float32)
	// SumSquares returns Σ x² over all the tensors, accumulated in float64 on
	// the host side of the call (it synchronizes).
	SumSquares(ts ...*Tensor) (float64, error)

	// Embedding gathers out[N, C] = table[ids[n], :] for ids I32 [N] and table
	// [V, C]. Ids outside [0, V) panic on the CPU; callers validate user data.
	Embedding(out, ids, table *Tensor)
	// EmbeddingBackward accumulates dtable[ids[n], :] += dout[n, :].
	EmbeddingBackward(dtable, dout, ids *Tensor)

	// RMSNorm computes out = x / sqrt(mean(x²) + eps) · w for x, out [N, C] and
	// w [C], saving rstd[N] = 1/sqrt(mean(x²)+eps) for the backward.
	RMSNorm(out, rstd, x, w *Tensor, eps float32)
	// RMSNormBackward accumulates dx [N, C] and dw [C] from dout.
	RMSNormBackward(dx, dw, dout, x, w, rstd *Tensor)
	// AddRMSNorm is the residual add and the RMSNorm after it in one pass:
	// sum = a + b, then RMSNorm(out, rstd, sum, w, eps). sum may alias a or b.
	// Its backward is RMSNormBackward with x = sum (the add passes gradients
	// through).
	AddRMSNorm(sum, out, rstd, a, b, w *Tensor, eps float32)
	// LayerNorm computes out = (x − mean)·rstd·w + b over the last dimension,
	// saving mean[N] and rstd[N].
	LayerNorm(out, mean, rstd, x, w, b *Tensor, eps float32)
	// LayerNormBackward accumulates dx [N, C], dw [C] and db [C].
	LayerNormBackward(dx, dw, db, dout, x, w, mean, rstd *Tensor)

	// RoPE rotates x [N, H·HD] in place by the rotary position embedding in the
	// "rotate half" layout of Hugging Face Llama: element i < HD/2 of each head
	// pairs with element i + HD/2, rotated by angle pos[n]·invFreq[i].
	// pos is I32 [N], invFreq is F32 [HD/2].
	RoPE(x, pos, invFreq *Tensor)
	// RoPEBackward applies the inverse rotation in place, turning the gradient
	// with respect to the rotated values into the gradient with respect to the
	// values before rotation.
	RoPEBackward(dx, pos, invFreq *Tensor)
	// QKVBiasRoPE is the epilogue of the fused q/k/v projection qkv [N, W],
	// W = NH·HD + 2·NKV·HD (q's columns, then k's, then v's), in one pass:
	// q [N, NH·HD], k, v [N, NKV·HD] = qkv's column blocks + bias [W] (nil:
	// none), then q and k rotated in place as RoPE rotates them (invFreq F32
	// [HD/2]; nil: no rotation).
	QKVBiasRoPE(q, k, v, qkv, bias, pos, invFreq *Tensor)
	// QKVBiasRoPEBackward is its backward: it WRITES dqkv [N, W] = [dq and dk
	// rotated back as RoPEBackward does, dv] and accumulates dbias [W] +=
	// Σ_rows dqkv (nil: none). dq, dk, dv are left as they are.
	QKVBiasRoPEBackward(dqkv, dbias, dq, dk, dv, pos, invFreq *Tensor)

	// Attention computes causal scaled dot-product attention with grouped
	// queries. q, out are [B, T, NH, HD]; k, v are [B, T, NKV, HD] with NH a
	// multiple of NKV (query head h reads key/value head h / (NH/NKV)). Query t
	// sees keys s ≤ t, when window > 0 only those with t − s < window, and
	// with KeyStart only s ≥ KeyStart[b]. lse [B, NH, T], F32 always, receives
	// each query row's log-sum-exp of its scaled scores, log Σ_s exp(scale·q·k[s])
	// over the keys it sees (−Inf for a query that sees none, whose output is
	// zero): with out it is all the backward needs (FlashAttention-2), so the
	// saved state is O(B·NH·T), never the [T × T] probabilities.
	Attention(out, lse, q, k, v *Tensor, p AttentionParams)
	// AttentionBackward WRITES dq, dk, dv (an exception to the accumulate
	// rule: nothing else adds to them, so no memset is needed first) from
	// dout, given the forward's out and lse; the probabilities are recomputed.
	AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v *Tensor, p AttentionParams)

	// SwiGLU computes out = silu(gate)·up elementwise, all [N, F].
	SwiGLU(out, gate, up *Tensor)
	// SwiGLUBackward WRITES dgate and dup from dout (nothing else adds to
	// them: no memset first).
	SwiGLUBackward(dgate, dup, dout, gate, up *Tensor)
	// GELU computes the tanh approximation of GELU (GPT-2's "gelu_new").
	GELU(out, x *Tensor)
	// GELUBackward accumulates dx from dout.
	GELUBackward(dx, dout, x *Tensor)

	// CrossEntropy computes per-row losses[N] = logsumexp(logits[n]) −
	// logits[n, targets[n]] for logits [N, V] and targets I32 [N]. Rows whose
	// target is IgnoreIndex get loss 0.
	CrossEntropy(losses, logits, targets *Tensor)
	// CrossEntropyBackward accumulates dlogits[n] += scale·w[n]·(softmax(logits[n]) −
	// onehot(targets[n])) for rows whose target is not IgnoreIndex, with w the
	// F32 [N] row weights, or 1 when weights is nil. (A sequence's log-likelihood
	// Σ log softmax(logits)[target] = −Σ losses has the same backward with
	// negated weights, which is how DPO's per-sequence terms use it.)
	CrossEntropyBackward(dlogits, logits, targets, weights *Tensor, scale float32)

	// AdamW updates param in place from grad with decoupled weight decay and
	// bias correction (Loshchilov & Hutter; torch.optim.AdamW): m and v are the
	// fp32 moments, step counts from 1.
	AdamW(param, grad, m, v *Tensor, h AdamWParams)
}

// IgnoreIndex marks a target position that contributes no loss (PyTorch's
// default ignore_index).
const IgnoreIndex = -100

// AttentionParams are the dimensions of one attention call.
type AttentionParams struct {
	B, T, NH, NKV, HD int
	// Scale multiplies q·k before the softmax, usually 1/sqrt(HD).
	Scale float32
	// Window, when > 0, is a sliding-window limit: query t sees keys s with
	// t − s < Window (Mistral's sliding_window).
	Window int
	// KeyStart, when not nil, holds per sequence the number of left-padding
	// positions: sequence b's queries see only keys s ≥ KeyStart[b], and its
	// padding queries (t < KeyStart[b]) give zeros. Batched generation
	// left-pads prompts of different lengths this way.
	KeyStart []int
}

// AdamWParams are the hyperparameters of one AdamW update.
type AdamWParams struct {
	LR, Beta1, Beta2, Eps, WeightDecay float32
	// Step is the 1-based count of updates including this one.
	Step int
}
