// attention_mma.cu: FlashAttention-2 on the tensor cores for BF16 storage
// at head sizes 64, 80, 96 and 128 (sm_80 and later): the same algorithm,
// layouts and masking as attention.cu's scalar kernels (see there), with
// the products on mma.sync m16n8k16 (bf16 inputs, fp32 accumulation) and the
// softmax statistics in fp32. The probabilities P and dS are rounded to
// bf16 as the A operand of the products that use them, as in FlashAttention-2.
//
// Tiles of 64 query rows (16 per warp, 4 warps) and 64 keys go through
// shared memory, rows padded by 8 bf16 so that ldmatrix reads them without
// bank conflicts, loaded with 16-byte vectors (q, k, v, dout and the output
// rows are 16-byte aligned: the backend checks). Scores are kept in the
// log2 domain: x = scale·log2(e)·q·k, P = 2^(x − m).
//
// Kernels (grid, block 128, dynamic shared memory from attn_mma_smem_*):
//   attn_mma_fwd_HD     (ceil(T/64), NH, B): out, lse
//   attn_mma_bwd_dq_HD  (ceil(T/64), NH, B): dq (written)
//   attn_mma_bwd_dkv_HD (ceil(T/64), NKV, B): dk, dv (written), summing the
//                        query heads of the group: no atomics, deterministic
// The backward needs D = rowsum(dout ⊙ out) from attention.cu's attn_bwd_dot.

#define AMMA_WARPS 4
#define AMMA_LOG2E 1.4426950408889634f

// amma_load_tile copies rows [r0, r0 + ROWS) of a [*, rowStride] bf16 tensor
// (column offset already applied to g) into shared memory s [ROWS][HD + 8],
// zero-filling rows at or past Tn (their products must be 0, not garbage).
template <int HD, int ROWS>
__device__ __forceinline__ void amma_load_tile(bf16* s, const bf16* g, i64 rowStride, int r0, int Tn) {
    constexpr int CH = HD / 8, SROW = HD + 8;
    for (int i = threadIdx.x; i < ROWS * CH; i += blockDim.x) {
        int r = i / CH, c = i % CH;
        kd_u4 v = {0u, 0u, 0u, 0u};
        if (r0 + r < Tn) v = *(const kd_u4*)(g + (i64)(r0 + r) * rowStride + c * 8);
        *(kd_u4*)(s + r * SROW + c * 8) = v;
    }
}

// amma_frag_a loads the A fragment of the 16×16 tile at rows r0, columns k0
// of a row-major shared tile with row stride SROW (elements).
template <int SROW>
__device__ __forceinline__ void amma_frag_a(unsigned* a, const bf16* s, int r0, int k0) {
    int l = threadIdx.x & 31;
    ldmatrix_x4(a, s + (r0 + (l & 7) + ((l >> 3) & 1) * 8) * SROW + k0 + (l >> 4) * 8);
}

// amma_frag_b_nk loads the B fragments of two 16×8 tiles, B[k][n] = Y[n][k]
// for n in [n0, n0+8) (b[0], b[1]) and [n0+8, n0+16) (b[2], b[3]), k in
// [k0, k0+16), from a row-major shared tile Y (rows n, columns k).
template <int SROW>
__device__ __forceinline__ void amma_frag_b_nk(unsigned* b, const bf16* s, int n0, int k0) {
    int l = threadIdx.x & 31;
    ldmatrix_x4(b, s + (n0 + (l & 7) + (l >> 4) * 8) * SROW + k0 + ((l >> 3) & 1) * 8);
}

// amma_frag_b_kn is amma_frag_b_nk for B[k][n] = Z[k][n] stored row-major
// with rows k (the transposing load).
template <int SROW>
__device__ __forceinline__ void amma_frag_b_kn(unsigned* b, const bf16* s, int k0, int n0) {
    int l = threadIdx.x & 31;
    ldmatrix_x4_trans(b, s + (k0 + (l & 7) + ((l >> 3) & 1) * 8) * SROW + n0 + (l >> 4) * 8);
}

