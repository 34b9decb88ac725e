// loss.cu: cross-entropy and the distillation divergences (dense and sparse
// teachers). Logits, losses and weights are F32; ids and targets are I32.
//
// One block per row; threads stride over the row's columns and combine with
// the block reductions of common.cuh, so a 151,936-wide vocabulary row takes
// ~600 columns per thread at 256 threads.
//
// The numbers follow runtime/cpu (loss.go, divergence.go) formula for formula:
//   - log-softmax is (x·(1/τ) − max) − log Σ exp(x·(1/τ) − max), the product
//     rounded before the subtraction (__fmul_rn: no fused multiply-add) and
//     log Σ taken in double and rounded, as the CPU does;
//   - the divergence over bins writes q·∂D/∂q (binDivergence) and the softmax
//     chain ∂D/∂s_j = (1/τ)·(q_j·g_j − q_j·Σ_i q_i·g_i) is added, times the
//     row weight, into the student's gradient (softmaxChain);
//   - 0·log 0 terms are skipped, never evaluated (no NaN from −Inf logits).
// The row's log-sum-exp is accumulated online (max and rescaled sum in one
// pass) and combined across the block; it equals the CPU's two-pass value to a
// few ulps.

#define LOSS_IGNORE_INDEX (-100)

// lse_push adds x to the online log-sum-exp state (m: running max, s: sum of
// exp(x − m)). −Inf entries add nothing.
__device__ __forceinline__ void lse_push(float& m, float& s, float x) {
    if (x > m) {
        s = s * expf(m - x) + 1.0f; // m = −Inf: s is 0 and stays 0 before the + 1
        m = x;
    } else if (x != KD_NEG_INF) {
        s += expf(x - m);
    }
}

// lse_block combines every thread's (m, s) into the row's (max, Σ exp(x − max)),
// returned to all threads.
__device__ __forceinline__ void lse_block(float& m, float& s) {
    float M = block_max(m);
    float t = (m == KD_NEG_INF) ? 0.0f : s * expf(m - M);
    s = block_sum(t);
    m = M;
}

// logsm is one log-softmax entry, CPU logSoftmaxRow's (x − mx) − logSum; a row
// that is entirely −Inf stays −Inf.
__device__ __forceinline__ float logsm(float x, float mx, float logSum) {
    if (mx == KD_NEG_INF) return KD_NEG_INF;
    return (x - mx) - logSum;
}

// log_add_exp is CPU logAddExp: log(eᵃ + eᵇ) without overflow.
__device__ __forceinline__ float log_add_exp(float a, float b) {
    if (a == KD_NEG_INF) return b;
    if (b == KD_NEG_INF) return a;
    if (a < b) {
        float t = a;
        a = b;
        b = t;
    }
    return a + log1pf(expf(b - a));
}

// Divergence kinds, as runtime.DivergenceKind numbers them. The host maps
// JSD with β = 0 or 1 to forward or reverse KL before launching, as
// binDivergence does.
#define LOSS_FORWARD_KL 0
#define LOSS_REVERSE_KL 1
#define LOSS_JSD 2
#define LOSS_TVD 3
#define LOSS_SKEW_KL 4
#define LOSS_SKEW_REVERSE_KL 5

// DivParams carries the per-call constants: 1/τ, β, α and their logs
// (lb = log β, l1b = log(1 − β), la = log α, l1a = log(1 − α), computed on the
// host as the CPU computes them).
struct DivParams {
    int kind;
    float invT, beta, alpha, lb, l1b, la, l1a;
};

