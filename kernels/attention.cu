// attention.cu: causal grouped-query attention (Backend.Attention,
// AttentionBackward, AttentionDecode), computing what runtime/cpu/attention.go
// and decode.go compute.
//
// Layouts (storage T = float or bf16 for q, k, v, out and their gradients):
//   q, out, dq, dout  [B, T, NH, HD]
//   k, v, dk, dv      [B, T, NKV, HD]
//   probs             [B, NH, T, T] float, zero outside each query's visible keys
//   ds (scratch)      [Bc, NH, T, T] float, for the Bc sequences b0 … b0+Bc−1
//   kc, vc (decode)   [B·Tmax, NKV·HD]
// Query head h reads key/value head h / (NH/NKV). Query t sees keys s with
// lo(t) ≤ s ≤ t, lo(t) = max(t − window + 1 when window > 0 else 0,
// key_start[b] when key_start is not null); a query with lo(t) > t (left
// padding) sees nothing and gives zeros.
//
// These are the plain kernels (one block per query row, then per-element
// reductions over rows); a flash-style fused kernel is later work.

// attn_first is the first key position query t of sequence b sees.
__device__ __forceinline__ int attn_first(int t, int window, const int* key_start, int b) {
    int lo = (window > 0 && t - window + 1 > 0) ? t - window + 1 : 0;
    if (key_start != nullptr && key_start[b] > lo) lo = key_start[b];
    return lo;
}

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

// attn_forward: grid (T, NH, B), blockDim.x a multiple of 32, dynamic shared
// memory (HD + blockDim.x) floats. Block (t, h, b) writes probs[b, h, t, :]
// (zeros outside [lo, t]) and out[b, t, h, :].
template <typename T>
__device__ void attn_forward_impl(T* out, float* probs, const T* q, const T* k, const T* v, const int* key_start,
                                  int Tn, int NH, int NKV, int HD, float scale, int window) {
    extern __shared__ float attn_sm[];
    int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    int kh = h / (NH / NKV);
    i64 ks = (i64)NKV * HD;
    float* p = probs + ((i64)b * NH + h) * Tn * Tn + (i64)t * Tn;
    i64 qo = ((i64)b * Tn + t) * NH * HD + (i64)h * HD;
    int lo = attn_first(t, window, key_start, b);
    if (lo > t) { // a padding query: it sees nothing
        for (int s = threadIdx.x; s < Tn; s += blockDim.x) p[s] = 0.0f;
        for (int d = threadIdx.x; d < HD; d += blockDim.x) st(out, qo + d, 0.0f);
        return;
    }
    for (int s = threadIdx.x; s < Tn; s += blockDim.x)
        if (s < lo || s > t) p[s] = 0.0f;
    i64 ko = (i64)b * Tn * ks + (i64)kh * HD;
    attn_row<T>(q + qo, k + ko, v + ko, ks, lo, t, scale, p, out + qo, HD, attn_sm);
}
KD_EXPORT(attn_forward,
          (T * out, float* probs, const T* q, const T* k, const T* v, const int* key_start, int Tn, int NH, int NKV,
           int HD, float scale, int window),
          attn_forward_impl<T>(out, probs, q, k, v, key_start, Tn, NH, NKV, HD, scale, window))

