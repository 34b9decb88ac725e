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
// is written, by the same thread). 16-byte vectors where aligned.
template <typename T>
__device__ void ew_add_impl(T* dst, const T* a, const T* b, i64 n) {
    bool al = kd_aligned16(dst) && kd_aligned16(a) && kd_aligned16(b);
    KD_VEC8_LOOP(v, n, al) {
        float x[8], y[8];
        ld8(a, 8 * v, x);
        ld8(b, 8 * v, y);
        for (int k = 0; k < 8; k++) x[k] += y[k];
        st8(dst, 8 * v, x);
    }
    KD_TAIL_LOOP(i, n, al) { st(dst, i, ld(a, i) + ld(b, i)); }
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
template <typename G, typename T>
__device__ void ew_embedding_backward_impl(G* dtable, const T* dout, const int* ids, int N, int C, int V) {
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        int id = ids[n];
        if (id < 0 || id >= V) continue;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            atomic_add(dtable, (i64)id * C + c, ld(dout, (i64)n * C + c));
        }
    }
}
KD_EXPORT(ew_embedding_backward, (T * dtable, const T* dout, const int* ids, int N, int C, int V),
          (ew_embedding_backward_impl<T, T>(dtable, dout, ids, N, C, V)))
// The same into an F32 table gradient from dout of storage T (mixed
// precision keeps parameter gradients in F32).
KD_EXPORT(ew_embedding_backward_f32grad, (float* dtable, const T* dout, const int* ids, int N, int C, int V),
          (ew_embedding_backward_impl<float, T>(dtable, dout, ids, N, C, V)))

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

// ---------------------------------------------------------------- q/k/v epilogue

// ew_rope_angles fills cs, sn [half] with the cosines and sines of row n's
// angles pos[n]·invFreq[i] (as ew_rope), sn negated when sign < 0. Every
// thread of the block calls it; it ends with a barrier.
__device__ __forceinline__ void ew_rope_angles(float* cs, float* sn, const int* pos, const float* invFreq, int n,
                                               int half, float sign) {
    __syncthreads(); // the previous row's angles are no longer read
    float p = (float)pos[n];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        double s, c;
        sincos((double)__fmul_rn(p, invFreq[i]), &s, &c);
        cs[i] = (float)c;
        sn[i] = sign * (float)s;
    }
    __syncthreads();
}

// The epilogue of the fused q/k/v projection qkv [N, W] (W = NH·HD +
// 2·NKV·HD: q's columns, then k's, then v's) in one pass: q [N, NH·HD], k,
// v [N, NKV·HD] = the column blocks of qkv + bias [W] (null: none), q and k
// then rotated by RoPE as ew_rope does (invFreq null: no rotation; half =
// HD/2). One block per row (grid-stride), dynamic shared memory 2·half
// floats.
template <typename T>
__device__ void ew_qkv_bias_rope_impl(T* q, T* k, T* v, const T* qkv, const T* bias, const int* pos,
                                      const float* invFreq, int N, int NH, int NKV, int HD) {
    extern __shared__ float ew_qkv_cs[];
    int half = HD / 2, qw = NH * HD, kvw = NKV * HD, W = qw + 2 * kvw;
    float* cs = ew_qkv_cs;
    float* sn = ew_qkv_cs + half;
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        if (invFreq != nullptr) ew_rope_angles(cs, sn, pos, invFreq, n, half, 1.0f);
        const i64 src = (i64)n * W;
        for (int which = 0; which < 2; which++) {
            T* x = which == 0 ? q : k;
            int H = which == 0 ? NH : NKV, off = which == 0 ? 0 : qw;
            i64 dst = (i64)n * H * HD;
            if (invFreq == nullptr) {
                for (int j = threadIdx.x; j < H * HD; j += blockDim.x)
                    st(x, dst + j, ld(qkv, src + off + j) + (bias != nullptr ? ld(bias, off + j) : 0.0f));
                continue;
            }
            for (int j = threadIdx.x; j < H * half; j += blockDim.x) {
                int h = j / half, i = j - h * half, ca = h * HD + i, cb = ca + half;
                float a = ld(qkv, src + off + ca), b = ld(qkv, src + off + cb);
                if (bias != nullptr) a += ld(bias, off + ca), b += ld(bias, off + cb);
                st(x, dst + ca, a * cs[i] - b * sn[i]);
                st(x, dst + cb, b * cs[i] + a * sn[i]);
            }
        }
        i64 dst = (i64)n * kvw;
        for (int j = threadIdx.x; j < kvw; j += blockDim.x)
            st(v, dst + j, ld(qkv, src + qw + kvw + j) + (bias != nullptr ? ld(bias, qw + kvw + j) : 0.0f));
    }
}
KD_EXPORT(ew_qkv_bias_rope,
          (T * q, T* k, T* v, const T* qkv, const T* bias, const int* pos, const float* invFreq, int N, int NH, int NKV,
           int HD),
          ew_qkv_bias_rope_impl<T>(q, k, v, qkv, bias, pos, invFreq, N, NH, NKV, HD))

