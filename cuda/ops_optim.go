package cuda

import (
	"fmt"
	"math"
	"unsafe"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// The multi-tensor optimizer ops (kernels/optim.cu): the global gradient
// norm, the clip factor and AdamW over every parameter in three launches
// (opt_sum_squares, opt_clip, opt_adamw) instead of a few per parameter, with
// nothing read back to the host.

// optChunk is the elements per chunk of the multi-tensor kernels: each block
// takes whole chunks, so that one large tensor and many small ones spread
// evenly over the blocks.
const optChunk = 1 << 16

// optMaxBlocks bounds the grid of the multi-tensor kernels (and so the
// partial sums opt_clip adds).
const optMaxBlocks = 1024

// Field indices of the tensor table (kernels/optim.cu's OPT_FIELDS layout).
const (
	optFields    = 8
	optDecay     = 1
	optParamBF16 = 2
)

// adamwGroup is the CUDA backend's AdamWGroup: the slots, their address
// tables on the device, and the scratch of the norm and clip factor, all
// allocated once.
type adamwGroup struct {
	b       *Backend
	slots   []kdrt.AdamWSlot
	tensors *kdrt.Tensor // [T·optFields] u64, as I32 pairs
	chunks  *kdrt.Tensor // [K·2] i64, as I32 pairs
	nchunks int
	grid    int
	part    *kdrt.Tensor // [grid] double partial sums of squares, as F32 pairs
	state   *kdrt.Tensor // F32 [2]: clip factor, finite flag
	hyper   *kdrt.Tensor // F32 [6]: the step's stepSize, decay, β₁, β₂, eps, bc2
}

func (g *adamwGroup) Slots() []kdrt.AdamWSlot { return g.slots }

func (g *adamwGroup) Free() {
	for _, t := range []*kdrt.Tensor{g.tensors, g.chunks, g.part, g.state, g.hyper} {
		if t != nil {
			g.b.Free(t)
		}
	}
	g.tensors, g.chunks, g.part, g.state, g.hyper = nil, nil, nil, nil, nil
}

// PrepareAdamW implements runtime.Backend: it checks the slots and uploads
// their address table and chunk list.
func (b *Backend) PrepareAdamW(slots []kdrt.AdamWSlot) (kdrt.AdamWGroup, error) {
	if err := kdrt.CheckAdamWSlots(slots); err != nil {
		return nil, fmt.Errorf("cuda: %w", err)
	}
	table := make([]uint64, optFields*len(slots))
	var chunks []int64
	for i, s := range slots {
		for _, t := range []*kdrt.Tensor{s.Param, s.Master, s.Grad, s.M, s.V} {
			if t != nil {
				b.mem(t) // a CUDA tensor, or a panic naming it
			}
		}
		row := table[optFields*i:]
		row[0], row[1], row[2], row[3], row[4] = b.dptr(s.Param), b.dptr(s.Master), b.dptr(s.Grad), b.dptr(s.M), b.dptr(s.V)
		n := s.Param.Numel()
		row[5] = uint64(n)
		if s.Decay {
			row[6] |= optDecay
		}
		if s.Param.DType == kdrt.BF16 {
			row[6] |= optParamBF16
		}
		for start := 0; start < n; start += optChunk {
			chunks = append(chunks, int64(i), int64(start))
		}
	}
	g := &adamwGroup{b: b, slots: append([]kdrt.AdamWSlot(nil), slots...), nchunks: len(chunks) / 2}
	g.grid = max(1, min(g.nchunks, optMaxBlocks))
	var err error
	alloc := func(name string, dt kdrt.DType, n int) *kdrt.Tensor {
		if err != nil {
			return nil
		}
		var t *kdrt.Tensor
		t, err = b.Alloc(name, dt, n)
		return t
	}
	g.tensors = alloc("adamw.tensors", kdrt.I32, 2*max(len(table), 1))
	g.chunks = alloc("adamw.chunks", kdrt.I32, 2*max(len(chunks), 1))
	g.part = alloc("adamw.norm_partials", kdrt.F32, 2*g.grid)
	g.state = alloc("adamw.clip", kdrt.F32, 2)
	g.hyper = alloc("adamw.hyper", kdrt.F32, 6)
	if err == nil && len(table) > 0 {
		err = b.copyIn("upload of", g.tensors, unsafe.Pointer(&table[0]), 8*len(table))
	}
	if err == nil && len(chunks) > 0 {
		err = b.copyIn("upload of", g.chunks, unsafe.Pointer(&chunks[0]), 8*len(chunks))
	}
	if err != nil {
		g.Free()
		return nil, fmt.Errorf("cuda: preparing AdamW over %d tensors: %w", len(slots), err)
	}
	return g, nil
}

// AdamWStep implements runtime.Backend: three launches and a queued upload
// of the step's hyperparameters, no host round-trip.
func (b *Backend) AdamWStep(grp kdrt.AdamWGroup, norm *kdrt.Tensor, h kdrt.AdamWParams, maxNorm float32) {
	const op = "adamw step"
	g, ok := grp.(*adamwGroup)
	if !ok || g.b != b || g.tensors == nil {
		panic(fmt.Sprintf("cuda: AdamWStep of a %T this backend did not prepare (or freed)", grp))
	}
	if norm.Numel() != 1 || norm.DType != kdrt.F32 {
		panic(fmt.Sprintf("cuda: AdamWStep: norm %v should be F32 [1]", norm))
	}
	b.launch(op, "opt_sum_squares", d1(g.grid), d1(ewThreads), 0,
		b.dptr(g.part), b.dptr(g.tensors), b.dptr(g.chunks), int32(g.nchunks), int32(optChunk))
	b.launch(op, "opt_clip", d1(1), d1(32), 0, b.dptr(norm), b.dptr(g.state), b.dptr(g.part), int32(g.grid), maxNorm)
	b1, b2 := float64(h.Beta1), float64(h.Beta2)
	bc1 := 1 - math.Pow(b1, float64(h.Step))
	bc2sqrt := math.Sqrt(1 - math.Pow(b2, float64(h.Step)))
	stepSize := float32(float64(h.LR) / bc1)
	decay := float32(1 - float64(h.LR)*float64(h.WeightDecay))
	hyper := []float32{stepSize, decay, float32(b1), float32(b2), h.Eps, float32(bc2sqrt)}
	if err := b.Upload(g.hyper, hyper); err != nil {
		b.fail(op, err)
		return
	}
	b.launch(op, "opt_adamw", d1(g.grid), d1(ewThreads), 0,
		b.dptr(g.tensors), b.dptr(g.chunks), int32(g.nchunks), int32(optChunk), b.dptr(g.state), b.dptr(g.hyper))
}
