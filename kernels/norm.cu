// norm.cu: RMSNorm and LayerNorm, forward and backward, as runtime/cpu/norm.go
// computes them, in fp32 with storage T (float or bf16) for x, out, w, b, dx,
// dw, db, dout; the saved statistics mean[N] and rstd[N] are always float.
//
// Shapes: x, out, dout, dx [N, C]; w, b, dw, db [C]; mean, rstd [N].
//
// Row kernels use one block per row (grid-stride over rows); blockDim.x is a
// multiple of 32. The weight gradients are column sums over the rows, done
// deterministically in two kernels: norm_*_partial writes one fp32 partial
// per (chunk of rows, column) and norm_colsum adds the partials in order into
// the gradient.

// ---------------------------------------------------------------- RMSNorm

// out = x·rstd·w, rstd[n] = 1/sqrt(mean(x[n]²) + eps).
template <typename T>
__device__ void norm_rmsnorm_impl(T* out, float* rstd, const T* x, const T* w, int N, int C, float eps) {
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        const i64 row = (i64)n * C;
        float ss = 0.0f;
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            float v = ld(x, row + i);
            ss += v * v;
        }
        ss = block_sum(ss);
        float r = 1.0f / sqrtf(ss / (float)C + eps);
        if (threadIdx.x == 0) rstd[n] = r;
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            st(out, row + i, ld(x, row + i) * r * ld(w, i));
        }
    }
}
KD_EXPORT_BOUNDED(norm_rmsnorm, 1024, (T * out, float* rstd, const T* x, const T* w, int N, int C, float eps),
          norm_rmsnorm_impl<T>(out, rstd, x, w, N, C, eps))

// dx += rstd·(g − y·mean(g·y)) with g = dout·w, y = x·rstd.
template <typename T>
__device__ void norm_rmsnorm_backward_dx_impl(T* dx, const T* dout, const T* x, const T* w, const float* rstd, int N,
                                              int C) {
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        const i64 row = (i64)n * C;
        const float r = rstd[n];
        float dot = 0.0f;
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            dot += ld(dout, row + i) * ld(w, i) * ld(x, row + i) * r;
        }
        dot = block_sum(dot) / (float)C;
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            float d = ld(dout, row + i), xv = ld(x, row + i);
            st(dx, row + i, ld(dx, row + i) + r * (d * ld(w, i) - xv * r * dot));
        }
    }
}
KD_EXPORT_BOUNDED(norm_rmsnorm_backward_dx, 1024, (T * dx, const T* dout, const T* x, const T* w, const float* rstd, int N, int C),
          norm_rmsnorm_backward_dx_impl<T>(dx, dout, x, w, rstd, N, C))

// sum = a + b, out = sum·rstd·w, rstd[n] = 1/sqrt(mean(sum[n]²) + eps): the
// residual add and the next RMSNorm in one pass over the row. sum may alias
// a or b. 16-byte vectors where every row is aligned (C a multiple of 8).
template <typename T>
__device__ void norm_add_rmsnorm_impl(T* sum, T* out, float* rstd, const T* a, const T* b, const T* w, int N, int C,
                                      float eps) {
    bool vec = C % 8 == 0 && kd_aligned16(sum) && kd_aligned16(out) && kd_aligned16(a) && kd_aligned16(b) &&
               kd_aligned16(w);
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        const i64 row = (i64)n * C;
        float ss = 0.0f;
        if (vec) {
            for (int i = 8 * threadIdx.x; i < C; i += 8 * blockDim.x) {
                float x[8], y[8];
                ld8(a, row + i, x);
                ld8(b, row + i, y);
                for (int k = 0; k < 8; k++) x[k] += y[k];
                st8(sum, row + i, x);
                ld8(sum, row + i, x); // as stored: what the backward will read
                for (int k = 0; k < 8; k++) ss += x[k] * x[k];
            }
        } else {
            for (int i = threadIdx.x; i < C; i += blockDim.x) {
                st(sum, row + i, ld(a, row + i) + ld(b, row + i));
                float v = ld(sum, row + i);
                ss += v * v;
            }
        }
        ss = block_sum(ss); // its barriers order the writes of sum before the reads below
        float r = 1.0f / sqrtf(ss / (float)C + eps);
        if (threadIdx.x == 0) rstd[n] = r;
        if (vec) {
            for (int i = 8 * threadIdx.x; i < C; i += 8 * blockDim.x) {
                float x[8], g[8];
                ld8(sum, row + i, x);
                ld8(w, i, g);
                for (int k = 0; k < 8; k++) x[k] = x[k] * r * g[k];
                st8(out, row + i, x);
            }
        } else {
            for (int i = threadIdx.x; i < C; i += blockDim.x) st(out, row + i, ld(sum, row + i) * r * ld(w, i));
        }
    }
}
KD_EXPORT_BOUNDED(norm_add_rmsnorm, 1024,
                  (T * sum, T* out, float* rstd, const T* a, const T* b, const T* w, int N, int C, float eps),
                  norm_add_rmsnorm_impl<T>(sum, out, rstd, a, b, w, N, C, eps))

