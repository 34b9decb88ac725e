// optim.cu: the optimizer's multi-tensor kernels — the global gradient norm,
// the clip factor and AdamW over every parameter in three launches, with
// nothing read back to the host (Backend.AdamWStep in cuda/ops_optim.go).
//
// The parameters are described by two tables the backend uploads once per
// group (PrepareAdamW):
//   tensors [T][OPT_FIELDS] u64: param, master (0: none), grad, m, v (device
//       addresses), n (elements), flags (OPT_DECAY, OPT_PARAM_BF16), unused;
//   chunks [K][2] i64: tensor index, first element — every tensor cut into
//       chunks of `chunk` elements, so that blocks get equal work whatever
//       the tensors' sizes.
// Gradients, moments and master weights are F32; a param is F32 or bf16.

#define OPT_FIELDS 8
#define OPT_DECAY 1ull
#define OPT_PARAM_BF16 2ull

// part[blockIdx.x] = Σ g² over the block's chunks (blockIdx.x, + gridDim.x,
// …), accumulated in double.
extern "C" __global__ void opt_sum_squares(double* part, const unsigned long long* tensors, const long long* chunks,
                                           int nchunks, int chunk) {
    double acc = 0.0;
    for (int c = blockIdx.x; c < nchunks; c += gridDim.x) {
        const unsigned long long* t = tensors + OPT_FIELDS * chunks[2 * c];
        const float* g = (const float*)t[2];
        i64 start = chunks[2 * c + 1], n = (i64)t[5];
        i64 end = start + chunk < n ? start + chunk : n;
        for (i64 i = start + threadIdx.x; i < end; i += blockDim.x) {
            double v = (double)g[i];
            acc += v * v;
        }
    }
    acc = block_sum_d(acc);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

// One thread: total = Σ part[0 … nparts) in order (deterministic), norm[0] =
// √total as float, and state = {clip factor min(1, max_norm/(√total + 1e-6))
// (1 when max_norm ≤ 0), 1 if √total is finite else 0}, formed in double as
// the CPU forms them.
extern "C" __global__ void opt_clip(float* norm, float* state, const double* part, int nparts, float max_norm) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double total = 0.0;
    for (int i = 0; i < nparts; i++) total += part[i];
    double n = sqrt(total);
    norm[0] = (float)n;
    bool finite = n == n && n <= 1.7976931348623157e308;
    double c = 1.0;
    if (max_norm > 0.0f && finite) {
        c = (double)max_norm / (n + 1e-6);
        if (c > 1.0) c = 1.0;
    }
    state[0] = (float)c;
    state[1] = finite ? 1.0f : 0.0f;
}

// AdamW on every chunk, as torch.optim.AdamW with the gradient times the
// clip factor state[0]; nothing when state[1] is 0 (a non-finite norm). The
// update applies to the master (or to the param itself when there is no
// master), which is then stored into the param, rounded for bf16. The host
// forms stepSize = lr/(1−β₁ᵗ), decay = 1 − lr·wd and bc2 = √(1−β₂ᵗ) in
// float64, as for ew_adamw; tensors without OPT_DECAY use decay 1. They come
// in device memory, hyper = {stepSize, decay, β₁, β₂, eps, bc2}, uploaded
// each step, so that the launch itself is the same every step (a CUDA graph
// replays it).
extern "C" __global__ void opt_adamw(const unsigned long long* tensors, const long long* chunks, int nchunks,
                                     int chunk, const float* state, const float* hyper) {
    if (state[1] == 0.0f) return;
    const float clip = state[0];
    const float stepSize = hyper[0], decay = hyper[1], b1 = hyper[2], b2 = hyper[3], eps = hyper[4], bc2 = hyper[5];
    for (int c = blockIdx.x; c < nchunks; c += gridDim.x) {
        const unsigned long long* t = tensors + OPT_FIELDS * chunks[2 * c];
        float* master = (float*)t[1];
        const float* g = (const float*)t[2];
        float* m = (float*)t[3];
        float* v = (float*)t[4];
        i64 start = chunks[2 * c + 1], n = (i64)t[5];
        i64 end = start + chunk < n ? start + chunk : n;
        unsigned long long flags = t[6];
        float dec = (flags & OPT_DECAY) ? decay : 1.0f;
        bool half = (flags & OPT_PARAM_BF16) != 0;
        for (i64 i = start + threadIdx.x; i < end; i += blockDim.x) {
            float gi = g[i] * clip;
            float p;
            if (master != nullptr) {
                p = master[i];
            } else if (half) {
                p = ld((const bf16*)t[0], i);
            } else {
                p = ((const float*)t[0])[i];
            }
            p *= dec;
            float mi = b1 * m[i] + (1.0f - b1) * gi;
            float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
            m[i] = mi;
            v[i] = vi;
            p -= stepSize * mi / (sqrtf(vi) / bc2 + eps);
            if (master != nullptr) master[i] = p;
            if (half) {
                st((bf16*)t[0], i, p);
            } else {
                ((float*)t[0])[i] = p;
            }
        }
    }
}
