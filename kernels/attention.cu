// attention.cu: causal grouped-query attention (Backend.Attention,
// AttentionBackward, AttentionDecode), computing what runtime/cpu/attention.go
// and decode.go compute, with the same algorithm: FlashAttention-2's online
// softmax over tiles of keys, saving only the output and one log-sum-exp per
// query row, and a backward that recomputes the probabilities from it.
//
// These are the scalar (fp32 FMA) kernels: every head size and both storage
// types. BF16 storage at head sizes 64, 80, 96 and 128 runs on tensor cores
// instead (attention_mma.cu); the decode step is always here.
//
// Layouts (storage T = float or bf16 for q, k, v, out and their gradients):
//   q, out, dq, dout  [B, T, NH, HD]
//   k, v, dk, dv      [B, T, NKV, HD]
//   lse, D            [B, NH, T] float
//   kc, vc (decode)   [B·Tmax, NKV·HD]
// Query head h reads key/value head h / (NH/NKV). Query t sees keys s with
// lo(t) ≤ s ≤ t, lo(t) = max(t − window + 1 when window > 0 else 0,
// key_start[b] when key_start is not null); a query with lo(t) > t (left
// padding) sees nothing: its output row is zero, its lse −Inf, and it adds
// nothing to any gradient.

// ATTN_ROWS is the number of warps (query rows, or key rows in the dK/dV
// kernel) of one block of the scalar kernels; ATTN_BK (at most 32) the
// number of keys, or queries, in one tile: lane j of a warp handles entry j.
#define ATTN_ROWS 4

// attn_fwd: grid (ceil(T/ATTN_ROWS), NH, B), block 32·ATTN_ROWS, dynamic
// shared memory attn_fwd_smem(HD, bk) bytes. Warp w of block (x, h, b) owns
// query t = x·ATTN_ROWS + w: it keeps the running maximum m and sum l of its
// scores and the unnormalized output acc (in shared memory, HD floats),
// rescaled whenever the maximum grows. Keys come bk at a time through shared
// memory, as float.
template <typename T>
__device__ void attn_fwd_impl(T* out, float* lse, const T* q, const T* k, const T* v, const int* key_start, int Tn,
                              int NH, int NKV, int HD, float scale, int window, int bk) {
    extern __shared__ float attn_sm[];
    int h = blockIdx.y, b = blockIdx.z, kh = h / (NH / NKV);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int t0 = blockIdx.x * ATTN_ROWS, t = t0 + w;
    int tl = min(t0 + ATTN_ROWS, Tn) - 1; // the block's last query
    int kst = HD + 1;                     // padded rows: lane j reads row j
    float* sK = attn_sm;
    float* sV = sK + bk * kst;
    float* sQ = sV + bk * HD + w * HD;
    float* acc = sV + bk * HD + ATTN_ROWS * HD + w * HD;
    float* sP = sV + bk * HD + 2 * ATTN_ROWS * HD + w * 32; // the warp's probabilities
    i64 qs = (i64)NH * HD, ks = (i64)NKV * HD;
    const T* kb = k + (i64)b * Tn * ks + (i64)kh * HD;
    const T* vb = v + (i64)b * Tn * ks + (i64)kh * HD;
    bool valid = t < Tn;
    int first = valid ? attn_first(t, window, key_start, b) : 1;
    i64 qo = ((i64)b * Tn + t) * qs + (i64)h * HD;
    for (int d = lane; d < HD; d += 32) {
        sQ[d] = valid ? ld(q, qo + d) : 0.0f;
        acc[d] = 0.0f;
    }
    float m = KD_NEG_INF, l = 0.0f;
    for (int s0 = attn_first(t0, window, key_start, b); s0 <= tl; s0 += bk) {
        int n = min(bk, tl + 1 - s0);
        __syncthreads(); // the previous tile is no longer read
        for (int i = threadIdx.x; i < n * HD; i += blockDim.x) {
            int j = i / HD, d = i % HD;
            sK[j * kst + d] = ld(kb, (i64)(s0 + j) * ks + d);
            sV[j * HD + d] = ld(vb, (i64)(s0 + j) * ks + d);
        }
        __syncthreads();
        // Lane j scores key s0 + j.
        int s = s0 + lane;
        bool vis = valid && lane < n && s >= first && s <= t;
        float sc = KD_NEG_INF;
        if (vis) {
            float dot = 0.0f;
            for (int d = 0; d < HD; d++) dot += sQ[d] * sK[lane * kst + d];
            sc = dot * scale;
        }
        float mn = fmaxf(m, warp_max(sc));
        if (mn == KD_NEG_INF) continue; // nothing visible yet (warp-uniform)
        float alpha = expf(m - mn);
        float p = vis ? expf(sc - mn) : 0.0f;
        l = l * alpha + warp_sum(p);
        m = mn;
        sP[lane] = p;
        __syncwarp();
        for (int d = lane; d < HD; d += 32) {
            float a = acc[d] * alpha;
            for (int j = 0; j < n; j++) a += sP[j] * sV[j * HD + d];
            acc[d] = a;
        }
    }
    if (!valid) return;
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int d = lane; d < HD; d += 32) st(out, qo + d, acc[d] * inv);
    if (lane == 0) lse[((i64)b * NH + h) * Tn + t] = l > 0.0f ? m + logf(l) : KD_NEG_INF;
}
KD_EXPORT(attn_fwd,
          (T * out, float* lse, const T* q, const T* k, const T* v, const int* key_start, int Tn, int NH, int NKV,
           int HD, float scale, int window, int bk),
          attn_fwd_impl<T>(out, lse, q, k, v, key_start, Tn, NH, NKV, HD, scale, window, bk))