// The RMSNorm backward in one pass over the rows: dx += rstd·(g − y·mean(g·y))
// as norm_rmsnorm_backward_dx, and the block's column partials of dw,
// part[blockIdx.x, c] = Σ over its rows of dout·x·rstd (rows n = blockIdx.x,
// blockIdx.x + gridDim.x, … in order: deterministic), for norm_colsum.
// Dynamic shared memory: C floats.
template <typename T>
__device__ void norm_rmsnorm_backward_impl(T* dx, float* part, const T* dout, const T* x, const T* w,
                                           const float* rstd, int N, int C) {
    extern __shared__ float norm_acc[];
    for (int i = threadIdx.x; i < C; i += blockDim.x) norm_acc[i] = 0.0f;
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        const i64 row = (i64)n * C;
        const float r = rstd[n];
        float dot = 0.0f;
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            float d = ld(dout, row + i), xv = ld(x, row + i);
            dot += d * ld(w, i) * xv * r;
            norm_acc[i] += d * xv * r; // this thread's own columns
        }
        dot = block_sum(dot) / (float)C;
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            float d = ld(dout, row + i), xv = ld(x, row + i);
            st(dx, row + i, ld(dx, row + i) + r * (d * ld(w, i) - xv * r * dot));
        }
    }
    for (int i = threadIdx.x; i < C; i += blockDim.x) part[(i64)blockIdx.x * C + i] = norm_acc[i];
}
KD_EXPORT_BOUNDED(norm_rmsnorm_backward, 1024,
                  (T * dx, float* part, const T* dout, const T* x, const T* w, const float* rstd, int N, int C),
                  norm_rmsnorm_backward_impl<T>(dx, part, dout, x, w, rstd, N, C))

// NORM_COL_ROWS is blockDim.y of the partial kernels: blockDim is
// (32, NORM_COL_ROWS); a warp reads 32 consecutive columns of one row.
#define NORM_COL_ROWS 8

// Column partials over the rows [chunk·rows, min(N, (chunk+1)·rows)) of chunk
// blockIdx.y, for the 32 columns of blockIdx.x:
//   pw[chunk, c] = Σ dout·(x − mean)·rstd   (mean == 0: Σ dout·x·rstd, RMSNorm)
//   pb[chunk, c] = Σ dout                   (when pb != 0, LayerNorm's db)
// The block's threadIdx.y partials are added in a fixed order.
template <typename T>
__device__ void norm_partial_impl(float* pw, float* pb, const T* dout, const T* x, const float* mean,
                                  const float* rstd, int N, int C, int rows) {
    __shared__ float sw[NORM_COL_ROWS][33];
    __shared__ float sb[NORM_COL_ROWS][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * rows;
    int r1 = min(N, r0 + rows);
    float aw = 0.0f, ab = 0.0f;
    if (c < C) {
        for (int r = r0 + threadIdx.y; r < r1; r += NORM_COL_ROWS) {
            i64 k = (i64)r * C + c;
            float d = ld(dout, k);
            if (mean) {
                aw += d * (ld(x, k) - mean[r]) * rstd[r];
            } else {
                aw += d * ld(x, k) * rstd[r];
            }
            ab += d;
        }
    }
    sw[threadIdx.y][threadIdx.x] = aw;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float tw = 0.0f, tb = 0.0f;
        for (int k = 0; k < NORM_COL_ROWS; k++) {
            tw += sw[k][threadIdx.x];
            tb += sb[k][threadIdx.x];
        }
        pw[(i64)blockIdx.y * C + c] = tw;
        if (pb) pb[(i64)blockIdx.y * C + c] = tb;
    }
}
KD_EXPORT(norm_partial,
          (float* pw, float* pb, const T* dout, const T* x, const float* mean, const float* rstd, int N, int C,
           int rows),
          norm_partial_impl<T>(pw, pb, dout, x, mean, rstd, N, C, rows))