// The backward of ew_qkv_bias_rope: dqkv [N, W] = [dq rotated back, dk
// rotated back, dv] (invFreq null: not rotated) and, when part is not null,
// the column sums of dqkv (as stored) over the block's rows written to
// part[blockIdx.x, W] for ew_colsum: the bias gradient. One block per chunk
// of rows (grid-stride, in a fixed order: deterministic). Dynamic shared
// memory: 2·half floats, plus W floats of partials when part is not null.
template <typename T>
__device__ void ew_qkv_bias_rope_backward_impl(T* dqkv, float* part, const T* dq, const T* dk, const T* dv,
                                               const int* pos, const float* invFreq, int N, int NH, int NKV, int HD) {
    extern __shared__ float ew_qkv_cs[];
    int half = HD / 2, qw = NH * HD, kvw = NKV * HD, W = qw + 2 * kvw;
    float* cs = ew_qkv_cs;
    float* sn = ew_qkv_cs + half;
    float* acc = ew_qkv_cs + 2 * half; // [W] when part != null
    if (part != nullptr)
        for (int j = threadIdx.x; j < W; j += blockDim.x) acc[j] = 0.0f;
    __syncthreads(); // a thread may add to columns another zeroed
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        if (invFreq != nullptr) ew_rope_angles(cs, sn, pos, invFreq, n, half, -1.0f);
        const i64 dst = (i64)n * W;
        for (int which = 0; which < 2; which++) {
            const T* x = which == 0 ? dq : dk;
            int H = which == 0 ? NH : NKV, off = which == 0 ? 0 : qw;
            i64 src = (i64)n * H * HD;
            if (invFreq == nullptr) {
                for (int j = threadIdx.x; j < H * HD; j += blockDim.x) {
                    st(dqkv, dst + off + j, ld(x, src + j));
                    if (part != nullptr) acc[off + j] += ld(dqkv, dst + off + j);
                }
                continue;
            }
            for (int j = threadIdx.x; j < H * half; j += blockDim.x) {
                int h = j / half, i = j - h * half, ca = h * HD + i, cb = ca + half;
                float a = ld(x, src + ca), b = ld(x, src + cb);
                st(dqkv, dst + off + ca, a * cs[i] - b * sn[i]);
                st(dqkv, dst + off + cb, b * cs[i] + a * sn[i]);
                if (part != nullptr) {
                    // The bias gradient sums the values as stored.
                    acc[off + ca] += ld(dqkv, dst + off + ca);
                    acc[off + cb] += ld(dqkv, dst + off + cb);
                }
            }
        }
        for (int j = threadIdx.x; j < kvw; j += blockDim.x) {
            st(dqkv, dst + qw + kvw + j, ld(dv, (i64)n * kvw + j));
            if (part != nullptr) acc[qw + kvw + j] += ld(dqkv, dst + qw + kvw + j);
        }
    }
    if (part != nullptr) {
        __syncthreads();
        for (int j = threadIdx.x; j < W; j += blockDim.x) part[(i64)blockIdx.x * W + j] = acc[j];
    }
}
KD_EXPORT(ew_qkv_bias_rope_backward,
          (T * dqkv, float* part, const T* dq, const T* dk, const T* dv, const int* pos, const float* invFreq, int N,
           int NH, int NKV, int HD),
          ew_qkv_bias_rope_backward_impl<T>(dqkv, part, dq, dk, dv, pos, invFreq, N, NH, NKV, HD))

// ---------------------------------------------------------------- SwiGLU, GELU

// out = silu(gate)·up = gate/(1 + e^(−gate))·up, all [n]. 16-byte vectors
// where aligned.
__device__ __forceinline__ float ew_silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }
template <typename T>
__device__ void ew_swiglu_impl(T* out, const T* gate, const T* up, i64 n) {
    bool al = kd_aligned16(out) && kd_aligned16(gate) && kd_aligned16(up);
    KD_VEC8_LOOP(v, n, al) {
        float g[8], u[8];
        ld8(gate, 8 * v, g);
        ld8(up, 8 * v, u);
        for (int k = 0; k < 8; k++) g[k] = ew_silu_mul(g[k], u[k]);
        st8(out, 8 * v, g);
    }
    KD_TAIL_LOOP(i, n, al) { st(out, i, ew_silu_mul(ld(gate, i), ld(up, i))); }
}
KD_EXPORT(ew_swiglu, (T * out, const T* gate, const T* up, i64 n), ew_swiglu_impl<T>(out, gate, up, n))

// dgate = dout·up·σ(g)·(1 + g·(1−σ(g))), dup = dout·g·σ(g): written, not
// accumulated (the caller needs no memset). 16-byte vectors where aligned.
__device__ __forceinline__ void ew_swiglu_grad(float g, float u, float d, float* dg, float* du) {
    float s = 1.0f / (1.0f + expf(-g));
    *dg = d * u * s * (1.0f + g * (1.0f - s));
    *du = d * g * s;
}
template <typename T>
__device__ void ew_swiglu_backward_impl(T* dgate, T* dup, const T* dout, const T* gate, const T* up, i64 n) {
    bool al = kd_aligned16(dgate) && kd_aligned16(dup) && kd_aligned16(dout) && kd_aligned16(gate) && kd_aligned16(up);
    KD_VEC8_LOOP(v, n, al) {
        float g[8], u[8], d[8], dg[8], du[8];
        ld8(gate, 8 * v, g);
        ld8(up, 8 * v, u);
        ld8(dout, 8 * v, d);
        for (int k = 0; k < 8; k++) ew_swiglu_grad(g[k], u[k], d[k], &dg[k], &du[k]);
        st8(dgate, 8 * v, dg);
        st8(dup, 8 * v, du);
    }
    KD_TAIL_LOOP(i, n, al) {
        float dg, du;
        ew_swiglu_grad(ld(gate, i), ld(up, i), ld(dout, i), &dg, &du);
        st(dgate, i, dg);
        st(dup, i, du);
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