// attn_bwd_dot: D[b, h, t] = Σ_d dout[b, t, h, d]·out[b, t, h, d], one warp
// per row (grid-stride over the B·T·NH rows), rows laid out as lse.
template <typename T>
__device__ void attn_bwd_dot_impl(float* D, const T* dout, const T* out, int B, int Tn, int NH, int HD) {
    int lane = threadIdx.x & 31;
    i64 rows = (i64)B * Tn * NH;
    for (i64 r = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += ((i64)gridDim.x * blockDim.x) >> 5) {
        float s = 0.0f;
        for (int d = lane; d < HD; d += 32) s += ld(dout, r * HD + d) * ld(out, r * HD + d);
        s = warp_sum(s);
        int h = (int)(r % NH);
        i64 bt = r / NH;
        int t = (int)(bt % Tn), b = (int)(bt / Tn);
        if (lane == 0) D[((i64)b * NH + h) * Tn + t] = s;
    }
}
KD_EXPORT(attn_bwd_dot, (float* D, const T* dout, const T* out, int B, int Tn, int NH, int HD),
          attn_bwd_dot_impl<T>(D, dout, out, B, Tn, NH, HD))

// attn_bwd_dq: grid (ceil(T/ATTN_ROWS), NH, B), block 32·ATTN_ROWS, dynamic
// shared memory attn_bwd_dq_smem(HD, bk) bytes. Warp w owns query t: for the
// keys it sees, P = exp(scale·q·k − lse), dS = P·(dout·v − D), and it
// writes dq[t] = scale·Σ_s dS[s]·k[s].
template <typename T>
__device__ void attn_bwd_dq_impl(T* dq, const T* dout, const float* lse, const float* D, const T* q, const T* k,
                                 const T* v, const int* key_start, int Tn, int NH, int NKV, int HD, float scale,
                                 int window, int bk) {
    extern __shared__ float attn_sm[];
    int h = blockIdx.y, b = blockIdx.z, kh = h / (NH / NKV);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int t0 = blockIdx.x * ATTN_ROWS, t = t0 + w;
    int tl = min(t0 + ATTN_ROWS, Tn) - 1;
    int kst = HD + 1;
    float* sK = attn_sm;
    float* sV = sK + bk * kst;
    float* sQ = sV + bk * kst + w * HD;
    float* sO = sV + bk * kst + ATTN_ROWS * HD + w * HD; // dout's row
    float* acc = sV + bk * kst + 2 * ATTN_ROWS * HD + w * HD;
    float* sS = sV + bk * kst + 3 * ATTN_ROWS * HD + w * 32; // the warp's dS
    i64 qs = (i64)NH * HD, ks = (i64)NKV * HD;
    const T* kb = k + (i64)b * Tn * ks + (i64)kh * HD;
    const T* vb = v + (i64)b * Tn * ks + (i64)kh * HD;
    bool valid = t < Tn;
    int first = valid ? attn_first(t, window, key_start, b) : 1;
    i64 qo = ((i64)b * Tn + t) * qs + (i64)h * HD;
    i64 ro = ((i64)b * NH + h) * Tn + t;
    float L = valid ? lse[ro] : 0.0f, Dt = valid ? D[ro] : 0.0f;
    for (int d = lane; d < HD; d += 32) {
        sQ[d] = valid ? ld(q, qo + d) : 0.0f;
        sO[d] = valid ? ld(dout, qo + d) : 0.0f;
        acc[d] = 0.0f;
    }
    for (int s0 = attn_first(t0, window, key_start, b); s0 <= tl; s0 += bk) {
        int n = min(bk, tl + 1 - s0);
        __syncthreads();
        for (int i = threadIdx.x; i < n * HD; i += blockDim.x) {
            int j = i / HD, d = i % HD;
            sK[j * kst + d] = ld(kb, (i64)(s0 + j) * ks + d);
            sV[j * kst + d] = ld(vb, (i64)(s0 + j) * ks + d);
        }
        __syncthreads();
        int s = s0 + lane;
        float ds = 0.0f;
        if (valid && lane < n && s >= first && s <= t) {
            float qk = 0.0f, dp = 0.0f;
            for (int d = 0; d < HD; d++) {
                qk += sQ[d] * sK[lane * kst + d];
                dp += sO[d] * sV[lane * kst + d];
            }
            float p = expf(qk * scale - L);
            ds = p * (dp - Dt);
        }
        sS[lane] = ds;
        __syncwarp();
        for (int d = lane; d < HD; d += 32) {
            float a = acc[d];
            for (int j = 0; j < n; j++) a += sS[j] * sK[j * kst + d];
            acc[d] = a;
        }
    }
    if (!valid) return;
    for (int d = lane; d < HD; d += 32) st(dq, qo + d, scale * acc[d]);
}
KD_EXPORT(attn_bwd_dq,
          (T * dq, const T* dout, const float* lse, const float* D, const T* q, const T* k, const T* v,
           const int* key_start, int Tn, int NH, int NKV, int HD, float scale, int window, int bk),
          attn_bwd_dq_impl<T>(dq, dout, lse, D, q, k, v, key_start, Tn, NH, NKV, HD, scale, window, bk))

