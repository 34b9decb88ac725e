// elementwise.cu: bias, add, scale, sum of squares, embedding, RoPE, SwiGLU,
// GELU, AdamW and dtype casts. Each kernel computes what its CPU reference in
// runtime/cpu computes (elementwise.go, embedding.go, rope.go, adamw.go), in
// fp32 with storage T (float or bf16), in the same order of operations.
//
// Shapes in comments: N rows, C columns (the last dimension), n = N·C
// elements, V vocabulary rows of an embedding table, H heads of HD elements.
//
// Elementwise kernels use grid-stride loops over i64 flat indices, so any
// grid size covers any tensor.

#define EW_GRID_STRIDE(i, n)                                               \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);      \
         i += (i64)gridDim.x * blockDim.x)

// ---------------------------------------------------------------- bias

// y[N, C] += bias[C].
template <typename T>
__device__ void ew_add_bias_impl(T* y, const T* bias, i64 n, int C) {
    EW_GRID_STRIDE(i, n) { st(y, i, ld(y, i) + ld(bias, i % C)); }
}
KD_EXPORT(ew_add_bias, (T * y, const T* bias, i64 n, int C), ew_add_bias_impl<T>(y, bias, n, C))

// EW_COL_ROWS is blockDim.y of the column-partial kernels: blockDim is
// (32, EW_COL_ROWS), a warp reads 32 consecutive columns of one row.
#define EW_COL_ROWS 8

// part[chunk, C] = Σ dy[r, c] over the rows r of chunk blockIdx.y
// ([chunk·rows, min(N, (chunk+1)·rows))), for the 32 columns of blockIdx.x.
// The sum over the block's threadIdx.y is done in a fixed order, so the
// result is deterministic.
template <typename T>
__device__ void ew_bias_partial_impl(float* part, const T* dy, int N, int C, int rows) {
    __shared__ float s[EW_COL_ROWS][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * rows;
    int r1 = min(N, r0 + rows);
    float acc = 0.0f;
    if (c < C) {
        for (int r = r0 + threadIdx.y; r < r1; r += EW_COL_ROWS) acc += ld(dy, (i64)r * C + c);
    }
    s[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float t = 0.0f;
        for (int k = 0; k < EW_COL_ROWS; k++) t += s[k][threadIdx.x];
        part[(i64)blockIdx.y * C + c] = t;
    }
}
KD_EXPORT(ew_bias_partial, (float* part, const T* dy, int N, int C, int rows),
          ew_bias_partial_impl<T>(part, dy, N, C, rows))

// dst[C] += Σ_k part[k, C] for k in [0, chunks), summed in order.
template <typename T>
__device__ void ew_colsum_impl(T* dst, const float* part, int chunks, int C) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x) {
        float t = 0.0f;
        for (int k = 0; k < chunks; k++) t += part[(i64)k * C + c];
        st(dst, c, ld(dst, c) + t);
    }
}
KD_EXPORT(ew_colsum, (T * dst, const float* part, int chunks, int C), ew_colsum_impl<T>(dst, part, chunks, C))

// ---------------------------------------------------------------- add, scale

// dst[n] = a[n] + b[n]; dst may alias a or b (each element is read before it
// is written, by the same thread).
template <typename T>
__device__ void ew_add_impl(T* dst, const T* a, const T* b, i64 n) {
    EW_GRID_STRIDE(i, n) { st(dst, i, ld(a, i) + ld(b, i)); }
}
KD_EXPORT(ew_add, (T * dst, const T* a, const T* b, i64 n), ew_add_impl<T>(dst, a, b, n))

// x[n] *= s.
template <typename T>
__device__ void ew_scale_impl(T* x, i64 n, float s) {
    EW_GRID_STRIDE(i, n) { st(x, i, ld(x, i) * s); }
}
KD_EXPORT(ew_scale, (T * x, i64 n, float s), ew_scale_impl<T>(x, n, s))

// part[blockIdx.x] = Σ x[i]² over the block's grid-stride share of x[n],
// squared and summed in double. The host adds the partials in float64.
template <typename T>
__device__ void ew_sum_squares_impl(double* part, const T* x, i64 n) {
    double acc = 0.0;
    EW_GRID_STRIDE(i, n) {
        double v = (double)ld(x, i);
        acc += v * v;
    }
    acc = block_sum_d(acc);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}