// attn_decode: grid (NH, B), dynamic shared memory (HD + blockDim.x) floats;
// w is float scratch [B, NH, pos+1]. Block (h, b) computes out[b, h, :] for
// query position pos against kc/vc rows b·Tmax + s.
template <typename T>
__device__ void attn_decode_impl(T* out, const T* q, const T* kc, const T* vc, float* w, const int* key_start,
                                 int NH, int NKV, int HD, int Tmax, int pos, float scale, int window) {
    extern __shared__ float attn_sm[];
    int h = blockIdx.x, b = blockIdx.y;
    int kh = h / (NH / NKV);
    i64 ks = (i64)NKV * HD;
    i64 qo = ((i64)b * NH + h) * HD;
    int lo = attn_first(pos, window, key_start, b);
    if (lo > pos) {
        for (int d = threadIdx.x; d < HD; d += blockDim.x) st(out, qo + d, 0.0f);
        return;
    }
    float* p = w + ((i64)b * NH + h) * (pos + 1);
    i64 ko = (i64)b * Tmax * ks + (i64)kh * HD;
    attn_row<T>(q + qo, kc + ko, vc + ko, ks, lo, pos, scale, p, out + qo, HD, attn_sm);
}
KD_EXPORT(attn_decode,
          (T * out, const T* q, const T* kc, const T* vc, float* w, const int* key_start, int NH, int NKV, int HD,
           int Tmax, int pos, float scale, int window),
          attn_decode_impl<T>(out, q, kc, vc, w, key_start, NH, NKV, HD, Tmax, pos, scale, window))

// attn_backward_ds: grid (T, NH, Bc) for sequences b = b0 + blockIdx.z,
// dynamic shared memory HD floats. Block (t, h, b) writes, for the visible
// keys s ∈ [lo, t] only,
//   ds[b−b0, h, t, s] = P[s]·(dP[s] − Σ_s' P[s']·dP[s']),  dP[s] = dout[b, t, h, :]·v[b, s, kh, :].
// (Entries outside [lo, t] are left as they are: P is zero there, so is dS,
// and the kernels below never read them.)
template <typename T>
__device__ void attn_backward_ds_impl(float* ds, const float* probs, const T* dout, const T* v, const int* key_start,
                                      int b0, int Tn, int NH, int NKV, int HD, int window) {
    extern __shared__ float attn_sm[];
    int t = blockIdx.x, h = blockIdx.y, bl = blockIdx.z, b = b0 + bl;
    int lo = attn_first(t, window, key_start, b);
    if (lo > t) return;
    int tid = threadIdx.x, nt = blockDim.x, lane = tid & 31, warp = tid >> 5, nw = nt >> 5;
    int kh = h / (NH / NKV);
    i64 ks = (i64)NKV * HD;
    const T* dor = dout + ((i64)b * Tn + t) * NH * HD + (i64)h * HD;
    const T* vb = v + (i64)b * Tn * ks + (i64)kh * HD;
    const float* P = probs + ((i64)b * NH + h) * Tn * Tn + (i64)t * Tn;
    float* D = ds + ((i64)bl * NH + h) * Tn * Tn + (i64)t * Tn;
    float* dos = attn_sm;
    for (int d = tid; d < HD; d += nt) dos[d] = ld(dor, d);
    __syncthreads();
    for (int s = lo + warp; s <= t; s += nw) {
        const T* vr = vb + (i64)s * ks;
        float dot = 0.0f;
        for (int d = lane; d < HD; d += 32) dot += dos[d] * ld(vr, d);
        dot = warp_sum(dot);
        if (lane == 0) D[s] = dot;
    }
    __syncthreads();
    float dot = 0.0f;
    for (int s = lo + tid; s <= t; s += nt) dot += P[s] * D[s];
    dot = block_sum(dot);
    for (int s = lo + tid; s <= t; s += nt) D[s] = P[s] * (D[s] - dot);
}
KD_EXPORT(attn_backward_ds,
          (float* ds, const float* probs, const T* dout, const T* v, const int* key_start, int b0, int Tn, int NH,
           int NKV, int HD, int window),
          attn_backward_ds_impl<T>(ds, probs, dout, v, key_start, b0, Tn, NH, NKV, HD, window))