// attn_bwd_dkv: grid (ceil(T/ATTN_ROWS), NKV, B), block 32·ATTN_ROWS,
// dynamic shared memory attn_bwd_dkv_smem(HD, bk) bytes. Warp w owns key s
// of key/value head kh; over the query heads h of kh's group and the queries
// t that see s (bk at a time through shared memory), with P and dS as in
// attn_bwd_dq, it writes dv[s] = Σ P·dout[t] and dk[s] = scale·Σ dS·q[t].
template <typename T>
__device__ void attn_bwd_dkv_impl(T* dk, T* dv, const T* dout, const float* lse, const float* D, const T* q,
                                  const T* k, const T* v, const int* key_start, int Tn, int NH, int NKV, int HD,
                                  float scale, int window, int bk) {
    extern __shared__ float attn_sm[];
    int kh = blockIdx.y, b = blockIdx.z, group = NH / NKV;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int s0 = blockIdx.x * ATTN_ROWS, s = s0 + w;
    int sl = min(s0 + ATTN_ROWS, Tn) - 1;
    int kst = HD + 1;
    float* sQ = attn_sm;
    float* sO = sQ + bk * kst;
    float* sL = sO + bk * kst; // lse of the tile's queries
    float* sD = sL + 32;       // D of the tile's queries
    float* sK = sD + 32 + w * HD;
    float* sV = sD + 32 + ATTN_ROWS * HD + w * HD;
    float* accK = sD + 32 + 2 * ATTN_ROWS * HD + w * HD;
    float* accV = sD + 32 + 3 * ATTN_ROWS * HD + w * HD;
    float* sP = sD + 32 + 4 * ATTN_ROWS * HD + w * 64; // the warp's P, then dS
    float* sS = sP + 32;
    i64 qs = (i64)NH * HD, ks = (i64)NKV * HD;
    bool valid = s < Tn && (key_start == nullptr || s >= key_start[b]);
    i64 ko = ((i64)b * Tn + s) * ks + (i64)kh * HD;
    for (int d = lane; d < HD; d += 32) {
        sK[d] = valid ? ld(k, ko + d) : 0.0f;
        sV[d] = valid ? ld(v, ko + d) : 0.0f;
        accK[d] = 0.0f;
        accV[d] = 0.0f;
    }
    // Keys before key_start[b] are seen by no query: a block of them only
    // writes zeros.
    int tEnd = (key_start != nullptr && sl < key_start[b]) ? s0 : attn_last_query(sl, window, Tn);
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        const T* qb = q + (i64)b * Tn * qs + (i64)h * HD;
        const T* ob = dout + (i64)b * Tn * qs + (i64)h * HD;
        const float* Lb = lse + ((i64)b * NH + h) * Tn;
        const float* Db = D + ((i64)b * NH + h) * Tn;
        for (int u0 = s0; u0 < tEnd; u0 += bk) {
            int n = min(bk, tEnd - u0);
            __syncthreads();
            for (int i = threadIdx.x; i < n * HD; i += blockDim.x) {
                int j = i / HD, d = i % HD;
                sQ[j * kst + d] = ld(qb, (i64)(u0 + j) * qs + d);
                sO[j * kst + d] = ld(ob, (i64)(u0 + j) * qs + d);
            }
            for (int j = threadIdx.x; j < n; j += blockDim.x) {
                sL[j] = Lb[u0 + j];
                sD[j] = Db[u0 + j];
            }
            __syncthreads();
            // Lane j handles query u0 + j.
            int t = u0 + lane;
            float p = 0.0f, ds = 0.0f;
            if (valid && lane < n && t >= s && s >= attn_first(t, window, key_start, b)) {
                float qk = 0.0f, dp = 0.0f;
                for (int d = 0; d < HD; d++) {
                    qk += sQ[lane * kst + d] * sK[d];
                    dp += sO[lane * kst + d] * sV[d];
                }
                p = expf(qk * scale - sL[lane]);
                ds = p * (dp - sD[lane]);
            }
            sP[lane] = p;
            sS[lane] = ds;
            __syncwarp();
            for (int d = lane; d < HD; d += 32) {
                float ak = accK[d], av = accV[d];
                for (int j = 0; j < n; j++) {
                    av += sP[j] * sO[j * kst + d];
                    ak += sS[j] * sQ[j * kst + d];
                }
                accK[d] = ak;
                accV[d] = av;
            }
        }
    }
    if (s >= Tn) return;
    for (int d = lane; d < HD; d += 32) {
        st(dk, ko + d, scale * accK[d]);
        st(dv, ko + d, accV[d]);
    }
}
KD_EXPORT(attn_bwd_dkv,
          (T * dk, T* dv, const T* dout, const float* lse, const float* D, const T* q, const T* k, const T* v,
           const int* key_start, int Tn, int NH, int NKV, int HD, float scale, int window, int bk),
          attn_bwd_dkv_impl<T>(dk, dv, dout, lse, D, q, k, v, key_start, Tn, NH, NKV, HD, scale, window, bk))

