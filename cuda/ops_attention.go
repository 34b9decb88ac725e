package cuda

import (
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// Attention ops (kernels/attention.cu, attention_mma.cu). They compute what
// runtime/cpu's attention.go and decode.go compute, with the same algorithm
// (FlashAttention-2: an online softmax over tiles of keys; the forward saves
// the output and one log-sum-exp per query row, the backward recomputes the
// probabilities):
//   - q, out, dq, dout are [B, T, NH, HD]; k, v, dk, dv are [B, T, NKV, HD],
//     all of one storage dtype, F32 or BF16;
//   - lse [B, NH, T] is F32 always (softmax statistics stay fp32), −Inf for
//     a query that sees no key;
//   - a padding query (t < KeyStart[b]) gets a zero output row and adds
//     nothing to any gradient;
//   - the backward writes dq, dk, dv (no memset first).

// attnThreads is the block size of the decode kernel (a multiple of 32).
const attnThreads = 128

// attnRows is ATTN_ROWS of kernels/attention.cu: the warps of a block of the
// scalar kernels, each owning one query (or key) row.
const attnRows = 4

// attnMaxHD bounds the head size of the scalar kernels: their per-warp rows
// must fit in 48 KiB of shared memory next to a tile of keys.
const attnMaxHD = 512

// attnMaxGridYZ is CUDA's limit on gridDim.y and gridDim.z.
const attnMaxGridYZ = 65535

// Attention implements runtime.Backend.
func (b *Backend) Attention(out, lse, q, k, v *kdrt.Tensor, p kdrt.AttentionParams) {
	const op = "attention"
	attnCheck(op, p, out, lse, q, k, v)
	dt := attnDType(op, lse, q, k, v, out)
	if p.B*p.T*p.NH == 0 {
		return
	}
	ks, ok := b.attnSetup(op, p)
	if !ok {
		return
	}
	if ks != nil {
		defer b.Free(ks)
	}
	if b.attnMMA(p, dt, out, q, k, v) {
		var name string
		switch p.HD {
		case 64:
			name = "attn_mma_fwd_64"
		case 80:
			name = "attn_mma_fwd_80"
		case 96:
			name = "attn_mma_fwd_96"
		case 128:
			name = "attn_mma_fwd_128"
		}
		b.launch(op, name, dim3{uint32(blocks(p.T, 64)), uint32(p.NH), uint32(p.B)}, d1(128), attnMMAFwdSmem(p.HD),
			b.dptr(out), b.dptr(lse), b.dptr(q), b.dptr(k), b.dptr(v), b.dptr(ks),
			int32(p.T), int32(p.NH), int32(p.NKV), p.Scale, attnWindow(p.Window))
		return
	}
	bk, smem := attnTile(p.HD, attnFwdSmem)
	b.launch(op, kernelFor("attn_fwd", dt), dim3{uint32(blocks(p.T, attnRows)), uint32(p.NH), uint32(p.B)},
		d1(32*attnRows), smem,
		b.dptr(out), b.dptr(lse), b.dptr(q), b.dptr(k), b.dptr(v), b.dptr(ks),
		int32(p.T), int32(p.NH), int32(p.NKV), int32(p.HD), p.Scale, attnWindow(p.Window), int32(bk))
}

// AttentionBackward implements runtime.Backend: it writes dq, dk, dv, the
// gradients of Attention's output from dout, given the forward's out and lse.
func (b *Backend) AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v *kdrt.Tensor, p kdrt.AttentionParams) {
	const op = "attention backward"
	attnCheck(op, p, out, lse, q, k, v)
	if dq.Numel() != q.Numel() || dk.Numel() != k.Numel() || dv.Numel() != v.Numel() || dout.Numel() != q.Numel() {
		panic(fmt.Sprintf("cuda: %s: gradients %v %v %v %v do not match %v %v %v", op, dout, dq, dk, dv, q, k, v))
	}
	dt := attnDType(op, lse, q, k, v, out, dout, dq, dk, dv)
	if p.B*p.T*p.NH*p.HD == 0 {
		return
	}
	ks, ok := b.attnSetup(op, p)
	if !ok {
		return
	}
	if ks != nil {
		defer b.Free(ks)
	}
	// D = rowsum(dout ⊙ out), laid out as lse.
	D, ok := b.scratch(op, kdrt.F32, p.B*p.NH*p.T)
	if !ok {
		return
	}
	defer b.Free(D)
	rows := p.B * p.T * p.NH
	b.launch(op, kernelFor("attn_bwd_dot", dt), d1(min(blocks(rows, 8), 1<<20)), d1(256), 0,
		b.dptr(D), b.dptr(dout), b.dptr(out), int32(p.B), int32(p.T), int32(p.NH), int32(p.HD))
	if b.attnMMA(p, dt, out, q, k, v, dout, dq, dk, dv) {
		var dqName, dkvName string
		switch p.HD {
		case 64:
			dqName, dkvName = "attn_mma_bwd_dq_64", "attn_mma_bwd_dkv_64"
		case 80:
			dqName, dkvName = "attn_mma_bwd_dq_80", "attn_mma_bwd_dkv_80"
		case 96:
			dqName, dkvName = "attn_mma_bwd_dq_96", "attn_mma_bwd_dkv_96"
		case 128:
			dqName, dkvName = "attn_mma_bwd_dq_128", "attn_mma_bwd_dkv_128"
		}
		b.launch(op, dqName, dim3{uint32(blocks(p.T, 64)), uint32(p.NH), uint32(p.B)}, d1(128), attnMMADQSmem(p.HD),
			b.dptr(dq), b.dptr(dout), b.dptr(lse), b.dptr(D), b.dptr(q), b.dptr(k), b.dptr(v), b.dptr(ks),
			int32(p.T), int32(p.NH), int32(p.NKV), p.Scale, attnWindow(p.Window))
		b.launch(op, dkvName, dim3{uint32(blocks(p.T, 64)), uint32(p.NKV), uint32(p.B)}, d1(128), attnMMADKVSmem(p.HD),
			b.dptr(dk), b.dptr(dv), b.dptr(dout), b.dptr(lse), b.dptr(D), b.dptr(q), b.dptr(k), b.dptr(v), b.dptr(ks),
			int32(p.T), int32(p.NH), int32(p.NKV), p.Scale, attnWindow(p.Window))
		return
	}
	bk, smem := attnTile(p.HD, attnDQSmem)
	b.launch(op, kernelFor("attn_bwd_dq", dt), dim3{uint32(blocks(p.T, attnRows)), uint32(p.NH), uint32(p.B)},
		d1(32*attnRows), smem,
		b.dptr(dq), b.dptr(dout), b.dptr(lse), b.dptr(D), b.dptr(q), b.dptr(k), b.dptr(v), b.dptr(ks),
		int32(p.T), int32(p.NH), int32(p.NKV), int32(p.HD), p.Scale, attnWindow(p.Window), int32(bk))
	bk, smem = attnTile(p.HD, attnDKVSmem)
	b.launch(op, kernelFor("attn_bwd_dkv", dt), dim3{uint32(blocks(p.T, attnRows)), uint32(p.NKV), uint32(p.B)},
		d1(32*attnRows), smem,
		b.dptr(dk), b.dptr(dv), b.dptr(dout), b.dptr(lse), b.dptr(D), b.dptr(q), b.dptr(k), b.dptr(v), b.dptr(ks),
		int32(p.T), int32(p.NH), int32(p.NKV), int32(p.HD), p.Scale, attnWindow(p.Window), int32(bk))
}