// dst[C] += Σ_k part[k, C] for k in [0, chunks), summed in order.
template <typename T>
__device__ void norm_colsum_impl(T* dst, const float* part, int chunks, int C) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x) {
        float t = 0.0f;
        for (int k = 0; k < chunks; k++) t += part[(i64)k * C + c];
        st(dst, c, ld(dst, c) + t);
    }
}
KD_EXPORT(norm_colsum, (T * dst, const float* part, int chunks, int C), norm_colsum_impl<T>(dst, part, chunks, C))

// ---------------------------------------------------------------- LayerNorm

// out = (x − mean)·rstd·w + b, mean[n] = mean(x[n]), rstd[n] =
// 1/sqrt(mean((x[n] − mean)²) + eps) (two passes over the row, as the CPU).
template <typename T>
__device__ void norm_layernorm_impl(T* out, float* mean, float* rstd, const T* x, const T* w, const T* b, int N, int C,
                                    float eps) {
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        const i64 row = (i64)n * C;
        float s = 0.0f;
        for (int i = threadIdx.x; i < C; i += blockDim.x) s += ld(x, row + i);
        const float m = block_sum(s) / (float)C;
        float vs = 0.0f;
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            float dv = ld(x, row + i) - m;
            vs += dv * dv;
        }
        vs = block_sum(vs);
        const float r = 1.0f / sqrtf(vs / (float)C + eps);
        if (threadIdx.x == 0) {
            mean[n] = m;
            rstd[n] = r;
        }
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            st(out, row + i, (ld(x, row + i) - m) * r * ld(w, i) + ld(b, i));
        }
    }
}
KD_EXPORT_BOUNDED(norm_layernorm, 1024, (T * out, float* mean, float* rstd, const T* x, const T* w, const T* b, int N, int C, float eps),
          norm_layernorm_impl<T>(out, mean, rstd, x, w, b, N, C, eps))

// dx += rstd·(g − mean(g) − xhat·mean(g·xhat)), xhat = (x − mean)·rstd, g = dout·w.
template <typename T>
__device__ void norm_layernorm_backward_dx_impl(T* dx, const T* dout, const T* x, const T* w, const float* mean,
                                                const float* rstd, int N, int C) {
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        const i64 row = (i64)n * C;
        const float m = mean[n], r = rstd[n];
        float sg = 0.0f, sgx = 0.0f;
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            float g = ld(dout, row + i) * ld(w, i);
            sg += g;
            sgx += g * (ld(x, row + i) - m) * r;
        }
        sg = block_sum(sg) / (float)C;
        sgx = block_sum(sgx) / (float)C;
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            float xhat = (ld(x, row + i) - m) * r;
            st(dx, row + i, ld(dx, row + i) + r * (ld(dout, row + i) * ld(w, i) - sg - xhat * sgx));
        }
    }
}
KD_EXPORT_BOUNDED(norm_layernorm_backward_dx, 1024,
          (T * dx, const T* dout, const T* x, const T* w, const float* mean, const float* rstd, int N, int C),
          norm_layernorm_backward_dx_impl<T>(dx, dout, x, w, mean, rstd, N, C))