// attn_row computes one query row: p[s] = softmax_s(scale · q·k[s]) for
// s in [lo, hi], and out[d] = Σ_s p[s]·v[s, d]. q and out are the row's HD
// elements; k and v point at key 0 of the row's key/value head, key s at
// offset s·kstride. p is float, indexed by key position (p[lo … hi] are
// written; nothing else is). lo ≤ hi. Shared memory: sm holds HD + blockDim.x
// floats. blockDim.x is a multiple of 32. Every thread of the block calls it.
template <typename T>
__device__ void attn_row(const T* q, const T* k, const T* v, i64 kstride, int lo, int hi, float scale,
                         float* p, T* out, int HD, float* sm) {
    float* qs = sm;
    float* red = sm + HD;
    int tid = threadIdx.x, nt = blockDim.x, lane = tid & 31, warp = tid >> 5, nw = nt >> 5;
    for (int d = tid; d < HD; d += nt) qs[d] = ld(q, d);
    __syncthreads();
    // Scores: one warp per key, lanes over the head dimension.
    float mx = KD_NEG_INF;
    for (int s = lo + warp; s <= hi; s += nw) {
        const T* kr = k + (i64)s * kstride;
        float dot = 0.0f;
        for (int d = lane; d < HD; d += 32) dot += qs[d] * ld(kr, d);
        dot = warp_sum(dot) * scale;
        if (lane == 0) p[s] = dot;
        mx = fmaxf(mx, dot);
    }
    __syncthreads(); // the scores in p are visible to the whole block
    mx = block_max(mx);
    float sum = 0.0f;
    for (int s = lo + tid; s <= hi; s += nt) {
        float e = expf(p[s] - mx);
        p[s] = e;
        sum += e;
    }
    sum = block_sum(sum);
    for (int s = lo + tid; s <= hi; s += nt) p[s] = p[s] / sum;
    __syncthreads();
    // out = p·V: groups of HD threads split the keys, then one sum per d.
    if (HD > 0 && HD <= nt) {
        int G = nt / HD, g = tid / HD, d = tid % HD;
        float acc = 0.0f;
        if (g < G)
            for (int s = lo + g; s <= hi; s += G) acc += p[s] * ld(v, (i64)s * kstride + d);
        red[tid] = acc;
        __syncthreads();
        if (tid < HD) {
            float o = 0.0f;
            for (int j = 0; j < G; j++) o += red[j * HD + tid];
            st(out, tid, o);
        }
    } else {
        for (int d = tid; d < HD; d += nt) {
            float acc = 0.0f;
            for (int s = lo; s <= hi; s++) acc += p[s] * ld(v, (i64)s * kstride + d);
            st(out, d, acc);
        }
    }
}