// The scalar kernels' dynamic shared memory in floats, for head size hd and
// tiles of bk keys (or queries): see their comments in attention.cu.
func attnFwdSmem(hd, bk int) int { return bk*(hd+1) + bk*hd + 2*attnRows*hd + 32*attnRows }
func attnDQSmem(hd, bk int) int  { return 2*bk*(hd+1) + 3*attnRows*hd + 32*attnRows }
func attnDKVSmem(hd, bk int) int { return 2*bk*(hd+1) + 64 + 4*attnRows*hd + 64*attnRows }

// attnTile picks the largest tile of at most 32 keys whose shared memory
// (floats(hd, bk) floats) fits in 48 KiB, and returns it with the bytes.
func attnTile(hd int, floats func(hd, bk int) int) (bk, bytes int) {
	bk = 32
	for bk > 1 && 4*floats(hd, bk) > 48<<10 {
		bk /= 2
	}
	return bk, 4 * floats(hd, bk)
}

// attnMMA reports whether the tensor-core kernels (attention_mma.cu) run
// this call: BF16 storage, a head size they are built for, a GPU of compute
// capability 8.0 or later, and every tensor 16-byte aligned (their 16-byte
// vector loads and stores).
func (b *Backend) attnMMA(p kdrt.AttentionParams, dt kdrt.DType, ts ...*kdrt.Tensor) bool {
	if dt != kdrt.BF16 || b.dev.Major < 8 {
		return false
	}
	switch p.HD {
	case 64, 80, 96, 128:
	default:
		return false
	}
	for _, t := range ts {
		if b.dptr(t)%16 != 0 {
			return false
		}
	}
	return true
}