// amma_c_to_a packs the accumulators of 16×8 tiles 2kk and 2kk+1 of c
// (scaled elementwise by nothing: they hold the values) into the bf16 A
// fragment of 16×16 tile kk (see common.cuh).
__device__ __forceinline__ void amma_c_to_a(unsigned* a, const float (*c)[4], int kk) {
    a[0] = pack_bf16(c[2 * kk][0], c[2 * kk][1]);
    a[1] = pack_bf16(c[2 * kk][2], c[2 * kk][3]);
    a[2] = pack_bf16(c[2 * kk + 1][0], c[2 * kk + 1][1]);
    a[3] = pack_bf16(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}

// amma_quad_max and amma_quad_sum reduce over the four lanes that share a
// row of an accumulator tile (lanes 4g … 4g+3).
__device__ __forceinline__ float amma_quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float amma_quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// amma_store_rows writes accumulator tiles c[NO][4] (16 rows of the warp,
// row r0 + g and r0 + g + 8) times mul into a [*, rowStride] bf16 tensor,
// skipping rows at or past Tn (mul per row: ma, mb).
template <int NO>
__device__ __forceinline__ void amma_store_rows(bf16* g, i64 rowStride, int r0, int Tn, const float (*c)[4], float ma,
                                                float mb) {
    int l = threadIdx.x & 31, gr = l >> 2, q = l & 3;
    int ra = r0 + gr, rb = ra + 8;
#pragma unroll
    for (int j = 0; j < NO; j++) {
        int col = 8 * j + 2 * q;
        if (ra < Tn) *(unsigned*)(g + (i64)ra * rowStride + col) = pack_bf16(c[j][0] * ma, c[j][1] * ma);
        if (rb < Tn) *(unsigned*)(g + (i64)rb * rowStride + col) = pack_bf16(c[j][2] * mb, c[j][3] * mb);
    }
}

// ---------------------------------------------------------------- forward

// Block (x, h, b) owns query tile it = gridDim.x − 1 − x (the longest rows
// first, so that causal work is spread over the GPU), rows t0 … t0+63; warp
// w owns rows t0 + 16w …; each lane rows ra = t0 + 16w + g and rb = ra + 8.
// Shared memory: sQV [64][HD+8] holds Q (read into registers once), then
// each tile's V; sK [64][HD+8] each tile's K.
template <int HD>
__device__ void attn_mma_fwd_impl(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                                  const int* key_start, int Tn, int NH, int NKV, float scale, int window) {
    constexpr int SROW = HD + 8, KS = HD / 16, NO = HD / 8;
    extern __shared__ float amma_sm[];
    bf16* sQV = (bf16*)amma_sm;
    bf16* sK = sQV + 64 * SROW;
    int h = blockIdx.y, b = blockIdx.z, kh = h / (NH / NKV);
    int t0 = (gridDim.x - 1 - blockIdx.x) * 64;
    int l = threadIdx.x & 31, w = threadIdx.x >> 5, g = l >> 2, qd = l & 3;
    i64 qs = (i64)NH * HD, ks = (i64)NKV * HD;
    const bf16* qb = q + (i64)b * Tn * qs + (i64)h * HD;
    const bf16* kb = k + (i64)b * Tn * ks + (i64)kh * HD;
    const bf16* vb = v + (i64)b * Tn * ks + (i64)kh * HD;
    int ra = t0 + 16 * w + g, rb = ra + 8;
    int fa = attn_first(ra, window, key_start, b), fb = attn_first(rb, window, key_start, b);
    int tl = min(t0 + 63, Tn - 1);
    float c2 = scale * AMMA_LOG2E;

    amma_load_tile<HD, 64>(sQV, qb, qs, t0, Tn);
    __syncthreads();
    unsigned qf[KS][4];
#pragma unroll
    for (int kk = 0; kk < KS; kk++) amma_frag_a<SROW>(qf[kk], sQV, 16 * w, 16 * kk);

    float o[NO][4];
#pragma unroll
    for (int j = 0; j < NO; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float ma = KD_NEG_INF, mb = KD_NEG_INF, la = 0.0f, lb = 0.0f;
    int kfirst = attn_first(t0, window, key_start, b), klast_free = attn_first(tl, window, key_start, b);
    for (int s0 = kfirst; s0 <= tl; s0 += 64) {
        __syncthreads(); // Q's fragments are read, or the previous tile is done
        amma_load_tile<HD, 64>(sK, kb, ks, s0, Tn);
        amma_load_tile<HD, 64>(sQV, vb, ks, s0, Tn);
        __syncthreads();
        // S = Q·Kᵀ for the warp's 16 rows and the tile's 64 keys.
        float s[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
                unsigned bf[4];
                amma_frag_b_nk<SROW>(bf, sK, 16 * jj, 16 * kk);
                mma_bf16_16816(s[2 * jj], qf[kk], bf, s[2 * jj]);
                mma_bf16_16816(s[2 * jj + 1], qf[kk], bf + 2, s[2 * jj + 1]);
            }
        }
        // Scale into the log2 domain and mask, where the tile has any key
        // some row of the block must not see.
        bool masked = s0 + 63 > t0 || s0 < klast_free || s0 + 64 > Tn;
        float xa = KD_NEG_INF, xb = KD_NEG_INF;
#pragma unroll
        for (int j = 0; j < 8; j++) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int sk = s0 + 8 * j + 2 * qd + (i & 1);
                int t = i < 2 ? ra : rb, f = i < 2 ? fa : fb;
                float x = s[j][i] * c2;
                if (masked && (sk > t || sk < f || sk >= Tn)) x = KD_NEG_INF;
                s[j][i] = x;
                if (i < 2) xa = fmaxf(xa, x);
                else xb = fmaxf(xb, x);
            }
        }
        float na = fmaxf(ma, amma_quad_max(xa)), nb = fmaxf(mb, amma_quad_max(xb));
        // A row that has seen no key yet keeps P = 0 (2^(−Inf − 0)).
        float ua = na == KD_NEG_INF ? 0.0f : na, ub = nb == KD_NEG_INF ? 0.0f : nb;
        float aa = exp2f(ma - ua), ab = exp2f(mb - ub);
        ma = na, mb = nb;
        la *= aa, lb *= ab;
#pragma unroll
        for (int j = 0; j < NO; j++) {
            o[j][0] *= aa, o[j][1] *= aa;
            o[j][2] *= ab, o[j][3] *= ab;
        }
#pragma unroll
        for (int j = 0; j < 8; j++) {
            s[j][0] = exp2f(s[j][0] - ua), s[j][1] = exp2f(s[j][1] - ua);
            s[j][2] = exp2f(s[j][2] - ub), s[j][3] = exp2f(s[j][3] - ub);
            la += s[j][0] + s[j][1];
            lb += s[j][2] + s[j][3];
        }
        // O += P·V.
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            unsigned pf[4];
            amma_c_to_a(pf, s, kk);
#pragma unroll
            for (int jj = 0; jj < NO / 2; jj++) {
                unsigned bf[4];
                amma_frag_b_kn<SROW>(bf, sQV, 16 * kk, 16 * jj);
                mma_bf16_16816(o[2 * jj], pf, bf, o[2 * jj]);
                mma_bf16_16816(o[2 * jj + 1], pf, bf + 2, o[2 * jj + 1]);
            }
        }
    }
    la = amma_quad_sum(la), lb = amma_quad_sum(lb);
    amma_store_rows<NO>(out + (i64)b * Tn * qs + (i64)h * HD, qs, t0 + 16 * w, Tn, o, la > 0.0f ? 1.0f / la : 0.0f,
                        lb > 0.0f ? 1.0f / lb : 0.0f);
    if (qd == 0) {
        float* L = lse + ((i64)b * NH + h) * Tn;
        const float ln2 = 0.6931471805599453f;
        if (ra < Tn) L[ra] = la > 0.0f ? (ma + log2f(la)) * ln2 : KD_NEG_INF;
        if (rb < Tn) L[rb] = lb > 0.0f ? (mb + log2f(lb)) * ln2 : KD_NEG_INF;
    }
}