KD_EXPORT(ew_sum_squares, (double* part, const T* x, i64 n), ew_sum_squares_impl<T>(part, x, n))

// ---------------------------------------------------------------- embedding

// out[N, C] = table[ids[n], :] for table [V, C]; one block per row
// (grid-stride over rows). A row whose id is outside [0, V) is set to zero:
// the device validates nothing, but it never reads out of bounds.
template <typename T>
__device__ void ew_embedding_impl(T* out, const int* ids, const T* table, int N, int C, int V) {
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        int id = ids[n];
        bool ok = id >= 0 && id < V;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            st(out, (i64)n * C + c, ok ? ld(table, (i64)id * C + c) : 0.0f);
        }
    }
}
KD_EXPORT(ew_embedding, (T * out, const int* ids, const T* table, int N, int C, int V),
          ew_embedding_impl<T>(out, ids, table, N, C, V))

// dtable[ids[n], :] += dout[n, :] with atomic adds (repeated ids add up; the
// order of fp32 additions between rows sharing an id is not fixed). Ids
// outside [0, V) are skipped.
template <typename T>
__device__ void ew_embedding_backward_impl(T* dtable, const T* dout, const int* ids, int N, int C, int V) {
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        int id = ids[n];
        if (id < 0 || id >= V) continue;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            atomic_add(dtable, (i64)id * C + c, ld(dout, (i64)n * C + c));
        }
    }
}
KD_EXPORT(ew_embedding_backward, (T * dtable, const T* dout, const int* ids, int N, int C, int V),
          ew_embedding_backward_impl<T>(dtable, dout, ids, N, C, V))

// ---------------------------------------------------------------- RoPE

// x[N, H·HD] rotated in place, "rotate half" layout: in each head element
// i < HD/2 pairs with i + HD/2 and turns by angle pos[n]·invFreq[i]; sign is
// +1 for the forward, −1 for the inverse (backward). One block per row
// (grid-stride over rows); dynamic shared memory holds cos and sin of the
// row's HD/2 angles (2·half floats).
//
// The angle is the fp32 product float(pos)·invFreq[i], as the CPU (and
// transformers) form it; its sine and cosine are taken in double and rounded
// to float, exactly as the CPU's math.Sincos of float64(angle).
template <typename T>
__device__ void ew_rope_impl(T* x, const int* pos, const float* invFreq, int N, int H, int half, float sign) {
    extern __shared__ float ew_rope_cs[];
    float* cs = ew_rope_cs;
    float* sn = ew_rope_cs + half;
    int HD = 2 * half;
    int pairs = H * half;
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        __syncthreads(); // the previous row's cs/sn are no longer read
        float p = (float)pos[n];
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            float angle = __fmul_rn(p, invFreq[i]);
            double s, c;
            sincos((double)angle, &s, &c);
            cs[i] = (float)c;
            sn[i] = sign * (float)s;
        }
        __syncthreads();
        i64 base = (i64)n * H * HD;
        for (int j = threadIdx.x; j < pairs; j += blockDim.x) {
            int h = j / half, i = j - h * half;
            i64 ia = base + (i64)h * HD + i, ib = ia + half;
            float a = ld(x, ia), b = ld(x, ib);
            st(x, ia, a * cs[i] - b * sn[i]);
            st(x, ib, b * cs[i] + a * sn[i]);
        }
    }
}
KD_EXPORT(ew_rope, (T * x, const int* pos, const float* invFreq, int N, int H, int half, float sign),
          ew_rope_impl<T>(x, pos, invFreq, N, H, half, sign))

// ---------------------------------------------------------------- SwiGLU, GELU

// out = silu(gate)·up = gate/(1 + e^(−gate))·up, all [n].
template <typename T>
__device__ void ew_swiglu_impl(T* out, const T* gate, const T* up, i64 n) {
    EW_GRID_STRIDE(i, n) {
        float g = ld(gate, i);
        st(out, i, g / (1.0f + expf(-g)) * ld(up, i));
    }
}
KD_EXPORT(ew_swiglu, (T * out, const T* gate, const T* up, i64 n), ew_swiglu_impl<T>(out, gate, up, n))

