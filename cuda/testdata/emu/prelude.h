// prelude.h lets g++ compile kdnative's CUDA kernels (kernels/*.cu) for the
// CPU, so that the tests can run the real kernel code without a GPU. It is
// test-only and emulates just the CUDA subset the kernels use.
//
// Execution model: a launch runs its blocks one after another; a block's
// threads are fibers scheduled on the calling OS thread. A fiber
// runs until it reaches a barrier (__syncthreads, or a warp shuffle, which
// synchronizes its warp) or returns. A block barrier releases when every
// live thread of the block has arrived, a warp barrier when every live lane
// of the warp has; threads that returned count as arrived, as on Volta and
// later. If no fiber can run and some wait, the kernel has a barrier in
// divergent code: the launch fails with an error instead of hanging.
// Atomics are plain read-modify-writes: one OS thread runs everything.
// Static __shared__ variables are shared by a block's fibers because blocks
// never overlap in time. Every other launch runs blocks and threads in
// reverse order, so that a missing barrier, or a block that depends on
// another having run first, shows as a wrong result in one of the orders.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__ __restrict
#define __launch_bounds__(...)

struct uint3 {
    unsigned x, y, z;
};
typedef uint3 dim3_t;

// Fiber switching. On x86-64 a few instructions save the callee-saved
// registers and swap stacks (ucontext's swapcontext makes a system call per
// switch, which made the emulator too slow); elsewhere ucontext does it.
#if defined(__x86_64__)
extern "C" void kd_emu_swap(void** save, void* to);
asm(R"(
.text
.hidden kd_emu_swap
.globl kd_emu_swap
.type kd_emu_swap,@function
kd_emu_swap:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
)");
struct Context {
    void* sp;
};
inline void ctxInit(Context* c, char* stack, size_t size, void (*fn)()) {
    uintptr_t top = ((uintptr_t)(stack + size)) & ~(uintptr_t)15;
    void** sp = (void**)(top - 8 * 8);
    for (int i = 0; i < 6; i++) sp[i] = nullptr; // r15 r14 r13 r12 rbx rbp
    sp[6] = (void*)fn;                           // ret jumps here, rsp ≡ 8 (mod 16) as after a call
    sp[7] = nullptr;
    c->sp = sp;
}
inline void ctxSwap(Context* from, Context* to) { kd_emu_swap(&from->sp, to->sp); }
#else
struct Context {
    ucontext_t uc;
};
inline void ctxInit(Context* c, char* stack, size_t size, void (*fn)()) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = nullptr;
    makecontext(&c->uc, fn, 0);
}
inline void ctxSwap(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }
#endif