// ---------------------------------------------------------------- backward

// amma_l2 is a row's lse in the log2 domain, +Inf for a row that sees no key
// (so that P = 2^(x − l2) is 0 there).
__device__ __forceinline__ float amma_l2(float lse) { return lse == KD_NEG_INF ? KD_INF : lse * AMMA_LOG2E; }

// Block (x, h, b) owns query rows t0 … t0+63 as the forward does and writes
// dq = scale·Σ_s dS·k[s] with P = 2^(x − l2), dS = P·(dout·v − D). Shared
// memory: sQ, sO (dout), sK, sV, each [64][HD+8].
template <int HD>
__device__ void attn_mma_bwd_dq_impl(bf16* dq, const bf16* dout, const float* lse, const float* D, const bf16* q,
                                     const bf16* k, const bf16* v, const int* key_start, int Tn, int NH, int NKV,
                                     float scale, int window) {
    constexpr int SROW = HD + 8, KS = HD / 16, NO = HD / 8;
    extern __shared__ float amma_sm[];
    bf16* sQ = (bf16*)amma_sm;
    bf16* sO = sQ + 64 * SROW;
    bf16* sK = sO + 64 * SROW;
    bf16* sV = sK + 64 * SROW;
    int h = blockIdx.y, b = blockIdx.z, kh = h / (NH / NKV);
    int t0 = (gridDim.x - 1 - blockIdx.x) * 64;
    int l = threadIdx.x & 31, w = threadIdx.x >> 5, g = l >> 2, qd = l & 3;
    i64 qs = (i64)NH * HD, ks = (i64)NKV * HD;
    const bf16* kb = k + (i64)b * Tn * ks + (i64)kh * HD;
    const bf16* vb = v + (i64)b * Tn * ks + (i64)kh * HD;
    int ra = t0 + 16 * w + g, rb = ra + 8;
    int fa = attn_first(ra, window, key_start, b), fb = attn_first(rb, window, key_start, b);
    int tl = min(t0 + 63, Tn - 1);
    float c2 = scale * AMMA_LOG2E;
    const float* Lr = lse + ((i64)b * NH + h) * Tn;
    const float* Dr = D + ((i64)b * NH + h) * Tn;
    float l2a = ra < Tn ? amma_l2(Lr[ra]) : KD_INF, l2b = rb < Tn ? amma_l2(Lr[rb]) : KD_INF;
    float da = ra < Tn ? Dr[ra] : 0.0f, db = rb < Tn ? Dr[rb] : 0.0f;

    amma_load_tile<HD, 64>(sQ, q + (i64)b * Tn * qs + (i64)h * HD, qs, t0, Tn);
    amma_load_tile<HD, 64>(sO, dout + (i64)b * Tn * qs + (i64)h * HD, qs, t0, Tn);
    float acc[NO][4];
#pragma unroll
    for (int j = 0; j < NO; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    int kfirst = attn_first(t0, window, key_start, b), klast_free = attn_first(tl, window, key_start, b);
    for (int s0 = kfirst; s0 <= tl; s0 += 64) {
        __syncthreads();
        amma_load_tile<HD, 64>(sK, kb, ks, s0, Tn);
        amma_load_tile<HD, 64>(sV, vb, ks, s0, Tn);
        __syncthreads();
        float s[8][4], dp[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
            dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.0f;
        }
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            unsigned qf[4], of[4];
            amma_frag_a<SROW>(qf, sQ, 16 * w, 16 * kk);
            amma_frag_a<SROW>(of, sO, 16 * w, 16 * kk);
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
                unsigned bf[4];
                amma_frag_b_nk<SROW>(bf, sK, 16 * jj, 16 * kk);
                mma_bf16_16816(s[2 * jj], qf, bf, s[2 * jj]);
                mma_bf16_16816(s[2 * jj + 1], qf, bf + 2, s[2 * jj + 1]);
                amma_frag_b_nk<SROW>(bf, sV, 16 * jj, 16 * kk);
                mma_bf16_16816(dp[2 * jj], of, bf, dp[2 * jj]);
                mma_bf16_16816(dp[2 * jj + 1], of, bf + 2, dp[2 * jj + 1]);
            }
        }
        bool masked = s0 + 63 > t0 || s0 < klast_free || s0 + 64 > Tn;
#pragma unroll
        for (int j = 0; j < 8; j++) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int sk = s0 + 8 * j + 2 * qd + (i & 1);
                int t = i < 2 ? ra : rb, f = i < 2 ? fa : fb;
                float p = exp2f(s[j][i] * c2 - (i < 2 ? l2a : l2b));
                if (masked && (sk > t || sk < f || sk >= Tn)) p = 0.0f;
                s[j][i] = p * (dp[j][i] - (i < 2 ? da : db)); // dS
            }
        }
        // dQ += dS·K.
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            unsigned af[4];
            amma_c_to_a(af, s, kk);
