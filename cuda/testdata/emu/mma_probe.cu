// mma_probe.cu: a test-only kernel (cuda/mma_test.go) for the warp matrix
// ops of common.cuh. One warp computes C[16×8] = A[16×16]·B[16×8] (bf16, row
// major) through shared memory, ldmatrix and mma.sync, and stores C (fp32,
// row major). variant 0 uses the fragment layouts the PTX ISA specifies;
// the others each make one mistake that a kernel author could make, which
// the emulator must turn into a wrong product:
//   1: A's registers 1 and 2 swapped (the row-half and column-half confused)
//   2: B loaded without .trans (the k-major tile taken as n-major)
//   3: C's accumulators 1 and 2 swapped when storing
//   4: as 0, but A's fragment built with plain 32-bit loads, no ldmatrix
// Dynamic shared memory: 16·16 + 16·8 bf16 (768 bytes).
extern "C" __global__ void mma_probe(float* c, const bf16* a, const bf16* b, int variant) {
    extern __shared__ float probe_sm[];
    bf16* sA = (bf16*)probe_sm; // [16][16]
    bf16* sB = sA + 256;        // [16][8]
    int l = threadIdx.x, g = l >> 2, q = l & 3;
    for (int i = l; i < 256; i += 32) sA[i] = a[i];
    for (int i = l; i < 128; i += 32) sB[i] = b[i];
    __syncthreads();
    unsigned fa[4], fb4[4], fb[2];
    if (variant == 4) {
        const unsigned* w = (const unsigned*)sA; // row r, column pair j at w[r·8 + j]
        fa[0] = w[g * 8 + q];
        fa[1] = w[(g + 8) * 8 + q];
        fa[2] = w[g * 8 + 4 + q];
        fa[3] = w[(g + 8) * 8 + 4 + q];
    } else {
        // Matrix l/8 of A: rows 0–7 | 8–15 of columns 0–7, then of 8–15.
        int row = (l & 7) + ((l >> 3) & 1) * 8, col = (l >> 4) * 8;
        ldmatrix_x4(fa, sA + row * 16 + col);
    }
    if (variant == 1) {
        unsigned t = fa[1];
        fa[1] = fa[2];
        fa[2] = t;
    }
    // B's rows k = 0–7 and 8–15 (8 columns each) as matrices 0 and 1; lanes
    // 16–31 repeat them (x4 needs 32 addresses).
    const bf16* brow = sB + (l & 15) * 8;
    if (variant == 2) ldmatrix_x4(fb4, brow);
    else ldmatrix_x4_trans(fb4, brow);
    fb[0] = fb4[0];
    fb[1] = fb4[1];
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    mma_bf16_16816(acc, fa, fb, acc);
    if (variant == 3) {
        float t = acc[1];
        acc[1] = acc[2];
        acc[2] = t;
    }
    c[g * 8 + 2 * q] = acc[0];
    c[g * 8 + 2 * q + 1] = acc[1];
    c[(g + 8) * 8 + 2 * q] = acc[2];
    c[(g + 8) * 8 + 2 * q + 1] = acc[3];
}

// mma_probe_diverged: lanes 0–15 reach mma while lanes 16–31 are at a
// shuffle (undefined on the GPU: mma.sync.aligned needs the whole warp at
// the same instruction): the emulator must fail the launch rather than
// compute with the others' stale fragments.
extern "C" __global__ void mma_probe_diverged(float* c) {
    unsigned a[4] = {0x3f803f80u, 0, 0, 0}, b[2] = {0x3f803f80u, 0};
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (threadIdx.x < 16) mma_bf16_16816(acc, a, b, acc);
    else acc[0] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
    c[threadIdx.x] = acc[0];
}

// mma_probe_partial: a block of 48 threads, whose second warp has 16 lanes.
extern "C" __global__ void mma_probe_partial(float* c) {
    unsigned a[4] = {0x3f803f80u, 0, 0, 0}, b[2] = {0x3f803f80u, 0};
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    mma_bf16_16816(acc, a, b, acc);
    c[threadIdx.x] = acc[0];
}