// bin_term is one bin of CPU binDivergence: it returns the bin's term of D
// and writes qg = q·∂D/∂q for the bin.
__device__ __forceinline__ float bin_term(const DivParams& P, float lp, float lq, float& qg) {
    float d = 0.0f;
    qg = 0.0f;
    switch (P.kind) {
    case LOSS_FORWARD_KL: { // g = −p/q, so q·g = −p
        float p = expf(lp);
        if (p > 0.0f) d = p * (lp - lq);
        qg = -p;
        break;
    }
    case LOSS_REVERSE_KL: { // g = log q − log p + 1 (the constant cancels)
        float q = expf(lq);
        if (q > 0.0f) {
            d = q * (lq - lp);
            qg = q * (lq - lp);
        }
        break;
    }
    case LOSS_JSD: {
        float lm = log_add_exp(P.lb + lp, P.l1b + lq);
        float p = expf(lp), q = expf(lq);
        if (p > 0.0f) d += P.beta * p * (lp - lm);
        if (q > 0.0f) {
            d += (1.0f - P.beta) * q * (lq - lm);
            qg = (1.0f - P.beta) * q * (lq - lm); // g = (1−β)(log q − log m)
        }
        break;
    }
    case LOSS_TVD: { // g = ½·sign(q − p)
        float p = expf(lp), q = expf(lq);
        d = 0.5f * fabsf(p - q);
        if (q > p) qg = 0.5f * q;
        else if (q < p) qg = -0.5f * q;
        break;
    }
    case LOSS_SKEW_KL: { // m = αp + (1−α)q; g = −(1−α)·p/m
        float p = expf(lp);
        if (p > 0.0f) {
            float lm = log_add_exp(P.la + lp, P.l1a + lq);
            d = p * (lp - lm);
            qg = -(1.0f - P.alpha) * p * expf(lq - lm); // q·g = −(1−α)·p·q/m
        }
        break;
    }
    case LOSS_SKEW_REVERSE_KL: { // m = (1−α)p + αq; g = log q − log m + 1 − α·q/m
        float q = expf(lq);
        if (q > 0.0f) {
            float lm = log_add_exp(P.l1a + lp, P.la + lq);
            d = q * (lq - lm);
            qg = q * (lq - lm - P.alpha * expf(lq - lm));
        }
        break;
    }
    }
    return d;
}

// ---------------------------------------------------------------------------
// Cross-entropy.

// loss_ce_forward: losses[n] = logsumexp(logits[n]) − logits[n, t[n]], 0 where
// t[n] is IgnoreIndex. A target outside [0, V) (the CPU panics on it) gives a
// NaN loss, so that the mistake shows. Grid: one block per row.
extern "C" __global__ void __launch_bounds__(1024) loss_ce_forward(float* losses, const float* logits, const int* targets, int V) {
    int n = blockIdx.x;
    int t = targets[n];
    if (t == LOSS_IGNORE_INDEX) {
        if (threadIdx.x == 0) losses[n] = 0.0f;
        return;
    }
    if (t < 0 || t >= V) {
        if (threadIdx.x == 0) losses[n] = __int_as_float(0x7fc00000);
        return;
    }
    const float* row = logits + (i64)n * V;
    float m = KD_NEG_INF, s = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) lse_push(m, s, row[j]);
    lse_block(m, s);
    if (threadIdx.x == 0) {
        // CPU logSumExp: mx + log Σ, −Inf for an all −Inf row.
        float lse = (m == KD_NEG_INF) ? m : m + (float)log((double)s);
        losses[n] = lse - row[t];
    }
}

// loss_ce_backward: dlogits[n] += scale·w[n]·(softmax(logits[n]) − onehot(t[n]))
// for rows whose target is not IgnoreIndex; weights may be null (all ones).
// A target outside [0, V) adds NaN to the row, so that the mistake shows.
extern "C" __global__ void __launch_bounds__(1024) loss_ce_backward(float* dlogits, const float* logits, const int* targets,
                                            const float* weights, int V, float scale0) {
    int n = blockIdx.x;
    int t = targets[n];
    if (t == LOSS_IGNORE_INDEX) return;
    float scale = scale0;
    if (weights != 0) {
        scale *= weights[n];
        if (scale == 0.0f) return;
    }
    const float* row = logits + (i64)n * V;
    float* drow = dlogits + (i64)n * V;
    if (t < 0 || t >= V) {
        for (int j = threadIdx.x; j < V; j += blockDim.x) drow[j] += __int_as_float(0x7fc00000);
        return;
    }
    float m = KD_NEG_INF, s = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) lse_push(m, s, row[j]);
    lse_block(m, s);
    // exp((v − max) − log Σ), as the CPU writes it.
    float logSum = (float)log((double)s);
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float d = drow[j] + scale * expf((row[j] - m) - logSum);
        if (j == t) d -= scale;
        drow[j] = d;
    }
}

