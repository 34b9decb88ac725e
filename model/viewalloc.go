package model

import (
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// viewAlloc hands out tensors as views of the first elements of flat
// buffers: buffers of its own (allocated without a zero fill: every
// activation is written before it is read), or, when reuse is set, the
// buffers of an earlier and larger batch, taken in the order they were
// made. A batch of fewer tokens asks for the same tensors in the same
// order, each with at most the elements it had, so each fits the prefix of
// its earlier buffer.
type viewAlloc struct {
	be    kdrt.Backend
	reuse []*kdrt.Tensor
	bufs  []*kdrt.Tensor // the buffers handed out so far (new ones only when reuse is nil)
	next  int
	err   error // get's first error
}

// get is alloc keeping the first error in v.err (and returning nil from
// then on), so that a run of allocations checks once.
func (v *viewAlloc) get(name string, dt kdrt.DType, shape ...int) *kdrt.Tensor {
	if v.err != nil {
		return nil
	}
	var t *kdrt.Tensor
	t, v.err = v.alloc(name, dt, shape...)
	return t
}

// buffers are the flat buffers behind the views: the reused ones, or those
// allocated so far.
func (v *viewAlloc) buffers() []*kdrt.Tensor {
	if v.reuse != nil {
		return v.reuse
	}
	return v.bufs
}

func (v *viewAlloc) alloc(name string, dt kdrt.DType, shape ...int) (*kdrt.Tensor, error) {
	n := kdrt.Numel(shape)
	var buf *kdrt.Tensor
	if v.reuse != nil {
		if v.next >= len(v.reuse) || v.reuse[v.next].DType != dt || v.reuse[v.next].Numel() < n {
			return nil, fmt.Errorf("model: reusing the activation buffers: %s%s %s does not fit buffer %d", name, kdrt.ShapeString(shape), dt, v.next)
		}
		buf = v.reuse[v.next]
		v.next++
	} else {
		var err error
		if buf, err = kdrt.AllocUninit(v.be, name, dt, n); err != nil {
			return nil, err
		}
		v.bufs = append(v.bufs, buf)
	}
	t := v.be.Slice(buf, 0, n)
	t.Shape, t.Name = append([]int(nil), shape...), name
	return t, nil
}