#pragma unroll
            for (int jj = 0; jj < NO / 2; jj++) {
                unsigned bf[4];
                amma_frag_b_kn<SROW>(bf, sK, 16 * kk, 16 * jj);
                mma_bf16_16816(acc[2 * jj], af, bf, acc[2 * jj]);
                mma_bf16_16816(acc[2 * jj + 1], af, bf + 2, acc[2 * jj + 1]);
            }
        }
    }
    amma_store_rows<NO>(dq + (i64)b * Tn * qs + (i64)h * HD, qs, t0 + 16 * w, Tn, acc, scale, scale);
}

// Block (x, kh, b) owns keys s0 … s0+63 of key/value head kh (warp w keys
// s0 + 16w …, each lane keys sa = s0 + 16w + g and sb = sa + 8). Over the
// query heads of the group and the query tiles of BT rows that see a key of
// the block it accumulates, with Pᵀ and dSᵀ computed key-major,
//   dV += Pᵀ·dO,  dK += dSᵀ·Q,
// and writes dv and scale·dk. Shared memory: sK, sV [64][HD+8], sQ, sO
// [BT][HD+8], sL, sD [BT] floats.
template <int HD>
__device__ void attn_mma_bwd_dkv_impl(bf16* dk, bf16* dv, const bf16* dout, const float* lse, const float* D,
                                      const bf16* q, const bf16* k, const bf16* v, const int* key_start, int Tn,
                                      int NH, int NKV, float scale, int window) {
    constexpr int SROW = HD + 8, KS = HD / 16, NO = HD / 8, BT = HD <= 64 ? 64 : 32, NT = BT / 8;
    extern __shared__ float amma_sm[];
    bf16* sK = (bf16*)amma_sm;
    bf16* sV = sK + 64 * SROW;
    bf16* sQ = sV + 64 * SROW;
    bf16* sO = sQ + BT * SROW;
    float* sL = (float*)(sO + BT * SROW);
    float* sD = sL + BT;
    int kh = blockIdx.y, b = blockIdx.z, group = NH / NKV;
    int s0 = blockIdx.x * 64;
    int l = threadIdx.x & 31, w = threadIdx.x >> 5, g = l >> 2, qd = l & 3;
    i64 qs = (i64)NH * HD, ks = (i64)NKV * HD;
    int sa = s0 + 16 * w + g, sb = sa + 8;
    int kstart = key_start != nullptr ? key_start[b] : 0;
    float c2 = scale * AMMA_LOG2E;

    amma_load_tile<HD, 64>(sK, k + (i64)b * Tn * ks + (i64)kh * HD, ks, s0, Tn);
    amma_load_tile<HD, 64>(sV, v + (i64)b * Tn * ks + (i64)kh * HD, ks, s0, Tn);
    float ak[NO][4], av[NO][4];
#pragma unroll
    for (int j = 0; j < NO; j++) {
        ak[j][0] = ak[j][1] = ak[j][2] = ak[j][3] = 0.0f;
        av[j][0] = av[j][1] = av[j][2] = av[j][3] = 0.0f;
    }
    // Queries that see a key of the block: t ≥ s0, t − s < window; none when
    // every key is left padding.
    int sl = min(s0 + 63, Tn - 1);
    int tEnd = sl < kstart ? s0 : attn_last_query(sl, window, Tn);
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        const bf16* qb = q + (i64)b * Tn * qs + (i64)h * HD;
        const bf16* ob = dout + (i64)b * Tn * qs + (i64)h * HD;
        const float* Lr = lse + ((i64)b * NH + h) * Tn;
        const float* Dr = D + ((i64)b * NH + h) * Tn;
        for (int t0 = s0; t0 < tEnd; t0 += BT) {
            __syncthreads();
            amma_load_tile<HD, BT>(sQ, qb, qs, t0, Tn);
            amma_load_tile<HD, BT>(sO, ob, qs, t0, Tn);
            for (int i = threadIdx.x; i < BT; i += blockDim.x) {
                int t = t0 + i;
                sL[i] = t < Tn ? amma_l2(Lr[t]) : KD_INF;
                sD[i] = t < Tn ? Dr[t] : 0.0f;
            }
            __syncthreads();
            // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ for the warp's 16 keys and BT queries.
            float st[NT][4], dpt[NT][4];
#pragma unroll
            for (int j = 0; j < NT; j++) {
                st[j][0] = st[j][1] = st[j][2] = st[j][3] = 0.0f;
                dpt[j][0] = dpt[j][1] = dpt[j][2] = dpt[j][3] = 0.0f;
            }
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                unsigned kf[4], vf[4];
                amma_frag_a<SROW>(kf, sK, 16 * w, 16 * kk);
                amma_frag_a<SROW>(vf, sV, 16 * w, 16 * kk);
#pragma unroll
                for (int jj = 0; jj < NT / 2; jj++) {
                    unsigned bf[4];
                    amma_frag_b_nk<SROW>(bf, sQ, 16 * jj, 16 * kk);
                    mma_bf16_16816(st[2 * jj], kf, bf, st[2 * jj]);
                    mma_bf16_16816(st[2 * jj + 1], kf, bf + 2, st[2 * jj + 1]);
                    amma_frag_b_nk<SROW>(bf, sO, 16 * jj, 16 * kk);
                    mma_bf16_16816(dpt[2 * jj], vf, bf, dpt[2 * jj]);
                    mma_bf16_16816(dpt[2 * jj + 1], vf, bf + 2, dpt[2 * jj + 1]);
                }
            }
            // Pᵀ and dSᵀ (over dpt). Query t sees key s iff first(t) ≤ s ≤ t.
            bool masked = t0 < s0 + 63 || (window > 0 && t0 + BT - window > s0) || s0 < kstart || t0 + BT > Tn ||
                          s0 + 64 > Tn;
#pragma unroll
            for (int j = 0; j < NT; j++) {
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int col = 8 * j + 2 * qd + (i & 1), t = t0 + col;
                    int s = i < 2 ? sa : sb;
                    float p = exp2f(st[j][i] * c2 - sL[col]);
                    if (masked && (s > t || t >= Tn || s >= Tn || s < attn_first(t, window, key_start, b))) p = 0.0f;
                    st[j][i] = p;
                    dpt[j][i] = p * (dpt[j][i] - sD[col]);
                }
            }
            // dV += Pᵀ·dO, dK += dSᵀ·Q.
