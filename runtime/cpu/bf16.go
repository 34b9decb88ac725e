package cpu

import (
	"fmt"
	"math/bits"
	"sync"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/half"
)

// BF16 storage. The CPU computes in float32 whatever the storage: an op
// widens its BF16 operands to float32 (exactly: a bfloat16 is the top half of
// the float32 of the same value), computes as the F32 op does, and rounds each
// BF16 output to nearest even once, when it is stored. That is what the CUDA
// kernels do (load bf16, compute in fp32, store bf16), so the CPU runs the
// mixed-precision path bit-for-bit in its rounding of stored values, and a
// BF16 tensor takes half the memory of an F32 one. The F32 path is untouched:
// frame hands out an F32 tensor's own slice.

// frame is one op's view of its operands as float32: F32 tensors directly,
// BF16 tensors through widened scratch copies that done rounds back into the
// outputs. Every op method that reads or writes float tensors opens a frame.
type frame struct {
	back    []writeBack
	scratch [][]float32
}

type writeBack struct {
	dst []uint16
	src []float32
}

// in returns t's values for reading. A BF16 tensor's widened copy is not
// written back.
func (f *frame) in(t *kdrt.Tensor) []float32 {
	if t == nil {
		return nil
	}
	s := storageOf(t)
	switch t.DType {
	case kdrt.F32:
		return s.f
	case kdrt.BF16:
		w := f.get(len(s.h))
		widen(w, s.h)
		return w
	}
	panic(fmt.Sprintf("cpu: %v is not a float tensor", t))
}

// out returns t's values for reading and writing; a BF16 tensor's are
// rounded back into it by done.
func (f *frame) out(t *kdrt.Tensor) []float32 {
	if t == nil {
		return nil
	}
	w := f.in(t)
	if t.DType == kdrt.BF16 {
		f.back = append(f.back, writeBack{dst: storageOf(t).h, src: w})
	}
	return w
}

// get is a scratch slice of n elements from the pool (contents undefined).
func (f *frame) get(n int) []float32 {
	w := getScratch(n)
	f.scratch = append(f.scratch, w)
	return w
}

// done rounds the outputs into their BF16 storage and returns the scratch.
func (f *frame) done() {
	for _, wb := range f.back {
		narrow(wb.dst, wb.src)
	}
	for _, s := range f.scratch {
		putScratch(s)
	}
	f.back, f.scratch = nil, nil
}

// widen converts bf16 bit patterns to float32, in parallel for big tensors.
func widen(dst []float32, src []uint16) {
	parallelFor(len(src), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dst[i] = half.BF16ToF32(src[i])
		}
	})
}

// narrow rounds float32 values to bf16 (nearest even), as the GPU's stores do.
func narrow(dst []uint16, src []float32) {
	parallelFor(len(dst), 2, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dst[i] = half.F32ToBF16(src[i])
		}
	})
}

// The scratch pool: float32 slices in power-of-two size classes, so that the
// widened copies of a training step's operands are reused from op to op
// instead of allocated, zeroed and collected each time. A sync.Pool would
// drop them at every garbage collection, which these large allocations
// themselves trigger; this pool keeps a few per class for as long as the
// process runs (what one op used at once, the largest op's operands).
const scratchPerClass = 4

var scratch struct {
	sync.Mutex
	free [64][][]float32
}

func sizeClass(n int) int {
	if n <= 1 {
		return 0
	}
	return bits.Len(uint(n - 1))
}

func getScratch(n int) []float32 {
	c := sizeClass(n)
	scratch.Lock()
	if l := len(scratch.free[c]); l > 0 {
		s := scratch.free[c][l-1]
		scratch.free[c] = scratch.free[c][:l-1]
		scratch.Unlock()
		return s[:n]
	}
	scratch.Unlock()
	return make([]float32, n, 1<<c)
}

func putScratch(s []float32) {
	s = s[:cap(s)]
	c := sizeClass(len(s))
	if 1<<c != len(s) {
		return // not one of ours
	}
	scratch.Lock()
	if len(scratch.free[c]) < scratchPerClass {
		scratch.free[c] = append(scratch.free[c], s)
	}
	scratch.Unlock()
}

// BF16Bits returns the BF16 tensor's elements as bfloat16 bit patterns; writes
// through it change the tensor.
func BF16Bits(t *kdrt.Tensor) []uint16 {
	s, ok := t.Storage.(*storage)
	if !ok || t.DType != kdrt.BF16 {
		panic(fmt.Sprintf("cpu: %v is not a CPU BF16 tensor", t))
	}
	return s.h
}

func storageOf(t *kdrt.Tensor) *storage {
	s, ok := t.Storage.(*storage)
	if !ok || s == nil {
		panic(fmt.Sprintf("cpu: %v is not a CPU tensor (storage %T)", t, t.Storage))
	}
	return s
}

// The dtype rules, the same as the CUDA backend's, so that a mistake the GPU
// would refuse fails the CPU tests too:
//   - the float tensors an op computes with (activations, weights and their
//     gradients of the same shapes) share one storage dtype, F32 or BF16;
//   - a parameter's gradient that an op accumulates from activations (a
//     norm's dw and db, a bias gradient, the embedding table's gradient) is
//     F32 or the activations' dtype: mixed-precision training keeps its
//     gradients in F32;
//   - saved statistics (rstd, mean, attention's lse), per-row vectors and
//     every loss tensor are F32.

// sameFloat panics unless every non-nil tensor has the first's dtype, F32 or
// BF16, and returns it.
func sameFloat(op string, ts ...*kdrt.Tensor) kdrt.DType {
	var dt kdrt.DType
	var first *kdrt.Tensor
	for _, t := range ts {
		if t == nil {
			continue
		}
		if first == nil {
			first, dt = t, t.DType
			if dt != kdrt.F32 && dt != kdrt.BF16 {
				panic(fmt.Sprintf("cpu: %s: %v: dtype must be F32 or BF16", op, t))
			}
			continue
		}
		if t.DType != dt {
			panic(fmt.Sprintf("cpu: %s: %v and %v differ in dtype (the op's tensors share F32 or BF16 storage)", op, first, t))
		}
	}
	return dt
}

// gradFloat panics unless the parameter gradients gs (nil entries skipped)
// are F32 or dt.
func gradFloat(op string, dt kdrt.DType, gs ...*kdrt.Tensor) {
	for _, g := range gs {
		if g != nil && g.DType != kdrt.F32 && g.DType != dt {
			panic(fmt.Sprintf("cpu: %s: gradient %v must be F32 or %s, the activations' dtype", op, g, dt))
		}
	}
}

// onlyF32 panics unless every non-nil tensor is F32.
func onlyF32(op string, ts ...*kdrt.Tensor) {
	for _, t := range ts {
		if t != nil && t.DType != kdrt.F32 {
			panic(fmt.Sprintf("cpu: %s: %v should be F32", op, t))
		}
	}
}
