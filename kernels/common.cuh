// common.cuh is prepended to every kernel source before NVRTC compiles it
// (kernels.Program). Kernel sources include no CUDA headers, so that
// compilation needs nothing but NVRTC: this file carries the few helpers they
// share. NVRTC declares the CUDA built-ins itself (threadIdx, expf, logf,
// __shfl_xor_sync, atomicAdd, __float_as_uint, ...).
//
// Conventions:
//   - Storage is float or bf16; arithmetic is float (fp32), reductions that
//     feed a host-side float64 sum use double.
//   - A kernel templated over its storage type T is exported once per type
//     as extern "C" NAME_f32 and NAME_bf16 (see KD_EXPORT below); the Go side
//     picks the name with Backend.kernelFor.
//   - Sizes are int (32-bit) except flat element indices, which are long long
//     so that tensors over 2^31 elements work.

typedef long long i64;

// bf16 is bfloat16 storage: the top 16 bits of an IEEE float32.
struct bf16 {
    unsigned short x;
};

__device__ __forceinline__ float bf16_to_f32(bf16 v) {
    return __uint_as_float(((unsigned int)v.x) << 16);
}

// f32_to_bf16 rounds to nearest even, keeping NaN a (quiet) NaN.
__device__ __forceinline__ bf16 f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    bf16 r;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        r.x = (unsigned short)((u >> 16) | 0x40u);
        return r;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    r.x = (unsigned short)(u >> 16);
    return r;
}

// ld and st read and write one element of storage type T as float.
template <typename T> __device__ __forceinline__ float ld(const T* p, i64 i);
template <> __device__ __forceinline__ float ld<float>(const float* p, i64 i) { return p[i]; }
template <> __device__ __forceinline__ float ld<bf16>(const bf16* p, i64 i) { return bf16_to_f32(p[i]); }

template <typename T> __device__ __forceinline__ void st(T* p, i64 i, float v);
template <> __device__ __forceinline__ void st<float>(float* p, i64 i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void st<bf16>(bf16* p, i64 i, float v) { p[i] = f32_to_bf16(v); }

// atomic_add adds v to p[i] atomically. bf16 goes through a 32-bit
// compare-and-swap on the aligned word holding the element.
template <typename T> __device__ __forceinline__ void atomic_add(T* p, i64 i, float v);
template <> __device__ __forceinline__ void atomic_add<float>(float* p, i64 i, float v) { atomicAdd(p + i, v); }
template <> __device__ __forceinline__ void atomic_add<bf16>(bf16* p, i64 i, float v) {
    bf16* e = p + i;
    unsigned int* word = (unsigned int*)((unsigned long long)e & ~3ull);
    bool high = ((unsigned long long)e & 2ull) != 0;
    unsigned int old = *word, assumed;
    do {
        assumed = old;
        bf16 cur;
        cur.x = (unsigned short)(high ? (assumed >> 16) : (assumed & 0xffffu));
        bf16 nv = f32_to_bf16(bf16_to_f32(cur) + v);
        unsigned int next = high ? ((assumed & 0x0000ffffu) | ((unsigned int)nv.x << 16))
                                 : ((assumed & 0xffff0000u) | (unsigned int)nv.x);
        old = atomicCAS(word, assumed, next);
    } while (old != assumed);
}

#define KD_INF __int_as_float(0x7f800000)
#define KD_NEG_INF __int_as_float(0xff800000)

// Warp and block reductions. Block reductions need blockDim.x to be a
// multiple of 32 (at most 1024) and every thread of the block to call them;
// the result is returned to every thread. They use 32 floats (or doubles) of
// static shared memory each.
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float block_sum(float v) {
    __shared__ float part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); // part may still be read by a previous call
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = lane < nw ? part[lane] : 0.0f;
    return warp_sum(v);
}
__device__ __forceinline__ double block_sum_d(double v) {
    __shared__ double partd[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) partd[warp] = v;
    __syncthreads();
    v = lane < nw ? partd[lane] : 0.0;
    return warp_sum_d(v);
}
__device__ __forceinline__ float block_max(float v) {
    __shared__ float partm[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) partm[warp] = v;
    __syncthreads();
    v = lane < nw ? partm[lane] : KD_NEG_INF;
    return warp_max(v);
}

// KD_EXPORT(NAME, ARGS, CALL) defines NAME_f32 and NAME_bf16 as extern "C"
// kernels whose body calls the template CALL with T bound to the storage
// type, e.g.
//   template <typename T> __device__ void scale_impl(T* x, i64 n, float s) {...}
//   KD_EXPORT(scale, (T* x, i64 n, float s), scale_impl<T>(x, n, s))
#define KD_EXPORT(NAME, ARGS, CALL)                                  \
    namespace kd_##NAME##_f32 { typedef float T; extern "C" __global__ void NAME##_f32 ARGS { CALL; } } \
    namespace kd_##NAME##_bf16 { typedef bf16 T; extern "C" __global__ void NAME##_bf16 ARGS { CALL; } }