// ---------------------------------------------------------------------------
// Dense divergence.

// loss_divergence: for each row n (one block), the first V columns of student
// [N, Vs] and teacher [N, Vt] at temperature τ: losses[n] = w[n]·D(p, q) and,
// when ds is not null, ds[n, j] += w[n]·∂D/∂s[n, j] for j < V. A row with
// weight 0 gets loss 0 and no gradient.
extern "C" __global__ void __launch_bounds__(1024) loss_divergence(float* losses, float* ds, const float* student, const float* teacher,
                                           const float* weights, int V, int Vs, int Vt, int kind, float invT,
                                           float beta, float alpha, float lb, float l1b, float la, float l1a) {
    const DivParams P = {kind, invT, beta, alpha, lb, l1b, la, l1a};
    int n = blockIdx.x;
    float w = weights[n];
    if (w == 0.0f) {
        if (threadIdx.x == 0) losses[n] = 0.0f;
        return;
    }
    const float* srow = student + (i64)n * Vs;
    const float* trow = teacher + (i64)n * Vt;

    // Pass 1: both rows' log-sum-exp at temperature τ.
    float ms = KD_NEG_INF, ss = 0.0f, mt = KD_NEG_INF, st = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        lse_push(ms, ss, __fmul_rn(srow[j], invT));
        lse_push(mt, st, __fmul_rn(trow[j], invT));
    }
    lse_block(ms, ss);
    lse_block(mt, st);
    float logSumS = (float)log((double)ss), logSumT = (float)log((double)st);

    // Pass 2: D and Σ q·g over the bins.
    float d = 0.0f, sg = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float lp = logsm(__fmul_rn(trow[j], invT), mt, logSumT);
        float lq = logsm(__fmul_rn(srow[j], invT), ms, logSumS);
        float qg;
        d += bin_term(P, lp, lq, qg);
        sg += qg;
    }
    d = block_sum(d);
    sg = block_sum(sg);
    if (threadIdx.x == 0) losses[n] = w * d;
    if (ds == 0) return;

    // Pass 3: the softmax chain, recomputing each bin's q·g.
    float* drow = ds + (i64)n * Vs;
    float wi = w * invT;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float lp = logsm(__fmul_rn(trow[j], invT), mt, logSumT);
        float lq = logsm(__fmul_rn(srow[j], invT), ms, logSumS);
        float qg;
        bin_term(P, lp, lq, qg);
        drow[j] += wi * (qg - expf(lq) * sg);
    }
}

// ---------------------------------------------------------------------------
// Sparse (top-k) divergence.

// renorm_log is CPU renormalizeLog over nb bins in shared memory: subtract
// the bins' logsumexp (max + log Σ exp(l − max), −Inf when every bin is −Inf).
// Every thread of the block calls it.
__device__ void renorm_log(float* l, int nb) {
    __syncthreads();
    float m = KD_NEG_INF;
    for (int k = threadIdx.x; k < nb; k += blockDim.x) m = fmaxf(m, l[k]);
    m = block_max(m);
    float lse = m;
    if (m != KD_NEG_INF) { // uniform across the block
        float s = 0.0f;
        for (int k = threadIdx.x; k < nb; k += blockDim.x) s += expf(l[k] - m);
        s = block_sum(s);
        lse = m + (float)log((double)s);
    }
    for (int k = threadIdx.x; k < nb; k += blockDim.x) l[k] -= lse;
    __syncthreads();
}

__device__ __forceinline__ bool in_top(const unsigned int* mask, int j) {
    return (mask[j >> 5] >> (j & 31)) & 1u;
}