// The tensor-core kernels' dynamic shared memory in bytes (tiles of 64 rows
// of HD+8 bf16; the dK/dV kernel's query tiles are 64 rows for HD ≤ 64, else
// 32, plus their lse and D). Above 48 KiB launch opts in.
func attnMMAFwdSmem(hd int) int { return 2 * 64 * (hd + 8) * 2 }
func attnMMADQSmem(hd int) int  { return 4 * 64 * (hd + 8) * 2 }
func attnMMADKVSmem(hd int) int {
	bt := 32
	if hd <= 64 {
		bt = 64
	}
	return (2*64+2*bt)*(hd+8)*2 + 2*bt*4
}

// attnSetup checks the grid and head size limits and uploads the key starts
// (nil when there are none); ok is false when an error was recorded.
func (b *Backend) attnSetup(op string, p kdrt.AttentionParams) (ks *kdrt.Tensor, ok bool) {
	if p.HD > attnMaxHD {
		b.fail(op, fmt.Errorf("head size %d is above the %d the attention kernels support", p.HD, attnMaxHD))
		return nil, false
	}
	if !b.attnGridOK(op, max(p.NH, p.NKV), p.B) {
		return nil, false
	}
	return b.attnKeyStart(op, p.KeyStart, p.B)
}

// AttentionDecode implements runtime.DecodeOps: the query of each of
// max(p.B, 1) sequences at its position at[b] (I32 [B], read by the kernel),
// q and out [B, NH·HD], against the caches kCache, vCache [B·Tmax, NKV·HD]
// (sequence b's position s at row b·Tmax + s). The launch depends on the
// shapes only, so a decode step can be recorded once and replayed.
func (b *Backend) AttentionDecode(out, q, kCache, vCache, at *kdrt.Tensor, p kdrt.AttentionParams) {
	const op = "attention decode"
	B := max(p.B, 1)
	Tmax := kCache.Rows() / B
	if p.NKV <= 0 || p.NH%p.NKV != 0 || q.Numel() != B*p.NH*p.HD || out.Numel() != q.Numel() || kCache.Rows()%B != 0 ||
		kCache.Cols() != p.NKV*p.HD || vCache.Numel() != kCache.Numel() || at.DType != kdrt.I32 || at.Numel() != B ||
		(p.KeyStart != nil && len(p.KeyStart) != B) {
		panic(fmt.Sprintf("cuda: %s %+v: shapes of %v %v %v %v %v do not agree", op, p, out, q, kCache, vCache, at))
	}
	dt := attnDType(op, nil, q, kCache, vCache, out)
	if p.NH*p.HD == 0 || Tmax == 0 {
		return
	}
	if !b.attnGridOK(op, 1, B) {
		return
	}
	ks, ok := b.attnKeyStart(op, p.KeyStart, B)
	if !ok {
		return
	}
	// Scores for every position the cache holds: the size does not depend
	// on the step, so neither does the allocation.
	w, ok := b.scratch(op, kdrt.F32, B*p.NH*Tmax)
	if !ok {
		if ks != nil {
			b.Free(ks)
		}
		return
	}
	b.launch(op, kernelFor("attn_decode", dt), dim3{uint32(p.NH), uint32(B), 1}, d1(attnThreads),
		(p.HD+attnThreads)*4,
		b.dptr(out), b.dptr(q), b.dptr(kCache), b.dptr(vCache), b.dptr(w), b.dptr(ks), b.dptr(at),
		int32(p.NH), int32(p.NKV), int32(p.HD), int32(Tmax), p.Scale, attnWindow(p.Window))
	b.Free(w)
	if ks != nil {
		b.Free(ks)
	}
}

