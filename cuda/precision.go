package cuda

import (
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// cublasTF32Math is CUBLAS_TF32_TENSOR_OP_MATH: F32 products may round
// their inputs to TF32 for the tensor cores (FP32 accumulation).
const cublasTF32Math = 3

// DefaultPrecision implements runtime.PrecisionSetter: bf16 mixed precision
// on compute capability 8.0 and later (Ampere, Hopper, …), whose tensor
// cores multiply bf16, and fp32 before.
func (b *Backend) DefaultPrecision() kdrt.Precision {
	if b.dev.Major >= 8 {
		return kdrt.PrecisionBF16
	}
	return kdrt.PrecisionFP32
}

// SetPrecision implements runtime.PrecisionSetter. bf16 and tf32 need
// compute capability 8.0 (cuBLAS multiplies bf16 and uses TF32 only there);
// tf32 switches cuBLAS to its TF32 math mode, and anything else back to the
// default (FP32 products in FP32), so TF32 is never on unless asked for.
func (b *Backend) SetPrecision(p kdrt.Precision) error {
	switch p {
	case kdrt.PrecisionFP32, kdrt.PrecisionBF16, kdrt.PrecisionTF32:
	default:
		return fmt.Errorf("cuda: unknown precision %v", p)
	}
	if p != kdrt.PrecisionFP32 && b.dev.Major < 8 {
		return fmt.Errorf("precision %s needs an NVIDIA GPU of compute capability 8.0 or later (Ampere or newer); %s is %d.%d: use --precision fp32 (or precision: fp32 in the recipe)",
			p, b.dev.Name, b.dev.Major, b.dev.Minor)
	}
	mode := int32(cublasDefaultMath)
	if p == kdrt.PrecisionTF32 {
		mode = cublasTF32Math
	}
	defer b.enter()()
	if err := b.blas.check("cublasSetMathMode", b.blas.cublasSetMathMode(b.blas.handle, mode)); err != nil {
		return fmt.Errorf("cuda: precision %s: %w", p, err)
	}
	b.precision = p
	return nil
}

// Precision is the precision the backend was last set to (fp32 until
// SetPrecision is called).
func (b *Backend) Precision() kdrt.Precision { return b.precision }