// attn_backward_dq: one thread per element (bl, t, h, d) of the Bc·T·NH·HD
// query gradients of sequences b0 …:
//   dq[b, t, h, d] += scale · Σ_{s ∈ [lo, t]} ds[bl, h, t, s] · k[b, s, kh, d].
template <typename T>
__device__ void attn_backward_dq_impl(T* dq, const float* ds, const T* k, const int* key_start, int b0, int Bc,
                                      int Tn, int NH, int NKV, int HD, float scale, int window) {
    i64 n = (i64)Bc * Tn * NH * HD;
    i64 ks = (i64)NKV * HD;
    int group = NH / NKV;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        int d = (int)(i % HD);
        i64 r = i / HD;
        int h = (int)(r % NH);
        r /= NH;
        int t = (int)(r % Tn);
        int bl = (int)(r / Tn), b = b0 + bl;
        int lo = attn_first(t, window, key_start, b);
        if (lo > t) continue;
        const float* D = ds + ((i64)bl * NH + h) * Tn * Tn + (i64)t * Tn;
        const T* kb = k + (i64)b * Tn * ks + (i64)(h / group) * HD + d;
        float acc = 0.0f;
        for (int s = lo; s <= t; s++) acc += D[s] * ld(kb, (i64)s * ks);
        i64 o = (i64)b0 * Tn * NH * HD + i;
        st(dq, o, ld(dq, o) + scale * acc);
    }
}
KD_EXPORT(attn_backward_dq,
          (T * dq, const float* ds, const T* k, const int* key_start, int b0, int Bc, int Tn, int NH, int NKV, int HD,
           float scale, int window),
          attn_backward_dq_impl<T>(dq, ds, k, key_start, b0, Bc, Tn, NH, NKV, HD, scale, window))

// attn_backward_dkv: one thread per element (bl, s, kh, d) of the
// Bc·T·NKV·HD key/value gradients of sequences b0 …, summing over the query
// heads h of the group and the queries t that see key s (s ≤ t, t − s <
// window; none when s < key_start[b]):
//   dv[b, s, kh, d] += Σ_h Σ_t probs[b, h, t, s] · dout[b, t, h, d]
//   dk[b, s, kh, d] += scale · Σ_h Σ_t ds[bl, h, t, s] · q[b, t, h, d]
template <typename T>
__device__ void attn_backward_dkv_impl(T* dk, T* dv, const float* ds, const float* probs, const T* q, const T* dout,
                                       const int* key_start, int b0, int Bc, int Tn, int NH, int NKV, int HD,
                                       float scale, int window) {
    i64 n = (i64)Bc * Tn * NKV * HD;
    int group = NH / NKV;
    i64 qs = (i64)NH * HD;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        int d = (int)(i % HD);
        i64 r = i / HD;
        int kh = (int)(r % NKV);
        r /= NKV;
        int s = (int)(r % Tn);
        int bl = (int)(r / Tn), b = b0 + bl;
        if (key_start != nullptr && s < key_start[b]) continue;
        int last = Tn - 1;
        if (window > 0 && s + window - 1 < last) last = s + window - 1;
        float accv = 0.0f, acck = 0.0f;
        for (int j = 0; j < group; j++) {
            int h = kh * group + j;
            const float* P = probs + ((i64)b * NH + h) * Tn * Tn + s;
            const float* D = ds + ((i64)bl * NH + h) * Tn * Tn + s;
            i64 qo = (i64)b * Tn * qs + (i64)h * HD + d;
            for (int t = s; t <= last; t++) {
                i64 rt = (i64)t * Tn;
                i64 e = qo + (i64)t * qs;
                accv += P[rt] * ld(dout, e);
                acck += D[rt] * ld(q, e);
            }
        }
        i64 o = (i64)b0 * Tn * NKV * HD + i;
        st(dv, o, ld(dv, o) + accv);
        st(dk, o, ld(dk, o) + scale * acck);
    }
}
KD_EXPORT(attn_backward_dkv,
          (T * dk, T* dv, const float* ds, const float* probs, const T* q, const T* dout, const int* key_start, int b0,
           int Bc, int Tn, int NH, int NKV, int HD, float scale, int window),
          attn_backward_dkv_impl<T>(dk, dv, ds, probs, q, dout, key_start, b0, Bc, Tn, NH, NKV, HD, scale, window))