// KVAppend implements runtime.DecodeOps: src's n rows per sequence into
// cache rows b·Tmax + at[b] + j, the positions read by the kernel.
func (b *Backend) KVAppend(cache, src, at *kdrt.Tensor) {
	const op = "kv append"
	B := at.Numel()
	if at.DType != kdrt.I32 || B == 0 || cache.Cols() != src.Cols() || cache.Rows()%B != 0 || src.Rows()%B != 0 ||
		src.Rows()/B > cache.Rows()/B {
		panic(fmt.Sprintf("cuda: %s of %v into %v at %v: shapes do not agree", op, src, cache, at))
	}
	dt := ewSameDType(op, cache, src)
	rows, C := src.Rows(), src.Cols()
	if rows == 0 || C == 0 {
		return
	}
	b.launch(op, kernelFor("kv_append", dt), ewRows(rows), d1(ewThreads), 0,
		b.dptr(cache), b.dptr(src), b.dptr(at), int32(B), int32(rows/B), int32(C), int32(cache.Rows()/B))
}

// attnCheck panics unless the tensors have the sizes p gives them, as the
// CPU backend's checkAttention does (and KeyStart one entry per sequence).
func attnCheck(op string, p kdrt.AttentionParams, out, lse, q, k, v *kdrt.Tensor) {
	ok := p.NKV > 0 && p.NH%p.NKV == 0 && p.B >= 0 && p.T >= 0 && p.HD >= 0 &&
		q.Numel() == p.B*p.T*p.NH*p.HD && out.Numel() == q.Numel() &&
		k.Numel() == p.B*p.T*p.NKV*p.HD && v.Numel() == k.Numel() &&
		lse.Numel() == p.B*p.NH*p.T &&
		(p.KeyStart == nil || len(p.KeyStart) == p.B)
	if !ok {
		panic(fmt.Sprintf("cuda: %s %+v: shapes of %v %v %v %v %v do not agree (lse should be [B, NH, T])", op, p, out, lse, q, k, v))
	}
}

// attnDType is the storage dtype of the attention tensors ts, which must all
// be F32 or all BF16; lse (when not nil) must be F32.
func attnDType(op string, lse *kdrt.Tensor, ts ...*kdrt.Tensor) kdrt.DType {
	if lse != nil && lse.DType != kdrt.F32 {
		panic(fmt.Sprintf("cuda: %s: %v should be F32 (the softmax statistics are kept in fp32)", op, lse))
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

// attnWindow is the sliding window as a kernel argument (≤ 0: none).
func attnWindow(w int) int32 { return int32(min(w, 1<<30)) }