// dgate += dout·up·σ(g)·(1 + g·(1−σ(g))), dup += dout·g·σ(g).
template <typename T>
__device__ void ew_swiglu_backward_impl(T* dgate, T* dup, const T* dout, const T* gate, const T* up, i64 n) {
    EW_GRID_STRIDE(i, n) {
        float g = ld(gate, i), u = ld(up, i), d = ld(dout, i);
        float s = 1.0f / (1.0f + expf(-g));
        st(dgate, i, ld(dgate, i) + d * u * s * (1.0f + g * (1.0f - s)));
        st(dup, i, ld(dup, i) + d * g * s);
    }
}
KD_EXPORT(ew_swiglu_backward, (T * dgate, T* dup, const T* dout, const T* gate, const T* up, i64 n),
          ew_swiglu_backward_impl<T>(dgate, dup, dout, gate, up, n))

// EW_GELU_C is float32(sqrt(2/π)), the CPU's F(geluC).
#define EW_GELU_C ((float)0.7978845608028654)

// out = ½x(1 + tanh(√(2/π)(x + 0.044715x³))), GPT-2's gelu_new.
template <typename T>
__device__ void ew_gelu_impl(T* out, const T* x, i64 n) {
    EW_GRID_STRIDE(i, n) {
        float v = ld(x, i);
        st(out, i, 0.5f * v * (1.0f + tanhf(EW_GELU_C * (v + 0.044715f * v * v * v))));
    }
}
KD_EXPORT(ew_gelu, (T * out, const T* x, i64 n), ew_gelu_impl<T>(out, x, n))

// dx += dout·(½(1 + t) + ½x(1 − t²)·c(1 + 3·0.044715x²)), t = tanh(c(x + 0.044715x³)).
template <typename T>
__device__ void ew_gelu_backward_impl(T* dx, const T* dout, const T* x, i64 n) {
    EW_GRID_STRIDE(i, n) {
        float v = ld(x, i);
        float u = EW_GELU_C * (v + 0.044715f * v * v * v);
        float t = tanhf(u);
        float du = EW_GELU_C * (1.0f + 0.134145f * v * v);
        st(dx, i, ld(dx, i) + ld(dout, i) * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du));
    }
}
KD_EXPORT(ew_gelu_backward, (T * dx, const T* dout, const T* x, i64 n), ew_gelu_backward_impl<T>(dx, dout, x, n))

// ---------------------------------------------------------------- AdamW

// One AdamW step on param[n] (storage T) from grad[n] (storage T) with fp32
// moments m[n], v[n], as torch.optim.AdamW: p ← p·decay; m ← β₁m + (1−β₁)g;
// v ← β₂v + (1−β₂)g²; p ← p − stepSize·m/(√v/bc2 + ε). The host computes
// stepSize = lr/(1−β₁ᵗ), decay = 1 − lr·wd and bc2 = √(1−β₂ᵗ) in float64.
template <typename T>
__device__ void ew_adamw_impl(T* param, const T* grad, float* m, float* v, i64 n,
                              float stepSize, float decay, float b1, float b2, float eps, float bc2) {
    EW_GRID_STRIDE(i, n) {
        float g = ld(grad, i);
        float p = ld(param, i) * decay;
        float mi = b1 * m[i] + (1.0f - b1) * g;
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        p -= stepSize * mi / (sqrtf(vi) / bc2 + eps);
        st(param, i, p);
    }
}
KD_EXPORT(ew_adamw,
          (T * param, const T* grad, float* m, float* v, i64 n, float stepSize, float decay, float b1, float b2,
           float eps, float bc2),
          ew_adamw_impl<T>(param, grad, m, v, n, stepSize, decay, b1, b2, eps, bc2))

// ---------------------------------------------------------------- casts

// dst[n] = bf16(src[n]), rounding to nearest even (NaN stays NaN).
extern "C" __global__ void ew_cast_f32_bf16(bf16* dst, const float* src, i64 n) {
    EW_GRID_STRIDE(i, n) { dst[i] = f32_to_bf16(src[i]); }
}

// dst[n] = float(src[n]), exact.
extern "C" __global__ void ew_cast_bf16_f32(float* dst, const bf16* src, i64 n) {
    EW_GRID_STRIDE(i, n) { dst[i] = bf16_to_f32(src[i]); }
}
