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
// KD_EXPORT_BOUNDED(NAME, THREADS, ARGS, CALL) is KD_EXPORT for kernels
// launched with more than 256 threads: __launch_bounds__(THREADS) makes the
// compiler fit THREADS threads' registers in one SM (without it a 1024-thread
// launch of a kernel using over 64 registers fails). The backend refuses a
// launch above 256 threads of a kernel without bounds, or above its bounds.
#define KD_EXPORT_BOUNDED(NAME, THREADS, ARGS, CALL)                                                             \
    namespace kd_##NAME##_f32 { typedef float T;                                                                 \
        extern "C" __global__ void __launch_bounds__(THREADS) NAME##_f32 ARGS { CALL; } }                         \
    namespace kd_##NAME##_bf16 { typedef bf16 T;                                                                 \
        extern "C" __global__ void __launch_bounds__(THREADS) NAME##_bf16 ARGS { CALL; } }

// ---------------------------------------------------------------- attention masks
// (attention.cu and attention_mma.cu; see attention.cu for the rules)

// attn_first is the first key position query t of sequence b sees.
__device__ __forceinline__ int attn_first(int t, int window, const int* key_start, int b) {
    int lo = (window > 0 && t - window + 1 > 0) ? t - window + 1 : 0;
    if (key_start != nullptr && key_start[b] > lo) lo = key_start[b];
    return lo;
}

// attn_last_query is one past the last query that sees key s (ignoring left
// padding, which hides keys, not queries): t − s < window.
__device__ __forceinline__ int attn_last_query(int s, int window, int Tn) {
    return (window > 0 && s + window < Tn) ? s + window : Tn;
}

// ---------------------------------------------------------------- tensor cores
//
// Warp-level bf16 matrix ops, sm_80 and later (the backend runs the scalar
// kernels on older GPUs, where these bodies trap). On the device they are
// inline PTX; compiled for the kernel emulator (no __CUDA_ARCH__) they call
// its exact C++ models of the same instructions (cuda/testdata/emu/prelude.h).
// All 32 lanes of the warp must call them together.
//
// Fragments of mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, for lane
// l with g = l/4 and q = l%4 (two bf16 per 32-bit register, the lower column
// or row in the lower 16 bits):
//   A 16×16: a[0] = A[g][2q..2q+1], a[1] = A[g+8][2q..], a[2] = A[g][2q+8..],
//            a[3] = A[g+8][2q+8..]
//   B 16×8:  b[0] = B[2q..2q+1][g], b[1] = B[2q+8..2q+9][g]
//   C/D 16×8 fp32: c[0] = C[g][2q], c[1] = C[g][2q+1], c[2] = C[g+8][2q],
//            c[3] = C[g+8][2q+1]
// so the accumulators of two neighbouring 16×8 tiles, C0 (columns 0–7) and
// C1 (8–15), rounded to bf16, are the A fragment of the 16×16 tile [C0 C1]:
// a = {pack(C0[0], C0[1]), pack(C0[2], C0[3]), pack(C1[0], C1[1]), pack(C1[2], C1[3])}.

// mma_bf16_16816 computes d = A·B + c on the tensor cores (fp32 accumulation).
__device__ __forceinline__ void mma_bf16_16816(float* d, const unsigned* a, const unsigned* b, const float* c) {
#if defined(__CUDA_ARCH__)
#if __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#else
    d[0] = c[0], d[1] = c[1], d[2] = c[2], d[3] = c[3];
    __trap();
#endif
#else
    kd_emu_mma_m16n8k16_bf16(d, a, b, c);
#endif
}

// smem_addr is a generic pointer into shared memory as a .shared address.
__device__ __forceinline__ unsigned smem_addr(const void* p) {
#if defined(__CUDA_ARCH__)
    unsigned r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }\n" : "=r"(r) : "l"(p));
    return r;
#else
    return 0;
#endif
}

// ldmatrix_x4 loads four 8×8 b16 matrices from shared memory: lane l gives
// the address of row l%8 of matrix l/8 (16 bytes, 16-byte aligned) and
// receives r[i] = matrix i's [l/4][2(l%4) .. 2(l%4)+1]. ldmatrix_x4_trans
// gives the transposes: r[i] = matrix i's [2(l%4) .. 2(l%4)+1][l/4].
__device__ __forceinline__ void ldmatrix_x4(unsigned* r, const void* row) {
#if defined(__CUDA_ARCH__)
#if __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(row)));
#else
    r[0] = r[1] = r[2] = r[3] = 0;
    __trap();
#endif
#else
    kd_emu_ldmatrix_x4(r, row, false);
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned* r, const void* row) {
#if defined(__CUDA_ARCH__)
#if __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(row)));
#else
    r[0] = r[1] = r[2] = r[3] = 0;
    __trap();
#endif
#else
    kd_emu_ldmatrix_x4(r, row, true);
#endif
}

