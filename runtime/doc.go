// Package runtime holds what every computation in kdnative goes through: the
// Tensor, its DType, and the Backend interface whose ops the model and the
// distillation objectives call. Backends (the CPU reference in runtime/cpu, the
// CUDA backend in cuda/) register themselves by name; Open picks one.
//
// Shapes in comments use one vocabulary throughout the project:
// B batch, T time (sequence), C channels (model width), V vocabulary,
// NH query heads, NKV key/value heads, HD head size, F MLP hidden width,
// N rows (B·T, or any flattened leading dimensions).
//
// There is no autograd graph. Each op has an explicit forward and backward, as in
// llm.c; the caller owns every buffer, including the saved statistics (norms'
// reciprocal standard deviations, attention probabilities) that a backward needs.
package runtime
