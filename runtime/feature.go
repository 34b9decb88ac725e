package runtime

// Epsilons of the row normalization, as PyTorch uses them.
const (
	// NormalizeEps is torch.nn.functional.normalize's default eps.
	NormalizeEps = 1e-12
	// CosineEps is torch.nn.functional.cosine_similarity's default eps; with
	// it, RowDot of two RowNormalize outputs is exactly PyTorch's cosine
	// similarity (which clamps each vector's norm separately).
	CosineEps = 1e-8
)

// FeatureOps are the ops of feature and relation distillation (matching
// hidden states and their pairwise similarities). They are row-wise: every
// tensor is viewed as [N, C] (or is a vector [N] of per-row values), and
// rows are independent.
type FeatureOps interface {
	// RowNormalize computes out[n] = x[n] / max(‖x[n]‖₂, eps) for x, out
	// [N, C], as torch.nn.functional.normalize(x, dim=-1, eps=eps) does, and
	// saves norms[n] = max(‖x[n]‖₂, eps) (F32 [N]) for the backward. out may
	// alias x.
	RowNormalize(out, norms, x *Tensor, eps float32)
	// RowNormalizeBackward accumulates dx[n] += ∂out[n]/∂x[n]ᵀ·dout[n] from
	// RowNormalize's out and norms: (dout − out·⟨out, dout⟩)/norms[n] for a
	// row whose norm exceeded eps, and dout/eps for a clamped row (the
	// derivative of x/eps, as PyTorch's clamp_min gives it). dx, dout and out
	// are [N, C]; eps is the forward's.
	RowNormalizeBackward(dx, dout, out, norms *Tensor, eps float32)
	// RowDot computes out[n] = Σ_c a[n, c]·b[n, c] for a, b [N, C] and out
	// F32 [N].
	RowDot(out, a, b *Tensor)
	// ScaleRows computes dst[n] = s[n]·x[n] + β·dst[n] for dst, x [N, C] and
	// s F32 [N]; β = 0 overwrites dst without reading it, β = 1 accumulates.
	// dst may alias x.
	ScaleRows(dst, x, s *Tensor, beta float32)
}
