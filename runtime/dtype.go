package runtime

import "fmt"

// DType is the element type of a Tensor.
type DType uint8

// The element types kdnative stores. F32 is the CPU compute type; BF16 and F16
// are storage types (checkpoints, GPU weights and activations); I32 holds token
// ids and other integer indices.
const (
	F32 DType = iota
	BF16
	F16
	I32
)

// Size is the number of bytes one element occupies.
func (d DType) Size() int {
	switch d {
	case F32, I32:
		return 4
	case BF16, F16:
		return 2
	}
	panic(fmt.Sprintf("runtime: unknown dtype %d", d))
}

// String returns the safetensors spelling of the dtype (F32, BF16, F16, I32).
func (d DType) String() string {
	switch d {
	case F32:
		return "F32"
	case BF16:
		return "BF16"
	case F16:
		return "F16"
	case I32:
		return "I32"
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// IsFloat reports whether the dtype holds floating-point values.
func (d DType) IsFloat() bool { return d == F32 || d == BF16 || d == F16 }