#pragma unroll
            for (int kk = 0; kk < BT / 16; kk++) {
                unsigned pf[4], sf[4];
                amma_c_to_a(pf, st, kk);
                amma_c_to_a(sf, dpt, kk);
#pragma unroll
                for (int jj = 0; jj < NO / 2; jj++) {
                    unsigned bf[4];
                    amma_frag_b_kn<SROW>(bf, sO, 16 * kk, 16 * jj);
                    mma_bf16_16816(av[2 * jj], pf, bf, av[2 * jj]);
                    mma_bf16_16816(av[2 * jj + 1], pf, bf + 2, av[2 * jj + 1]);
                    amma_frag_b_kn<SROW>(bf, sQ, 16 * kk, 16 * jj);
                    mma_bf16_16816(ak[2 * jj], sf, bf, ak[2 * jj]);
                    mma_bf16_16816(ak[2 * jj + 1], sf, bf + 2, ak[2 * jj + 1]);
                }
            }
        }
    }
    i64 ko = (i64)b * Tn * ks + (i64)kh * HD;
    amma_store_rows<NO>(dv + ko, ks, s0 + 16 * w, Tn, av, 1.0f, 1.0f);
    amma_store_rows<NO>(dk + ko, ks, s0 + 16 * w, Tn, ak, scale, scale);
}