// attn_decode: grid (NH, B), dynamic shared memory (HD + blockDim.x) floats;
// w is float scratch [B, NH, Tmax]. Block (h, b) computes out[b, h, :] for
// the query at position at[b] (read here, so that the launch is the same at
// every step and a recorded step can be replayed) against kc/vc rows
// b·Tmax + s. A position outside [0, Tmax) gives zeros: the device never
// reads outside the cache (the CPU backend, the reference, panics on it).
template <typename T>
__device__ void attn_decode_impl(T* out, const T* q, const T* kc, const T* vc, float* w, const int* key_start,
                                 const int* at, int NH, int NKV, int HD, int Tmax, float scale, int window) {
    extern __shared__ float attn_sm[];
    int h = blockIdx.x, b = blockIdx.y;
    int kh = h / (NH / NKV);
    i64 ks = (i64)NKV * HD;
    i64 qo = ((i64)b * NH + h) * HD;
    int pos = at[b];
    int lo = attn_first(pos, window, key_start, b);
    if (pos < 0 || pos >= Tmax || lo > pos) {
        for (int d = threadIdx.x; d < HD; d += blockDim.x) st(out, qo + d, 0.0f);
        return;
    }
    float* p = w + ((i64)b * NH + h) * Tmax;
    i64 ko = (i64)b * Tmax * ks + (i64)kh * HD;
    attn_row<T>(q + qo, kc + ko, vc + ko, ks, lo, pos, scale, p, out + qo, HD, attn_sm);
}
KD_EXPORT(attn_decode,
          (T * out, const T* q, const T* kc, const T* vc, float* w, const int* key_start, const int* at, int NH,
           int NKV, int HD, int Tmax, float scale, int window),
          attn_decode_impl<T>(out, q, kc, vc, w, key_start, at, NH, NKV, HD, Tmax, scale, window))

// kv_append: cache[b·Tmax + at[b] + j, :] = src[b·n + j, :] for the B
// sequences' n new rows each of C elements (grid-stride over the B·n rows).
// Rows that would fall outside sequence b's Tmax rows are skipped.
template <typename T>
__device__ void kv_append_impl(T* cache, const T* src, const int* at, int B, int n, int C, int Tmax) {
    for (int r = blockIdx.x; r < B * n; r += gridDim.x) {
        int b = r / n, j = r % n;
        int row = at[b] + j;
        if (row < 0 || row >= Tmax) continue;
        i64 dst = ((i64)b * Tmax + row) * C, from = (i64)r * C;
        for (int c = threadIdx.x; c < C; c += blockDim.x) cache[dst + c] = src[from + c];
    }
}
KD_EXPORT(kv_append, (T * cache, const T* src, const int* at, int B, int n, int C, int Tmax),
          kv_append_impl<T>(cache, src, at, B, n, C, Tmax))
