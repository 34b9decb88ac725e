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
