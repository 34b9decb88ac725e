// feature.cu: the row-wise ops of feature and relation distillation
// (runtime.FeatureOps): RowNormalize and its backward, RowDot, ScaleRows.
// Rows of C columns, one block per row; storage T is float or bf16 (the
// tensors of one op share it), per-row vectors (norms, dots, scales) are F32,
// arithmetic is fp32. The formulas are runtime/cpu/feature.go's: the norm is
// max(sqrt(Σ x²), eps) with a correctly rounded square root, the output is
// x / norm (a division, as PyTorch does), the backward multiplies by 1/norm.

// feat_row_normalize: out[n] = x[n] / norms[n], norms[n] = max(‖x[n]‖₂, eps).
// out may alias x: every thread has read its elements (for the norm) before
// the block reduction returns, and writes only the elements it reads.
template <typename T>
__device__ __forceinline__ void feat_row_normalize_impl(T* out, float* norms, const T* x, int C, float eps) {
    i64 base = (i64)blockIdx.x * C;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float v = ld(x, base + i);
        ss += v * v;
    }
    ss = block_sum(ss);
    float nr = fmaxf(__fsqrt_rn(ss), eps);
    if (threadIdx.x == 0) norms[blockIdx.x] = nr;
    for (int i = threadIdx.x; i < C; i += blockDim.x) st(out, base + i, __fdiv_rn(ld(x, base + i), nr));
}
KD_EXPORT_BOUNDED(feat_row_normalize, 1024, (T* out, float* norms, const T* x, int C, float eps),
          feat_row_normalize_impl<T>(out, norms, x, C, eps))

// feat_row_normalize_backward: dx[n] += (dout − out·⟨out, dout⟩)/norms[n] for a
// row whose norm exceeded eps, dx[n] += dout/eps for a clamped row.
template <typename T>
__device__ __forceinline__ void feat_row_normalize_backward_impl(T* dx, const T* dout, const T* out, const float* norms,
                                                                 int C, float eps) {
    i64 base = (i64)blockIdx.x * C;
    float nr = norms[blockIdx.x];
    float inv = __fdiv_rn(1.0f, nr);
    float dot = 0.0f;
    if (nr > eps) { // uniform across the block
        for (int i = threadIdx.x; i < C; i += blockDim.x) dot += ld(out, base + i) * ld(dout, base + i);
        dot = block_sum(dot);
    }
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float g = (ld(dout, base + i) - ld(out, base + i) * dot) * inv;
        st(dx, base + i, ld(dx, base + i) + g);
    }
}
KD_EXPORT_BOUNDED(feat_row_normalize_backward, 1024, (T* dx, const T* dout, const T* out, const float* norms, int C, float eps),
          feat_row_normalize_backward_impl<T>(dx, dout, out, norms, C, eps))

// feat_row_dot: out[n] = Σ_c a[n, c]·b[n, c].
template <typename T>
__device__ __forceinline__ void feat_row_dot_impl(float* out, const T* a, const T* b, int C) {
    i64 base = (i64)blockIdx.x * C;
    float s = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += ld(a, base + i) * ld(b, base + i);
    s = block_sum(s);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}
KD_EXPORT_BOUNDED(feat_row_dot, 1024, (float* out, const T* a, const T* b, int C), feat_row_dot_impl<T>(out, a, b, C))

// feat_scale_rows: dst[n] = s[n]·x[n] + beta·dst[n]; beta = 0 does not read
// dst. dst may alias x (each element is read and written by one thread).
template <typename T>
__device__ __forceinline__ void feat_scale_rows_impl(T* dst, const T* x, const float* s, int C, float beta) {
    i64 base = (i64)blockIdx.x * C;
    float sn = s[blockIdx.x];
    if (beta == 0.0f) {
        for (int i = threadIdx.x; i < C; i += blockDim.x) st(dst, base + i, sn * ld(x, base + i));
    } else {
        for (int i = threadIdx.x; i < C; i += blockDim.x) st(dst, base + i, sn * ld(x, base + i) + beta * ld(dst, base + i));
    }
}
KD_EXPORT_BOUNDED(feat_scale_rows, 1024, (T* dst, const T* x, const float* s, int C, float beta),
          feat_scale_rows_impl<T>(dst, x, s, C, beta))
