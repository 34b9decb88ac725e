package cuda

import (
	"fmt"
	"unsafe"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// cublasStatus is cuBLAS's status enum.
type cublasStatus int32

// cuBLAS enum values (cublas_api.h, library_types.h).
const (
	cublasOpN = 0
	cublasOpT = 1

	cudaR32F  = 0
	cudaR16BF = 14

	cublasCompute32F   = 68
	cublasGemmDefault  = -1
	cublasDefaultMath  = 0
	cublasPedanticMath = 2
)

// cublas is a cuBLAS handle and the calls the backend makes. cuBLASLt is
// loaded first because cuBLAS links against it by soname.
type cublas struct {
	lib     *Library
	handle  uintptr
	version string

	cublasCreate       func(h *uintptr) cublasStatus
	cublasSetStream    func(h uintptr, stream uintptr) cublasStatus
	cublasGetVersion   func(h uintptr, v *int32) cublasStatus
	cublasSetMathMode  func(h uintptr, mode int32) cublasStatus
	cublasGetStatusStr func(s cublasStatus) *byte
	cublasGemmEx       func(h uintptr, transa, transb int32, m, n, k int32, alpha unsafe.Pointer,
		a uint64, atype int32, lda int32, b uint64, btype int32, ldb int32, beta unsafe.Pointer,
		c uint64, ctype int32, ldc int32, compute int32, algo int32) cublasStatus
	cublasGemmStridedBatchedEx func(h uintptr, transa, transb int32, m, n, k int32, alpha unsafe.Pointer,
		a uint64, atype int32, lda int32, strideA int64, b uint64, btype int32, ldb int32, strideB int64,
		beta unsafe.Pointer, c uint64, ctype int32, ldc int32, strideC int64, batch int32, compute int32, algo int32) cublasStatus
}

// newCublas loads cuBLAS (and cuBLASLt) for the driver's CUDA version and
// creates a handle on the current context. Call with the backend entered.
func newCublas(driverVersion int) (*cublas, error) {
	if _, err := Load(LibCUBLASLt.ForDriver(driverVersion)); err != nil {
		return nil, err
	}
	lib, err := Load(LibCUBLAS.ForDriver(driverVersion))
	if err != nil {
		return nil, err
	}
	c := &cublas{lib: lib}
	binds := []Binding{
		{&c.cublasCreate, "cublasCreate_v2"},
		{&c.cublasSetStream, "cublasSetStream_v2"},
		{&c.cublasGetVersion, "cublasGetVersion_v2"},
		{&c.cublasSetMathMode, "cublasSetMathMode"},
		{&c.cublasGetStatusStr, "cublasGetStatusString"},
		{&c.cublasGemmEx, "cublasGemmEx"},
		{&c.cublasGemmStridedBatchedEx, "cublasGemmStridedBatchedEx"},
	}
	if err := lib.BindAll(binds); err != nil {
		return nil, err
	}
	if err := c.check("cublasCreate_v2", c.cublasCreate(&c.handle)); err != nil {
		return nil, err
	}
	if err := c.check("cublasSetStream_v2", c.cublasSetStream(c.handle, 0)); err != nil {
		return nil, err
	}
	// Default math: FP32 products in FP32 (no TF32), bf16 products on tensor
	// cores with FP32 accumulation, as the compute type asks.
	if err := c.check("cublasSetMathMode", c.cublasSetMathMode(c.handle, cublasDefaultMath)); err != nil {
		return nil, err
	}
	var v int32
	if err := c.check("cublasGetVersion_v2", c.cublasGetVersion(c.handle, &v)); err != nil {
		return nil, err
	}
	// CUBLAS_VERSION is major*10000 + minor*100 + patch (cublas_api.h; 11.6
	// and older used major*1000).
	if v >= 100000 {
		c.version = fmt.Sprintf("%d.%d.%d", v/10000, v/100%100, v%100)
	} else {
		c.version = fmt.Sprintf("%d.%d.%d", v/1000, v/100%10, v%100)
	}
	return c, nil
}

func (c *cublas) check(call string, s cublasStatus) error {
	if s == 0 {
		return nil
	}
	return fmt.Errorf("%s: %s (cublasStatus %d)", call, cString(c.cublasGetStatusStr(s)), int(s))
}

// cudaType is a storage dtype's cudaDataType.
func cudaType(op string, t *kdrt.Tensor) int32 {
	switch t.DType {
	case kdrt.F32:
		return cudaR32F
	case kdrt.BF16:
		return cudaR16BF
	}
	panic(fmt.Sprintf("cuda %s: %v: dtype %s not supported (F32 or BF16)", op, t, t.DType))
}

// gemmTypes panics unless the operands are a combination cublasGemmEx
// multiplies with FP32 compute: A and B of one dtype, C of theirs or F32
// (BF16·BF16 → F32 gives logits and weight gradients straight from the
// accumulator).
func gemmTypes(op string, c, a, b *kdrt.Tensor) {
	if a.DType != b.DType || (c.DType != a.DType && c.DType != kdrt.F32) {
		panic(fmt.Sprintf("cuda %s: %v = %v·%v: cuBLAS multiplies operands of one dtype into that dtype or F32", op, c, a, b))
	}
}

// gemmDims are the row-major sizes of C = op(A)·op(B).
func gemmDims(c, a, b *kdrt.Tensor, transA, transB bool) (M, N, K int) {
	M, K = a.Rows(), a.Cols()
	if transA {
		M, K = K, M
	}
	Kb, N := b.Rows(), b.Cols()
	if transB {
		Kb, N = N, Kb
	}
	if Kb != K || c.Rows() != M || c.Cols() != N {
		panic(fmt.Sprintf("cuda: matmul %v = op(%v)·op(%v) (transA %v, transB %v): shapes do not agree", c, a, b, transA, transB))
	}
	return M, N, K
}

// MatMul implements runtime.Backend with cublasGemmEx in FP32 compute. cuBLAS
// is column-major: a row-major C[M, N] is the column-major Cᵀ, and
// Cᵀ = op(B)ᵀ·op(A)ᵀ, so B goes first and the leading dimensions are the
// row-major column counts.
func (b *Backend) MatMul(c, a, bm *kdrt.Tensor, transA, transB bool, alpha, beta float32) {
	M, N, K := gemmDims(c, a, bm, transA, transB)
	if M == 0 || N == 0 {
		return
	}
	ta, tb := cudaType("matmul", a), cudaType("matmul", bm)
	tc := cudaType("matmul", c)
	gemmTypes("matmul", c, a, bm)
	if K == 0 { // C = β·C, and C = 0 when β = 0 even where C held NaN
		scaleOrZero(b, c, beta)
		return
	}
	opB, opA := int32(cublasOpN), int32(cublasOpN)
	if transB {
		opB = cublasOpT
	}
	if transA {
		opA = cublasOpT
	}
	pa, pb, pc := b.dptr(a), b.dptr(bm), b.dptr(c)
	al, be := alpha, beta
	defer b.enter()()
	if b.err != nil {
		return
	}
	b.counts.GEMMs++
	s := b.blas.cublasGemmEx(b.blas.handle, opB, opA, int32(N), int32(M), int32(K),
		unsafe.Pointer(&al), pb, tb, int32(bm.Cols()), pa, ta, int32(a.Cols()),
		unsafe.Pointer(&be), pc, tc, int32(N), cublasCompute32F, cublasGemmDefault)
	if err := b.blas.check("cublasGemmEx", s); err != nil {
		b.recordLocked(fmt.Sprintf("matmul %v = %v·%v", c, a, bm), err)
	}
}

// scaleOrZero sets c = β·c, with BLAS's convention that β = 0 means
// overwrite: the old values (NaN included) are not read.
func scaleOrZero(b *Backend, c *kdrt.Tensor, beta float32) {
	switch beta {
	case 0:
		b.Zero(c)
	case 1:
	default:
		b.Scale(c, beta)
	}
}

// BatchedMatMul computes count independent products C_i = α·op(A_i)·op(B_i) +
// β·C_i where the i-th matrices start strideA, strideB, strideC elements
// apart and have the row-major shapes [M, K]-by-[K, N] after op (lda, ldb:
// the row-major column counts of A and B as stored). It is
// cublasGemmStridedBatchedEx in FP32 compute.
func (b *Backend) BatchedMatMul(c, a, bm *kdrt.Tensor, transA, transB bool, M, N, K, count int, strideA, strideB, strideC int, alpha, beta float32) {
	ta, tb, tc := cudaType("batched matmul", a), cudaType("batched matmul", bm), cudaType("batched matmul", c)
	gemmTypes("batched matmul", c, a, bm)
	lda, ldb := K, N
	if transA {
		lda = M
	}
	if transB {
		ldb = K
	}
	if count == 0 || M == 0 || N == 0 {
		return
	}
	need := func(t *kdrt.Tensor, stride, size int) {
		if (count-1)*stride+size > t.Numel() {
			panic(fmt.Sprintf("cuda: batched matmul: %d matrices of %d elements %d apart overrun %v", count, size, stride, t))
		}
	}
	need(a, strideA, M*K)
	need(bm, strideB, K*N)
	need(c, strideC, M*N)
	opB, opA := int32(cublasOpN), int32(cublasOpN)
	if transB {
		opB = cublasOpT
	}
	if transA {
		opA = cublasOpT
	}
	if K == 0 {
		flat := &kdrt.Tensor{Shape: []int{c.Numel()}, DType: c.DType, Storage: c.Storage, Name: c.Name}
		for i := range count {
			scaleOrZero(b, b.Slice(flat, i*strideC, i*strideC+M*N), beta)
		}
		return
	}
	pa, pb, pc := b.dptr(a), b.dptr(bm), b.dptr(c)
	al, be := alpha, beta
	defer b.enter()()
	if b.err != nil {
		return
	}
	b.counts.GEMMs++
	s := b.blas.cublasGemmStridedBatchedEx(b.blas.handle, opB, opA, int32(N), int32(M), int32(K),
		unsafe.Pointer(&al), pb, tb, int32(ldb), int64(strideB), pa, ta, int32(lda), int64(strideA),
		unsafe.Pointer(&be), pc, tc, int32(N), int64(strideC), int32(count), cublasCompute32F, cublasGemmDefault)
	if err := b.blas.check("cublasGemmStridedBatchedEx", s); err != nil {
		b.recordLocked(fmt.Sprintf("batched matmul %v", c), err)
	}
}