// loss_sparse_divergence is SparseDivergence for one row per block: student
// [N, V], ids I32 [N, K], logprobs [N, K], tails [N] or null, weights [N].
// tailBucket selects TailMode TailBucket (K + 1 bins) over Renormalize (K
// bins). Dynamic shared memory: 3·bins floats (lp, lq, q·g) followed, under
// TailBucket, by a bitmask of the row's top-k ids ((V + 31)/32 words).
// An id outside [0, V) (the CPU panics on it) gives a NaN loss and no
// gradient.
extern "C" __global__ void __launch_bounds__(1024) loss_sparse_divergence(float* losses, float* ds, const float* student, const int* ids,
                                                  const float* logprobs, const float* tails, const float* weights,
                                                  int V, int K, int tailBucket, int kind, float invT, float beta,
                                                  float alpha, float lb, float l1b, float la, float l1a) {
    extern __shared__ float loss_sh[];
    const DivParams P = {kind, invT, beta, alpha, lb, l1b, la, l1a};
    int n = blockIdx.x;
    float w = weights[n];
    if (w == 0.0f) {
        if (threadIdx.x == 0) losses[n] = 0.0f;
        return;
    }
    const int bins = tailBucket ? K + 1 : K;
    float* lp = loss_sh;
    float* lq = lp + bins;
    float* qgs = lq + bins;
    unsigned int* mask = (unsigned int*)(qgs + bins);
    const int* rid = ids + (i64)n * K;
    const float* rlp = logprobs + (i64)n * K;
    const float* srow = student + (i64)n * V;

    // The top-k ids: check them and, under TailBucket, mark them.
    if (tailBucket) {
        for (int i = threadIdx.x; i < (V + 31) / 32; i += blockDim.x) mask[i] = 0u;
        __syncthreads();
    }
    int bad = 0;
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        int id = rid[k];
        if (id < 0 || id >= V) bad = 1;
        else if (tailBucket) atomicOr(&mask[id >> 5], 1u << (id & 31));
    }
    if (__syncthreads_or(bad)) {
        if (threadIdx.x == 0) losses[n] = __int_as_float(0x7fc00000);
        return;
    }

    // Pass 1: the student's log-sum-exp at temperature τ over the whole row
    // and, under TailBucket, over the ids outside the top-k.
    float m = KD_NEG_INF, s = 0.0f, mt = KD_NEG_INF, st = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float x = __fmul_rn(srow[j], invT);
        lse_push(m, s, x);
        if (tailBucket && !in_top(mask, j)) lse_push(mt, st, x);
    }
    lse_block(m, s);
    if (tailBucket) lse_block(mt, st);
    const float mx = m, logSum = (float)log((double)s);

    // The bins: teacher log-probabilities as given, the student's
    // log-softmax at the top-k ids.
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        lp[k] = rlp[k];
        lq[k] = logsm(__fmul_rn(srow[rid[k]], invT), mx, logSum);
    }
    if (!tailBucket) {
        renorm_log(lp, K);
        renorm_log(lq, K);
    } else {
        if (tails != 0) {
            // The teacher's own measure of its tail; the K + 1 bins,
            // renormalized, are the teacher as the cache knows it.
            if (threadIdx.x == 0) lp[K] = (K == V) ? KD_NEG_INF : tails[n];
            renorm_log(lp, K + 1);
        } else {
            // Teacher tail: 1 − Σ top-k in double, floored at tailFloor (1e-10)
            // when ids lie outside the top-k.
            double pt = 0.0;
            for (int k = threadIdx.x; k < K; k += blockDim.x) pt += exp((double)rlp[k]);
            pt = block_sum_d(pt);
            if (threadIdx.x == 0) lp[K] = (K < V) ? (float)log(fmax(1e-10, 1.0 - pt)) : KD_NEG_INF;
        }
        // Student tail: the mass of the ids outside the top-k, summed
        // directly. The CPU takes the max and the sum over their log-softmax
        // values ls_j = (x_j − mx) − logSum; the max is the log-softmax of the
        // largest x_j (rounding is monotonic), the sum is taken relative to it.
        if (threadIdx.x == 0) {
            float tmx = (mt == KD_NEG_INF) ? KD_NEG_INF : logsm(mt, mx, logSum);
            lq[K] = (tmx == KD_NEG_INF) ? KD_NEG_INF : tmx + (float)log((double)st);
        }
        __syncthreads();
    }

    // The divergence over the bins.
    float d = 0.0f, sg = 0.0f;
    for (int k = threadIdx.x; k < bins; k += blockDim.x) {
        float qg;
        d += bin_term(P, lp[k], lq[k], qg);
        qgs[k] = qg;
        sg += qg;
    }
    d = block_sum(d); // synchronizes: qgs is complete after it
    sg = block_sum(sg);
    if (threadIdx.x == 0) losses[n] = w * d;
    if (ds == 0) return;

    float* drow = ds + (i64)n * V;
    const float wi = w * invT;
    if (tailBucket) {
        // Every id outside the top-k shares the tail bin's g:
        // (1/τ)·q_j·(g_tail − s), with g_tail = qg_tail/q_tail.
        float qt = expf(lq[K]);
        float gTail = qt > 0.0f ? qgs[K] / qt : 0.0f;
        float gs = gTail - sg;
        for (int j = threadIdx.x; j < V; j += blockDim.x) {
            if (in_top(mask, j)) continue;
            float ls = logsm(__fmul_rn(srow[j], invT), mx, logSum);
            drow[j] += wi * expf(ls) * gs;
        }
    }
    // The top-k ids (atomic only so that a repeated id adds twice, as the CPU
    // does; the ids are distinct by contract and disjoint from the tail ids).
    for (int k = threadIdx.x; k < K; k += blockDim.x) atomicAdd(&drow[rid[k]], wi * (qgs[k] - expf(lq[k]) * sg));
}