// One kernel per head size (the fragments' loops unroll over HD), each
// launched with 128 threads.
extern "C" __global__ void __launch_bounds__(128)
attn_mma_fwd_64(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* key_start, int Tn,
                 int NH, int NKV, float scale, int window) {
    attn_mma_fwd_impl<64>(out, lse, q, k, v, key_start, Tn, NH, NKV, scale, window);
}
extern "C" __global__ void __launch_bounds__(128)
attn_mma_bwd_dq_64(bf16* dq, const bf16* dout, const float* lse, const float* D, const bf16* q, const bf16* k,
                    const bf16* v, const int* key_start, int Tn, int NH, int NKV, float scale, int window) {
    attn_mma_bwd_dq_impl<64>(dq, dout, lse, D, q, k, v, key_start, Tn, NH, NKV, scale, window);
}
extern "C" __global__ void __launch_bounds__(128)
attn_mma_bwd_dkv_64(bf16* dk, bf16* dv, const bf16* dout, const float* lse, const float* D, const bf16* q,
                     const bf16* k, const bf16* v, const int* key_start, int Tn, int NH, int NKV, float scale,
                     int window) {
    attn_mma_bwd_dkv_impl<64>(dk, dv, dout, lse, D, q, k, v, key_start, Tn, NH, NKV, scale, window);
}
extern "C" __global__ void __launch_bounds__(128)
attn_mma_fwd_80(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* key_start, int Tn,
                 int NH, int NKV, float scale, int window) {
    attn_mma_fwd_impl<80>(out, lse, q, k, v, key_start, Tn, NH, NKV, scale, window);
}
extern "C" __global__ void __launch_bounds__(128)
attn_mma_bwd_dq_80(bf16* dq, const bf16* dout, const float* lse, const float* D, const bf16* q, const bf16* k,
                    const bf16* v, const int* key_start, int Tn, int NH, int NKV, float scale, int window) {
    attn_mma_bwd_dq_impl<80>(dq, dout, lse, D, q, k, v, key_start, Tn, NH, NKV, scale, window);
}
extern "C" __global__ void __launch_bounds__(128)
attn_mma_bwd_dkv_80(bf16* dk, bf16* dv, const bf16* dout, const float* lse, const float* D, const bf16* q,
                     const bf16* k, const bf16* v, const int* key_start, int Tn, int NH, int NKV, float scale,
                     int window) {
    attn_mma_bwd_dkv_impl<80>(dk, dv, dout, lse, D, q, k, v, key_start, Tn, NH, NKV, scale, window);
}
extern "C" __global__ void __launch_bounds__(128)
attn_mma_fwd_96(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* key_start, int Tn,
                 int NH, int NKV, float scale, int window) {
    attn_mma_fwd_impl<96>(out, lse, q, k, v, key_start, Tn, NH, NKV, scale, window);
}
extern "C" __global__ void __launch_bounds__(128)
attn_mma_bwd_dq_96(bf16* dq, const bf16* dout, const float* lse, const float* D, const bf16* q, const bf16* k,
                    const bf16* v, const int* key_start, int Tn, int NH, int NKV, float scale, int window) {
    attn_mma_bwd_dq_impl<96>(dq, dout, lse, D, q, k, v, key_start, Tn, NH, NKV, scale, window);
}
extern "C" __global__ void __launch_bounds__(128)
attn_mma_bwd_dkv_96(bf16* dk, bf16* dv, const bf16* dout, const float* lse, const float* D, const bf16* q,
                     const bf16* k, const bf16* v, const int* key_start, int Tn, int NH, int NKV, float scale,
                     int window) {
    attn_mma_bwd_dkv_impl<96>(dk, dv, dout, lse, D, q, k, v, key_start, Tn, NH, NKV, scale, window);
}
extern "C" __global__ void __launch_bounds__(128)
attn_mma_fwd_128(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* key_start, int Tn,
                 int NH, int NKV, float scale, int window) {
    attn_mma_fwd_impl<128>(out, lse, q, k, v, key_start, Tn, NH, NKV, scale, window);
}
extern "C" __global__ void __launch_bounds__(128)
attn_mma_bwd_dq_128(bf16* dq, const bf16* dout, const float* lse, const float* D, const bf16* q, const bf16* k,
                    const bf16* v, const int* key_start, int Tn, int NH, int NKV, float scale, int window) {
    attn_mma_bwd_dq_impl<128>(dq, dout, lse, D, q, k, v, key_start, Tn, NH, NKV, scale, window);
}
extern "C" __global__ void __launch_bounds__(128)
attn_mma_bwd_dkv_128(bf16* dk, bf16* dv, const bf16* dout, const float* lse, const float* D, const bf16* q,
                     const bf16* k, const bf16* v, const int* key_start, int Tn, int NH, int NKV, float scale,
                     int window) {
    attn_mma_bwd_dkv_impl<128>(dk, dv, dout, lse, D, q, k, v, key_start, Tn, NH, NKV, scale, window);
}
