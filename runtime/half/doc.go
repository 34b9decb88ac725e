// Package half converts between float32 and the two 16-bit floating-point
// formats that model checkpoints and GPU kernels use: bfloat16 (BF16: 1 sign,
// 8 exponent, 7 mantissa bits, the top half of a float32) and IEEE 754
// binary16 (F16: 1 sign, 5 exponent, 10 mantissa bits).
//
// Values travel as their bit patterns (uint16). Narrowing conversions round to
// nearest, ties to even, as PyTorch, CUDA and the hardware do; infinities keep
// their sign, NaNs stay NaNs (with the sign kept), F16 overflow gives ±Inf and
// values below F16's normal range become subnormals or signed zero. Widening
// conversions are exact.
//
// The slice helpers decode and encode little-endian byte buffers, the layout
// of safetensors files.
package half