// ---------------------------------------------------------------------------
// Cross-tokenizer divergence: forward KL over the ids both vocabularies
// have, Universal Logit Distillation (sorted L1) over the rest (runtime/cpu
// xtok.go, formula for formula).

// The block size of loss_xtok: the radix sort's counters take 16·256 ints
// (16 KiB) of static shared memory.
#define XTOK_THREADS 256

// xtok_key maps a logit to an unsigned key whose increasing order is the
// logit's decreasing order (the float's bits, sign-folded, inverted);
// xtok_unkey gives the logit back exactly.
__device__ __forceinline__ unsigned xtok_key(float x) {
    unsigned u = __float_as_uint(x);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ~u;
}
__device__ __forceinline__ float xtok_unkey(unsigned k) {
    unsigned u = ~k;
    u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;
    return __uint_as_float(u);
}

// xtok_scan returns the exclusive prefix sum of v over the block's threads
// in threadIdx order (a Hillis–Steele scan in sh[blockDim.x]). Every thread
// calls it.
__device__ int xtok_scan(int v, int* sh) {
    const int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (int o = 1; o < (int)blockDim.x; o <<= 1) {
        int x = t >= o ? sh[t - o] : 0;
        __syncthreads();
        sh[t] += x;
        __syncthreads();
    }
    int incl = sh[t];
    __syncthreads();
    return incl - v;
}

// xtok_sort sorts n keys k0 (with their values v0 when v0 is not null) in
// increasing order, stably, by eight 4-bit LSD radix passes; k1 and v1 are
// scratch of the same size. Each thread owns a contiguous segment of the
// keys, so that counting by (digit, thread) and scattering in segment order
// keep equal keys in input order. A pass whose digit is the same for every
// key moves nothing. It returns 0 when the result is in k0/v0 and 1 when in
// k1/v1. cnt is shared int[16·blockDim.x], sh shared int[blockDim.x]. Every
// thread of the block calls it.
__device__ int xtok_sort(unsigned* k0, int* v0, unsigned* k1, int* v1, int n, int* cnt, int* sh) {
    const int T = blockDim.x, t = threadIdx.x;
    const int per = (n + T - 1) / T;
    const int lo = min(n, t * per), hi = min(n, lo + per);
    int cur = 0;
    for (int shift = 0; shift < 32; shift += 4) {
        const unsigned* ks = cur ? k1 : k0;
        const int* vs = cur ? v1 : v0;
        unsigned* kd = cur ? k0 : k1;
        int* vd = cur ? v0 : v1;
        int c[16];
        for (int d = 0; d < 16; d++) c[d] = 0;
        for (int e = lo; e < hi; e++) c[(ks[e] >> shift) & 15u]++;
        for (int d = 0; d < 16; d++) cnt[d * T + t] = c[d];
        __syncthreads();
        // Exclusive scan of cnt in (digit, thread) order: thread t scans the
        // 16 entries [16t, 16t + 16), the block scan adds what precedes them.
        int local[16], sum = 0;
        for (int k = 0; k < 16; k++) {
            local[k] = sum;
            sum += cnt[16 * t + k];
        }
        int base = xtok_scan(sum, sh);
        for (int k = 0; k < 16; k++) cnt[16 * t + k] = base + local[k];
        __syncthreads();
        bool skip = false;
        for (int d = 0; d < 16; d++) {
            int end = d < 15 ? cnt[(d + 1) * T] : n;
            if (end - cnt[d * T] == n) skip = true;
        }
        if (!skip) { // uniform across the block
            for (int d = 0; d < 16; d++) c[d] = cnt[d * T + t];
            for (int e = lo; e < hi; e++) {
                unsigned k = ks[e];
                int pos = c[(k >> shift) & 15u]++;
                kd[pos] = k;
                if (vs != 0) vd[pos] = vs[e];
            }
            cur ^= 1;
        }
        __syncthreads();
    }
    return cur;
}

