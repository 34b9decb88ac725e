package runtime

import (
	"fmt"
	"slices"
	"strings"
)

// Storage is a backend's memory behind a Tensor. Only the backend that made it
// looks inside.
type Storage interface {
	// Backend returns the backend that owns the memory.
	Backend() Backend
}

// Tensor is a dense, row-major array of Shape elements of DType held by a
// backend. Tensors are plain handles: copying the struct shares the storage.
type Tensor struct {
	Shape   []int
	DType   DType
	Storage Storage
	// Name is for error messages (a parameter's checkpoint name, "logits", …).
	Name string
}

// Numel is the number of elements, the product of Shape (1 for a scalar).
func (t *Tensor) Numel() int { return Numel(t.Shape) }

// Bytes is the size of the tensor's elements in bytes.
func (t *Tensor) Bytes() int { return t.Numel() * t.DType.Size() }

// Rows and Cols view the tensor as a matrix [N, C]: C is the last dimension and
// N the product of all the others.
func (t *Tensor) Rows() int {
	if len(t.Shape) == 0 {
		return 1
	}
	return t.Numel() / t.Cols()
}

// Cols is the size of the last dimension (1 for a scalar).
func (t *Tensor) Cols() int {
	if len(t.Shape) == 0 {
		return 1
	}
	return t.Shape[len(t.Shape)-1]
}

// Backend returns the backend that owns the tensor's storage.
func (t *Tensor) Backend() Backend { return t.Storage.Backend() }

func (t *Tensor) String() string {
	name := t.Name
	if name == "" {
		name = "tensor"
	}
	return fmt.Sprintf("%s%s %s", name, ShapeString(t.Shape), t.DType)
}

// Numel is the product of a shape's dimensions.
func Numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// ShapeString formats a shape as [2 3 4].
func ShapeString(shape []int) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// SameShape reports whether two shapes are equal.
func SameShape(a, b []int) bool { return slices.Equal(a, b) }