// pack_bf16 rounds lo and hi to bf16 (nearest even) into one register, lo in
// the lower 16 bits.
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
#else
    return (unsigned)f32_to_bf16(lo).x | ((unsigned)f32_to_bf16(hi).x << 16);
#endif
}

// kd_u4 is 16 bytes moved as one vector load or store (8 bf16 or 4 floats);
// the address must be 16-byte aligned.
struct alignas(16) kd_u4 {
    unsigned x, y, z, w;
};

// kd_aligned16 reports whether p may be read or written with kd_u4.
__device__ __forceinline__ bool kd_aligned16(const void* p) { return ((unsigned long long)p & 15ull) == 0; }

// ld8 reads p[i … i+7] as float and st8 writes them, with 16-byte vector
// accesses (one for bf16, two for float): p + i must be 16-byte aligned.
template <typename T> __device__ __forceinline__ void ld8(const T* p, i64 i, float* f);
template <> __device__ __forceinline__ void ld8<float>(const float* p, i64 i, float* f) {
    kd_u4 a = *(const kd_u4*)(p + i), b = *(const kd_u4*)(p + i + 4);
    f[0] = __uint_as_float(a.x), f[1] = __uint_as_float(a.y), f[2] = __uint_as_float(a.z), f[3] = __uint_as_float(a.w);
    f[4] = __uint_as_float(b.x), f[5] = __uint_as_float(b.y), f[6] = __uint_as_float(b.z), f[7] = __uint_as_float(b.w);
}
template <> __device__ __forceinline__ void ld8<bf16>(const bf16* p, i64 i, float* f) {
    kd_u4 a = *(const kd_u4*)(p + i);
    unsigned w[4] = {a.x, a.y, a.z, a.w};
    for (int k = 0; k < 4; k++) {
        f[2 * k] = __uint_as_float(w[k] << 16);
        f[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
}
template <typename T> __device__ __forceinline__ void st8(T* p, i64 i, const float* f);
template <> __device__ __forceinline__ void st8<float>(float* p, i64 i, const float* f) {
    kd_u4 a = {__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3])};
    kd_u4 b = {__float_as_uint(f[4]), __float_as_uint(f[5]), __float_as_uint(f[6]), __float_as_uint(f[7])};
    *(kd_u4*)(p + i) = a;
    *(kd_u4*)(p + i + 4) = b;
}
template <> __device__ __forceinline__ void st8<bf16>(bf16* p, i64 i, const float* f) {
    kd_u4 a;
    a.x = (unsigned)f32_to_bf16(f[0]).x | ((unsigned)f32_to_bf16(f[1]).x << 16);
    a.y = (unsigned)f32_to_bf16(f[2]).x | ((unsigned)f32_to_bf16(f[3]).x << 16);
    a.z = (unsigned)f32_to_bf16(f[4]).x | ((unsigned)f32_to_bf16(f[5]).x << 16);
    a.w = (unsigned)f32_to_bf16(f[6]).x | ((unsigned)f32_to_bf16(f[7]).x << 16);
    *(kd_u4*)(p + i) = a;
}

// KD_VEC8_LOOP(v, n, aligned) runs a grid-stride loop over the 8-element
// vectors v of [0, n) when aligned (every pointer the body touches 16-byte
// aligned), else over none; KD_TAIL_LOOP(i, n, aligned) then covers the
// elements the vectors did not: [8·⌊n/8⌋, n), or all of [0, n).
#define KD_VEC8_LOOP(v, n, aligned)                                                                        \
    for (i64 v = (aligned) ? (i64)blockIdx.x * blockDim.x + threadIdx.x : (n) / 8; v < (n) / 8;           \
         v += (i64)gridDim.x * blockDim.x)
#define KD_TAIL_LOOP(i, n, aligned)                                                                        \
    for (i64 i = ((aligned) ? (n) / 8 * 8 : 0) + (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);     \
         i += (i64)gridDim.x * blockDim.x)
