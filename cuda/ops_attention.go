package cuda

import (
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// Attention ops (kernels/attention.cu). They compute what runtime/cpu's
// attention.go and decode.go compute:
//   - q, out, dq, dout are [B, T, NH, HD]; k, v, dk, dv are [B, T, NKV, HD],
//     all of one storage dtype, F32 or BF16;
//   - probs [B, NH, T, T] is F32 always (the softmax statistics stay fp32; the
//     model allocates it F32), with zeros above the diagonal, outside the
//     sliding window and on the rows of padding queries;
//   - a padding query (t < KeyStart[b]) gets a zero output row and adds
//     nothing to any gradient.
//
// The backward reads probs only where a query sees a key (the forward writes
// zeros everywhere else, which is all the CPU's full-row sums would add).

// attnThreads is the block size of the per-row kernels (a multiple of 32).
const attnThreads = 128

// attnElemThreads is the block size of the per-element gradient kernels.
const attnElemThreads = 256

// attnScratchElems bounds the backward's dS scratch ([Bc, NH, T, T] F32):
// the batch is processed Bc sequences at a time so that it stays under
// 256 MiB (one sequence at least).
const attnScratchElems = 1 << 26

// attnMaxGridYZ is CUDA's limit on gridDim.y and gridDim.z.
const attnMaxGridYZ = 65535

// Attention implements runtime.Backend.
func (b *Backend) Attention(out, probs, q, k, v *kdrt.Tensor, p kdrt.AttentionParams) {
	const op = "attention"
	attnCheck(op, p, out, probs, q, k, v)
	dt := attnDType(op, probs, q, k, v, out)
	if p.B*p.T*p.NH == 0 {
		return
	}
	if !b.attnGridOK(op, p.NH, p.B) {
		return
	}
	ks, ok := b.attnKeyStart(op, p.KeyStart, p.B)
	if !ok {
		return
	}
	b.launch(op, kernelFor("attn_forward", dt), dim3{uint32(p.T), uint32(p.NH), uint32(p.B)}, d1(attnThreads),
		(p.HD+attnThreads)*4,
		b.dptr(out), b.dptr(probs), b.dptr(q), b.dptr(k), b.dptr(v), b.dptr(ks),
		int32(p.T), int32(p.NH), int32(p.NKV), int32(p.HD), p.Scale, attnWindow(p.Window))
	if ks != nil {
		b.Free(ks)
	}
}

// AttentionBackward implements runtime.Backend: dq, dk, dv += the gradients
// of Attention's output from dout, given the forward's probs.
func (b *Backend) AttentionBackward(dq, dk, dv, dout, probs, q, k, v *kdrt.Tensor, p kdrt.AttentionParams) {
	const op = "attention backward"
	attnCheck(op, p, dout, probs, q, k, v)
	if dq.Numel() != q.Numel() || dk.Numel() != k.Numel() || dv.Numel() != v.Numel() {
		panic(fmt.Sprintf("cuda: %s: gradients %v %v %v do not match %v %v %v", op, dq, dk, dv, q, k, v))
	}
	dt := attnDType(op, probs, q, k, v, dout, dq, dk, dv)
	if p.B*p.T*p.NH*p.HD == 0 {
		return
	}
	if !b.attnGridOK(op, p.NH, 1) {
		return
	}
	ks, ok := b.attnKeyStart(op, p.KeyStart, p.B)
	if !ok {
		return
	}
	if ks != nil {
		defer b.Free(ks)
	}
	// Bc sequences at a time share one dS scratch.
	rowElems := p.NH * p.T * p.T
	bc := max(1, min(p.B, attnScratchElems/rowElems, attnMaxGridYZ))
	ds, ok := b.scratch(op, kdrt.F32, bc*rowElems)
	if !ok {
		return
	}
	for b0 := 0; b0 < p.B; b0 += bc {
		n := min(bc, p.B-b0)
		b.launch(op, kernelFor("attn_backward_ds", dt), dim3{uint32(p.T), uint32(p.NH), uint32(n)}, d1(attnThreads),
			p.HD*4,
			b.dptr(ds), b.dptr(probs), b.dptr(dout), b.dptr(v), b.dptr(ks),
			int32(b0), int32(p.T), int32(p.NH), int32(p.NKV), int32(p.HD), attnWindow(p.Window))
		nq := n * p.T * p.NH * p.HD
		b.launch(op, kernelFor("attn_backward_dq", dt), d1(attnGrid(nq)), d1(attnElemThreads), 0,
			b.dptr(dq), b.dptr(ds), b.dptr(k), b.dptr(ks),
			int32(b0), int32(n), int32(p.T), int32(p.NH), int32(p.NKV), int32(p.HD), p.Scale, attnWindow(p.Window))
		nk := n * p.T * p.NKV * p.HD
		b.launch(op, kernelFor("attn_backward_dkv", dt), d1(attnGrid(nk)), d1(attnElemThreads), 0,
			b.dptr(dk), b.dptr(dv), b.dptr(ds), b.dptr(probs), b.dptr(q), b.dptr(dout), b.dptr(ks),
			int32(b0), int32(n), int32(p.T), int32(p.NH), int32(p.NKV), int32(p.HD), p.Scale, attnWindow(p.Window))
	}
	b.Free(ds)
}

// AttentionDecode implements runtime.DecodeOps: query position pos of each of
// max(p.B, 1) sequences, q and out [B, NH·HD], against the caches kCache,
// vCache [B·Tmax, NKV·HD] (sequence b's position s at row b·Tmax + s).
func (b *Backend) AttentionDecode(out, q, kCache, vCache *kdrt.Tensor, p kdrt.AttentionParams, pos int) {
	const op = "attention decode"
	B := max(p.B, 1)
	Tmax := kCache.Rows() / B
	if p.NKV <= 0 || p.NH%p.NKV != 0 || q.Numel() != B*p.NH*p.HD || out.Numel() != q.Numel() || kCache.Rows()%B != 0 ||
		kCache.Cols() != p.NKV*p.HD || vCache.Numel() != kCache.Numel() || pos < 0 || pos >= Tmax ||
		(p.KeyStart != nil && len(p.KeyStart) != B) {
		panic(fmt.Sprintf("cuda: %s %+v at %d: shapes of %v %v %v %v do not agree", op, p, pos, out, q, kCache, vCache))
	}
	dt := attnDType(op, nil, q, kCache, vCache, out)
	if p.NH*p.HD == 0 {
		return
	}
	if !b.attnGridOK(op, 1, B) {
		return
	}
	ks, ok := b.attnKeyStart(op, p.KeyStart, B)
	if !ok {
		return
	}
	w, ok := b.scratch(op, kdrt.F32, B*p.NH*(pos+1))
	if !ok {
		if ks != nil {
			b.Free(ks)
		}
		return
	}
	b.launch(op, kernelFor("attn_decode", dt), dim3{uint32(p.NH), uint32(B), 1}, d1(attnThreads),
		(p.HD+attnThreads)*4,
		b.dptr(out), b.dptr(q), b.dptr(kCache), b.dptr(vCache), b.dptr(w), b.dptr(ks),
		int32(p.NH), int32(p.NKV), int32(p.HD), int32(Tmax), int32(pos), p.Scale, attnWindow(p.Window))
	b.Free(w)
	if ks != nil {
		b.Free(ks)
	}
}

// attnCheck panics unless the tensors have the sizes p gives them, as the
// CPU backend's checkAttention does (and KeyStart one entry per sequence).
func attnCheck(op string, p kdrt.AttentionParams, out, probs, q, k, v *kdrt.Tensor) {
	ok := p.NKV > 0 && p.NH%p.NKV == 0 && p.B >= 0 && p.T >= 0 && p.HD >= 0 &&
		q.Numel() == p.B*p.T*p.NH*p.HD && out.Numel() == q.Numel() &&
		k.Numel() == p.B*p.T*p.NKV*p.HD && v.Numel() == k.Numel() &&
		probs.Numel() == p.B*p.NH*p.T*p.T &&
		(p.KeyStart == nil || len(p.KeyStart) == p.B)
	if !ok {
		panic(fmt.Sprintf("cuda: %s %+v: shapes of %v %v %v %v %v do not agree", op, p, out, probs, q, k, v))
	}
}

// attnDType is the storage dtype of the attention tensors ts, which must all
// be F32 or all BF16; probs (when not nil) must be F32.
func attnDType(op string, probs *kdrt.Tensor, ts ...*kdrt.Tensor) kdrt.DType {
	if probs != nil && probs.DType != kdrt.F32 {
		panic(fmt.Sprintf("cuda: %s: %v should be F32 (the attention probabilities are kept in fp32)", op, probs))
	}
	dt := ts[0].DType
	for _, t := range ts {
		if t.DType != dt || (dt != kdrt.F32 && dt != kdrt.BF16) {
			panic(fmt.Sprintf("cuda: %s: %v and %v: the attention tensors must all be F32 or all BF16", op, ts[0], t))
		}
	}
	return dt
}

// attnGridOK records an error when ny or nz exceed CUDA's grid limits.
func (b *Backend) attnGridOK(op string, ny, nz int) bool {
	if ny > attnMaxGridYZ || nz > attnMaxGridYZ {
		b.fail(op, fmt.Errorf("%d heads × %d sequences exceed the grid limit of %d", ny, nz, attnMaxGridYZ))
		return false
	}
	return true
}

// attnKeyStart uploads the per-sequence left padding as I32 [B]; nil (with
// ok) when there is none.
func (b *Backend) attnKeyStart(op string, keyStart []int, B int) (*kdrt.Tensor, bool) {
	if keyStart == nil {
		return nil, true
	}
	vals := make([]int32, B)
	for i, s := range keyStart {
		vals[i] = int32(min(max(s, -1), 1<<30)) // a start past every position stays past it
	}
	return b.tempInt32(op, vals)
}

// attnGrid is the block count of a per-element kernel over n elements; the
// kernels loop grid-stride beyond it.
func attnGrid(n int) int { return min(blocks(n, attnElemThreads), 1<<20) }

// attnWindow is the sliding window as a kernel argument (≤ 0: none).
func attnWindow(w int) int32 { return int32(min(w, 1<<30)) }