namespace kdemu {

enum State { READY, WAIT_BLOCK, WAIT_WARP, DONE };

struct Fiber {
    Context ctx;
    char* stack;
    State state;
    uint3 tid;
    unsigned flat;
    int pred; // __syncthreads_or's argument
};

const int kMaxThreads = 1024;
const size_t kStackSize = 256 << 10;

struct Block {
    Fiber fibers[kMaxThreads];
    int n;          // threads in the block
    int live;       // not DONE
    int blockWaiting;
    int warpWaiting[kMaxThreads / 32];
    int warpLive[kMaxThreads / 32];
    int orResult;
    Context sched;
    Fiber* cur;
    uint3 bIdx, bDim, gDim;
    double shfl[kMaxThreads];
    char* dynSmem;
    unsigned dynSmemBytes;
    void (*entry)(void*);
    void* arg;
    const char* error; // set by a thread (a misused warp-collective op); fails the launch
    bool reverse;
    char errBuf[256];
};

static Block blk;

inline Fiber* cur() { return blk.cur; }

static void fiberMain() {
    blk.entry(blk.arg);
    Fiber* f = blk.cur;
    f->state = DONE;
    blk.live--;
    blk.warpLive[f->flat / 32]--;
    ctxSwap(&f->ctx, &blk.sched);
}

inline void yieldTo(State s) {
    Fiber* f = blk.cur;
    f->state = s;
    if (s == WAIT_BLOCK) blk.blockWaiting++;
    if (s == WAIT_WARP) blk.warpWaiting[f->flat / 32]++;
    ctxSwap(&f->ctx, &blk.sched);
}

// release wakes the waiters of every barrier that is complete.
static bool release() {
    bool any = false;
    if (blk.blockWaiting > 0 && blk.blockWaiting == blk.live) {
        for (int i = 0; i < blk.n; i++)
            if (blk.fibers[i].state == WAIT_BLOCK) blk.fibers[i].state = READY;
        blk.blockWaiting = 0;
        any = true;
    }
    for (int w = 0; w < (blk.n + 31) / 32; w++) {
        if (blk.warpWaiting[w] > 0 && blk.warpWaiting[w] == blk.warpLive[w]) {
            for (int i = w * 32; i < blk.n && i < w * 32 + 32; i++)
                if (blk.fibers[i].state == WAIT_WARP) blk.fibers[i].state = READY;
            blk.warpWaiting[w] = 0;
            any = true;
        }
    }
    return any;
}

// runBlock runs one block to completion; it returns an error or nullptr.
static const char* runBlock(uint3 bidx) {
    blk.bIdx = bidx;
    blk.error = nullptr;
    blk.live = blk.n;
    blk.blockWaiting = 0;
    for (int w = 0; w < kMaxThreads / 32; w++) {
        blk.warpWaiting[w] = 0;
        int lanes = blk.n - w * 32;
        blk.warpLive[w] = lanes < 0 ? 0 : (lanes > 32 ? 32 : lanes);
    }
    for (int i = 0; i < blk.n; i++) {
        Fiber* f = &blk.fibers[i];
        if (!f->stack) f->stack = (char*)malloc(kStackSize);
        ctxInit(&f->ctx, f->stack, kStackSize, fiberMain);
        f->state = READY;
        f->flat = i;
        f->tid.x = i % blk.bDim.x;
        f->tid.y = (i / blk.bDim.x) % blk.bDim.y;
        f->tid.z = i / (blk.bDim.x * blk.bDim.y);
    }
    while (blk.live > 0) {
        bool ran = false;
        for (int j = 0; j < blk.n; j++) {
            // Every other launch runs the threads in reverse order, so that a
            // thread reading what another wrote without a barrier between
            // sees stale data in one of the two orders.
            int i = blk.reverse ? blk.n - 1 - j : j;
            Fiber* f = &blk.fibers[i];
            if (f->state != READY) continue;
            blk.cur = f;
            ctxSwap(&blk.sched, &f->ctx);
            ran = true;
        }
        bool released = release();
        if (!ran && !released && blk.live > 0)
            return "deadlock: threads wait at a barrier that the rest of their block or warp never reaches (a __syncthreads or shuffle in divergent code)";
    }
    return blk.error;
}

} // namespace kdemu

#define threadIdx (kdemu::cur()->tid)
#define blockIdx (kdemu::blk.bIdx)
#define blockDim (kdemu::blk.bDim)
#define gridDim (kdemu::blk.gDim)
#define KD_EMU_DYN_SMEM(type, name) type* name = (type*)kdemu::blk.dynSmem

inline void __syncthreads() { kdemu::yieldTo(kdemu::WAIT_BLOCK); }
inline int __syncthreads_or(int pred) {
    // Every thread contributes, then waits; the OR is complete when all have.
    static int acc;
    if (kdemu::blk.blockWaiting == 0) acc = 0;
    acc |= (pred != 0);
    kdemu::yieldTo(kdemu::WAIT_BLOCK);
    int r = acc;
    // A second barrier so that no thread starts the next OR before all read.
    kdemu::yieldTo(kdemu::WAIT_BLOCK);
    return r;
}
inline void __syncwarp(unsigned = 0xffffffffu) { kdemu::yieldTo(kdemu::WAIT_WARP); }