// xtok_lse computes a row's max of x·(1/τ) and log Σ exp(x·(1/τ) − max), the
// sum accumulated in double (CPU logSoftmax64Sum). Every thread calls it.
__device__ void xtok_lse(const float* row, int V, float invT, float& mx, float& logSum) {
    float m = KD_NEG_INF;
    double s = 0.0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float x = __fmul_rn(row[j], invT);
        if (x > m) {
            s = (m == KD_NEG_INF) ? 1.0 : s * exp((double)(m - x)) + 1.0;
            m = x;
        } else if (x != KD_NEG_INF) {
            s += (double)expf(x - m);
        }
    }
    float M = block_max(m);
    double part = (m == KD_NEG_INF) ? 0.0 : s * exp((double)(m - M));
    double S = block_sum_d(part);
    mx = M;
    logSum = (M == KD_NEG_INF) ? 0.0f : (float)log(S);
}

__device__ __forceinline__ float xtok_sign(float x) { return (float)((x > 0.0f) - (x < 0.0f)); }

// loss_xtok is CrossTokenizerDivergence for the rows row0 + blockIdx.x, one
// block of XTOK_THREADS per row: student [N, Vs], teacher [N, Vt], slog and
// tlog [N] or null, weights [N]; pairs I32 [M, 2] (student id, teacher id),
// sfree I32 [ns] and tfree I32 [nt] the other ids in increasing order.
// Scratch per block (blockIdx.x): sk, sv [2·ns] for the student's free
// (key, id) pairs and tk [2·nt] for the teacher's free keys.
extern "C" __global__ void loss_xtok(float* losses, float* ds, float* dslog, const float* student, const float* teacher,
                                     const float* slog, const float* tlog, const float* weights, const int* pairs, int M,
                                     const int* sfree, int ns, const int* tfree, int nt, int Vs, int Vt, float invT,
                                     float aw, float bw, unsigned* sk, int* sv, unsigned* tk, int row0) {
    __shared__ int xtok_cnt[16 * XTOK_THREADS];
    __shared__ int xtok_sh[XTOK_THREADS];
    const int n = row0 + blockIdx.x, t = threadIdx.x;
    const float w = weights[n];
    if (w == 0.0f) {
        if (t == 0) {
            losses[n] = 0.0f;
            if (dslog != 0) dslog[n] = 0.0f;
        }
        return;
    }
    const float* srow = student + (i64)n * Vs;
    const float* trow = teacher + (i64)n * Vt;
    const float cs = slog != 0 ? slog[n] : 0.0f, ct = tlog != 0 ? tlog[n] : 0.0f;
    float mxS, lsS, mxT, lsT;
    xtok_lse(srow, Vs, invT, mxS, lsS);
    xtok_lse(trow, Vt, invT, mxT, lsT);

    unsigned* sk0 = sk + (i64)blockIdx.x * 2 * ns;
    unsigned* sk1 = sk0 + ns;
    int* sv0 = sv + (i64)blockIdx.x * 2 * ns;
    int* sv1 = sv0 + ns;
    unsigned* tk0 = tk + (i64)blockIdx.x * 2 * nt;
    unsigned* tk1 = tk0 + nt;
    for (int r = t; r < ns; r += blockDim.x) {
        int i = sfree[r];
        sk0[r] = xtok_key(srow[i]);
        sv0[r] = i;
    }
    for (int r = t; r < nt; r += blockDim.x) tk0[r] = xtok_key(trow[tfree[r]]);
    __syncthreads();
    const int sc = xtok_sort(sk0, sv0, sk1, sv1, ns, xtok_cnt, xtok_sh);
    const int tc = xtok_sort(tk0, 0, tk1, 0, nt, xtok_cnt, xtok_sh);
    const unsigned* skr = sc ? sk1 : sk0;
    const int* svr = sc ? sv1 : sv0;
    const unsigned* tkr = tc ? tk1 : tk0;

    // Pass 1: the matched KL, the sorted L1 and S = Σ q·∂D/∂q.
    double kl = 0.0, uld = 0.0, S = 0.0;
    for (int k = t; k < M; k += blockDim.x) {
        int i = pairs[2 * k], j = pairs[2 * k + 1];
        float lmt = ct + logsm(__fmul_rn(trow[j], invT), mxT, lsT);
        float mt = expf(lmt);
        S += (double)(-aw * mt);
        if (mt > 0.0f) kl += (double)(mt * (lmt - (cs + logsm(__fmul_rn(srow[i], invT), mxS, lsS))));
    }
    const int L = max(ns, nt);
    for (int r = t; r < L; r += blockDim.x) {
        float a = 0.0f, b = 0.0f;
        if (r < ns) a = expf(cs + logsm(__fmul_rn(xtok_unkey(skr[r]), invT), mxS, lsS));
        if (r < nt) b = expf(ct + logsm(__fmul_rn(xtok_unkey(tkr[r]), invT), mxT, lsT));
        uld += (double)fabsf(a - b);
        if (r < ns) S += (double)(bw * a * xtok_sign(a - b));
    }
    kl = block_sum_d(kl);
    uld = block_sum_d(uld);
    S = block_sum_d(S);
    if (t == 0) {
        losses[n] = (float)((double)w * ((double)aw * kl + (double)bw * uld));
        if (dslog != 0) dslog[n] = (float)((double)w * S);
    }
    if (ds == 0) return;

    // Pass 2: the softmax chain ∂D/∂s_i = (1/τ)·(q_i·∂D/∂q_i − q_i·S), each
    // id written by one thread (matched and free ids are disjoint).
    float* drow = ds + (i64)n * Vs;
    const float wi = w * invT, Sf = (float)S;
    for (int k = t; k < M; k += blockDim.x) {
        int i = pairs[2 * k], j = pairs[2 * k + 1];
        float mt = expf(ct + logsm(__fmul_rn(trow[j], invT), mxT, lsT));
        float q = expf(logsm(__fmul_rn(srow[i], invT), mxS, lsS));
        drow[i] += wi * (-aw * mt - q * Sf);
    }
    for (int r = t; r < ns; r += blockDim.x) {
        float ls = logsm(__fmul_rn(xtok_unkey(skr[r]), invT), mxS, lsS);
        float a = expf(cs + ls);
        float b = r < nt ? expf(ct + logsm(__fmul_rn(xtok_unkey(tkr[r]), invT), mxT, lsT)) : 0.0f;
        drow[svr[r]] += wi * (bw * a * xtok_sign(a - b) - expf(ls) * Sf);
    }
}

// acc[0] += Σ x[0 … n), summed in double by one block (AddSum: a chunked
// loss's value kept on the device until the step reads it).
extern "C" __global__ void loss_add_sum(double* acc, const float* x, i64 n) {
    double s = 0.0;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) s += (double)x[i];
    s = block_sum_d(s);
    if (threadIdx.x == 0) acc[0] += s;
}