template <typename V> inline V kd_shfl(V v, int srcLane) {
    kdemu::Fiber* f = kdemu::cur();
    unsigned warp = f->flat / 32;
    double* slot = kdemu::blk.shfl;
    memcpy(&slot[f->flat], &v, sizeof(V));
    kdemu::yieldTo(kdemu::WAIT_WARP);
    V r;
    memcpy(&r, &slot[warp * 32 + (srcLane & 31)], sizeof(V));
    kdemu::yieldTo(kdemu::WAIT_WARP);
    return r;
}
template <typename V> inline V __shfl_xor_sync(unsigned, V v, int mask) {
    return kd_shfl(v, (int)(kdemu::cur()->flat % 32) ^ mask);
}
template <typename V> inline V __shfl_sync(unsigned, V v, int lane) { return kd_shfl(v, lane); }
template <typename V> inline V __shfl_down_sync(unsigned, V v, int d) {
    int lane = (int)(kdemu::cur()->flat % 32);
    return kd_shfl(v, lane + d < 32 ? lane + d : lane);
}

// ---------------------------------------------------------------- warp matrix ops
//
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 and
// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16, modelled exactly as the
// PTX ISA specifies their fragments (section "Matrix Fragments for
// mma.m16n8k16 with floating point type", and ldmatrix). The kernels call
// them through common.cuh's helpers, which use inline PTX on the device.
// Each is a warp-collective point: every lane deposits its fragment (or row
// address), the warp synchronizes, and each lane then computes its result
// from all 32 lanes' deposits, as the hardware gathers them. All 32 lanes
// must be live and at the same instruction ("aligned"); otherwise the
// launch fails.
namespace kdemu {
struct WarpSlot {
    const char* op;
    unsigned a[4], b[2];
    float c[4];
    const unsigned short* row;
};
static WarpSlot slots[kMaxThreads];

inline void fail(const char* msg) {
    if (!blk.error) {
        snprintf(blk.errBuf, sizeof blk.errBuf, "%s", msg);
        blk.error = blk.errBuf;
    }
}

// collective deposits this lane's slot (filled by the caller) and waits for
// the warp; it returns the index of lane 0's slot.
inline int collective(const char* op) {
    Fiber* f = cur();
    int w = f->flat / 32;
    slots[f->flat].op = op;
    if (blk.warpLive[w] != 32 || blk.n < (w + 1) * 32) {
        char m[200];
        snprintf(m, sizeof m, "%s with %d of 32 lanes of warp %d live: warp matrix ops need the whole warp", op,
                 blk.warpLive[w], w);
        fail(m);
    }
    yieldTo(WAIT_WARP);
    for (int i = 0; i < 32; i++)
        if (slots[w * 32 + i].op != op) {
            char m[200];
            snprintf(m, sizeof m, "lanes of warp %d reached different warp-collective ops (%s, %s)", w, op,
                     slots[w * 32 + i].op ? slots[w * 32 + i].op : "a shuffle or __syncwarp");
            fail(m);
            break;
        }
    return w * 32;
}

inline float bf16f(unsigned short h) {
    unsigned u = (unsigned)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline unsigned short half16(unsigned reg, int hi) { return (unsigned short)(hi ? reg >> 16 : reg & 0xffffu); }
} // namespace kdemu

// d = A·B + c for A 16×16 (row), B 16×8 (col), bf16 elements, fp32
// accumulators. Lane l (groupID g = l>>2, threadID_in_group q = l%4) holds
//   A: a[0] = A[g][2q, 2q+1], a[1] = A[g+8][2q, 2q+1], a[2] = A[g][2q+8, 2q+9],
//      a[3] = A[g+8][2q+8, 2q+9]   (lower 16 bits: the lower column)
//   B: b[0] = B[2q, 2q+1][g], b[1] = B[2q+8, 2q+9][g]   (lower bits: lower row)
//   C, D: c[0] = C[g][2q], c[1] = C[g][2q+1], c[2] = C[g+8][2q], c[3] = C[g+8][2q+1].
// Products of bf16 values are exact in fp32; the sum is formed in double and
// rounded once (the hardware's internal accumulation order is unspecified).
inline void kd_emu_mma_m16n8k16_bf16(float* d, const unsigned* a, const unsigned* b, const float* c) {
    using namespace kdemu;
    unsigned me = cur()->flat;
    WarpSlot* s = &slots[me];
    memcpy(s->a, a, sizeof s->a);
    memcpy(s->b, b, sizeof s->b);
    memcpy(s->c, c, sizeof s->c);
    WarpSlot* w = &slots[collective("mma.m16n8k16")];
    auto A = [&](int r, int k) {
        int lane = (r & 7) * 4 + ((k & 7) >> 1), reg = (r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
        return bf16f(half16(w[lane].a[reg], k & 1));
    };
    auto B = [&](int k, int n) {
        int lane = n * 4 + ((k & 7) >> 1), reg = k >= 8 ? 1 : 0;
        return bf16f(half16(w[lane].b[reg], k & 1));
    };
    int g = (me & 31) >> 2, q = me & 3;
    float out[4];
    for (int i = 0; i < 4; i++) {
        int r = g + (i >= 2 ? 8 : 0), n = 2 * q + (i & 1);
        double acc = 0.0;
        for (int k = 0; k < 16; k++) acc += (double)A(r, k) * (double)B(k, n);
        out[i] = (float)(acc + (double)s->c[i]);
    }
    yieldTo(WAIT_WARP); // every lane has read the deposits
    s->op = nullptr;
    memcpy(d, out, sizeof out);
}

// r[i] = this lane's fragment of 8×8 matrix i (i = 0…3) of b16 elements,
// whose 8 rows of 16 bytes start at the addresses lanes 8i … 8i+7 give.
// Lane l receives row l/4, columns 2(l%4) and 2(l%4)+1 (lower 16 bits: the
// lower column); with trans, the transpose: rows 2(l%4) and 2(l%4)+1 of
// column l/4. Row addresses must be 16-byte aligned and lie in the block's
// dynamic shared memory (where the kernels keep their tiles).
inline void kd_emu_ldmatrix_x4(unsigned* r, const void* row, bool trans) {
    using namespace kdemu;
    unsigned me = cur()->flat;
    slots[me].row = (const unsigned short*)row;
    uintptr_t p = (uintptr_t)row, lo = (uintptr_t)blk.dynSmem;
    if ((p & 15) != 0) fail("ldmatrix: a row address is not 16-byte aligned");
    if (p < lo || p + 16 > lo + blk.dynSmemBytes) fail("ldmatrix: a row address is outside the block's dynamic shared memory");
    WarpSlot* w = &slots[collective(trans ? "ldmatrix.x4.trans" : "ldmatrix.x4")];
    int l = me & 31, q = l & 3, g = l >> 2;
    unsigned out[4];
    for (int i = 0; i < 4; i++) {
        const WarpSlot* m = &w[8 * i];
        unsigned lo16, hi16;
        if (!blk.error) {
            if (!trans) {
                lo16 = m[g].row[2 * q];
                hi16 = m[g].row[2 * q + 1];
            } else {
                lo16 = m[2 * q].row[g];
                hi16 = m[2 * q + 1].row[g];
            }
        } else {
            lo16 = hi16 = 0xffff; // a misuse already failed the launch
        }
        out[i] = lo16 | (hi16 << 16);
    }
    yieldTo(WAIT_WARP);
    slots[me].op = nullptr;
    memcpy(r, out, sizeof out);
}

// CUDA's min and max overloads.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
inline int __float_as_int(float f) { int u; memcpy(&u, &f, 4); return u; }
inline double __longlong_as_double(long long u) { double d; memcpy(&d, &u, 8); return d; }
inline long long __double_as_longlong(double d) { long long u; memcpy(&u, &d, 8); return u; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __expf(float a) { return expf(a); }
inline float __logf(float a) { return logf(a); }
inline float rsqrtf(float a) { return 1.0f / sqrtf(a); }
inline double rsqrt(double a) { return 1.0 / sqrt(a); }

template <typename V> inline V atomicAdd(V* p, V v) { V o = *p; *p = o + v; return o; }
template <typename V> inline V atomicOr(V* p, V v) { V o = *p; *p = o | v; return o; }
template <typename V> inline V atomicMax(V* p, V v) { V o = *p; *p = o > v ? o : v; return o; }
template <typename V> inline V atomicCAS(V* p, V c, V v) { V o = *p; if (o == c) *p = v; return o; }
template <typename V> inline V atomicExch(V* p, V v) { V o = *p; *p = v; return o; }

namespace kdemu {

// Launch unpacks the kernel's parameters from the driver-style array of
// pointers, reading each as the kernel's own parameter type, as the driver
// does, then runs the grid.
template <typename... A> struct Kernel;
template <typename... A> struct Kernel<void (*)(A...)> {
    template <size_t... I> struct Seq {};
    template <size_t N, size_t... I> struct Make : Make<N - 1, N - 1, I...> {};
    template <size_t... I> struct Make<0, I...> { typedef Seq<I...> type; };
    static void (*fn)(A...);
    static void** params;
    template <size_t... I> static void call(Seq<I...>) { fn(*(A*)params[I]...); }
    static void entry(void*) { call(typename Make<sizeof...(A)>::type()); }
};
template <typename... A> void (*Kernel<void (*)(A...)>::fn)(A...);
template <typename... A> void** Kernel<void (*)(A...)>::params;

template <typename... A> int nparams(void (*)(A...)) { return sizeof...(A); }

// run executes a grid; the error is copied to err (at most errLen bytes).
template <typename F>
int run(F fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shmem,
        void** params, char* err, int errLen) {
    unsigned threads = bx * by * bz;
    if (threads == 0 || threads > (unsigned)kMaxThreads || bx > 1024 || by > 1024 || bz > 64 || gx == 0 ||
        gy == 0 || gz == 0 || gy > 65535 || gz > 65535) {
        snprintf(err, errLen, "invalid launch configuration: grid (%u, %u, %u), block (%u, %u, %u)", gx, gy, gz,
                 bx, by, bz);
        return 1; // CUDA_ERROR_INVALID_VALUE
    }
    Kernel<F>::fn = fn;
    Kernel<F>::params = params;
    blk.n = threads;
    blk.bDim = {bx, by, bz};
    blk.gDim = {gx, gy, gz};
    blk.entry = Kernel<F>::entry;
    blk.arg = nullptr;
    static char* smem;
    static unsigned smemCap;
    if (shmem > smemCap) {
        free(smem);
        smem = (char*)malloc(shmem);
        smemCap = shmem;
    }
    blk.dynSmem = smem;
    blk.dynSmemBytes = shmem;
    static unsigned launches;
    blk.reverse = (launches++ & 1) != 0;
    for (unsigned zz = 0; zz < gz; zz++)
        for (unsigned yy = 0; yy < gy; yy++)
            for (unsigned xx = 0; xx < gx; xx++) {
                // Blocks run in reverse order too on those launches.
                unsigned x = blk.reverse ? gx - 1 - xx : xx, y = blk.reverse ? gy - 1 - yy : yy,
                         z = blk.reverse ? gz - 1 - zz : zz;
                if (shmem) memset(smem, 0xcd, shmem); // uninitialized shared memory is garbage
                if (const char* e = runBlock({x, y, z})) {
                    snprintf(err, errLen, "block (%u, %u, %u): %s", x, y, z, e);
                    return 719; // CUDA_ERROR_LAUNCH_FAILED
                }
            }
    return 0;
}

} // namespace kdemu
