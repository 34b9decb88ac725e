package cuda

import (
	"encoding/binary"
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// The elementwise ops (kernels/elementwise.cu): bias, add, scale, sum of
// squares, embedding, RoPE, SwiGLU, GELU, AdamW and Cast. Their float tensors
// are F32 or BF16 storage (arithmetic in fp32); the tensors of one call share
// one storage dtype except where an op's comment says otherwise (AdamW's
// moments and RoPE's invFreq are F32, ids and positions I32).

// ewThreads is the block size of the elementwise and row kernels.
const ewThreads = 256

// ewGrid is the grid of a grid-stride kernel over n elements: enough blocks
// to cover n, at most 32 per SM (the kernels loop over the rest).
func (b *Backend) ewGrid(n int) dim3 {
	return d1(min(blocks(n, ewThreads), 32*max(b.sms, 1)))
}

// ewRows is the grid of a kernel with one block per row (grid-stride over
// rows) for N rows.
func ewRows(N int) dim3 { return d1(min(max(N, 1), 1<<16)) }

// ewSameNumel panics unless every tensor has ts[0]'s element count.
func ewSameNumel(op string, ts ...*kdrt.Tensor) {
	for _, t := range ts[1:] {
		if t.Numel() != ts[0].Numel() {
			panic(fmt.Sprintf("cuda: %s: %v and %v differ in size", op, ts[0], t))
		}
	}
}

// ewSameDType panics unless every tensor has ts[0]'s dtype, and that dtype is
// F32 or BF16.
func ewSameDType(op string, ts ...*kdrt.Tensor) kdrt.DType {
	dt := ts[0].DType
	if dt != kdrt.F32 && dt != kdrt.BF16 {
		panic(fmt.Sprintf("cuda: %s: %v: dtype must be F32 or BF16", op, ts[0]))
	}
	for _, t := range ts[1:] {
		if t.DType != dt {
			panic(fmt.Sprintf("cuda: %s: %v and %v differ in dtype (the op's tensors share F32 or BF16 storage)", op, ts[0], t))
		}
	}
	return dt
}

// gradDType panics unless the parameter gradients gs (nil skipped) are F32
// or dt, the activations' dtype: mixed precision accumulates BF16
// activations' contributions into F32 gradients.
func gradDType(op string, dt kdrt.DType, gs ...*kdrt.Tensor) {
	for _, g := range gs {
		if g != nil && g.DType != kdrt.F32 && g.DType != dt {
			panic(fmt.Sprintf("cuda: %s: gradient %v must be F32 or %s, the activations' dtype", op, g, dt))
		}
	}
}

// ewDType panics unless t has dtype dt.
func ewDType(op string, t *kdrt.Tensor, dt kdrt.DType) {
	if t.DType != dt {
		panic(fmt.Sprintf("cuda: %s: %v should be %s", op, t, dt))
	}
}

// ewCols panics unless t has want columns.
func ewCols(op string, want int, t *kdrt.Tensor) {
	if t.Cols() != want {
		panic(fmt.Sprintf("cuda: %s: %v should have %d columns", op, t, want))
	}
}

// columnChunks splits N rows into chunks for a column-sum kernel over C
// columns with blocks of 32 columns × 8 rows: enough chunks to give the GPU
// about 8 blocks per SM, each chunk at least 16 rows. It returns the number
// of chunks and the rows per chunk.
func (b *Backend) columnChunks(N, C int) (chunks, rows int) {
	gx := blocks(C, 32)
	target := 8 * max(b.sms, 1)
	chunks = max(1, min(blocks(target, gx), blocks(N, 16)))
	rows = blocks(N, chunks)
	return blocks(N, rows), rows
}

// AddBias implements runtime.Backend: y[N, C] += bias[C]; y and bias share a
// storage dtype.
func (b *Backend) AddBias(y, bias *kdrt.Tensor) {
	const op = "add bias"
	ewCols(op, bias.Numel(), y)
	dt := ewSameDType(op, y, bias)
	n := y.Numel()
	if n == 0 {
		return
	}
	b.launch(op, kernelFor("ew_add_bias", dt), b.ewGrid(n), d1(ewThreads), 0,
		b.dptr(y), b.dptr(bias), int64(n), int32(y.Cols()))
}

// BiasBackward implements runtime.Backend: dbias[C] += Σ_rows dy[N, C],
// deterministically (fp32 partial sums per chunk of rows, added in order);
// dbias is F32 or dy's dtype.
func (b *Backend) BiasBackward(dbias, dy *kdrt.Tensor) {
	const op = "bias backward"
	ewCols(op, dbias.Numel(), dy)
	dt := ewSameDType(op, dy)
	gradDType(op, dt, dbias)
	N, C := dy.Rows(), dy.Cols()
	if N == 0 || C == 0 {
		return
	}
	chunks, rows := b.columnChunks(N, C)
	part, ok := b.scratch(op, kdrt.F32, chunks*C)
	if !ok {
		return
	}
	b.launch(op, kernelFor("ew_bias_partial", dt), dim3{uint32(blocks(C, 32)), uint32(chunks), 1}, dim3{32, 8, 1}, 0,
		b.dptr(part), b.dptr(dy), int32(N), int32(C), int32(rows))
	b.launch(op, kernelFor("ew_colsum", dbias.DType), d1(blocks(C, ewThreads)), d1(ewThreads), 0,
		b.dptr(dbias), b.dptr(part), int32(chunks), int32(C))
	b.Free(part)
}

// Add implements runtime.Backend: dst = a + b; dst may alias a or b.
func (b *Backend) Add(dst, x, y *kdrt.Tensor) {
	const op = "add"
	ewSameNumel(op, dst, x, y)
	dt := ewSameDType(op, dst, x, y)
	n := dst.Numel()
	if n == 0 {
		return
	}
	b.launch(op, kernelFor("ew_add", dt), b.ewGrid(n), d1(ewThreads), 0,
		b.dptr(dst), b.dptr(x), b.dptr(y), int64(n))
}

// Scale implements runtime.Backend: t *= s.
func (b *Backend) Scale(t *kdrt.Tensor, s float32) {
	const op = "scale"
	dt := ewSameDType(op, t)
	n := t.Numel()
	if n == 0 {
		return
	}
	b.launch(op, kernelFor("ew_scale", dt), b.ewGrid(n), d1(ewThreads), 0, b.dptr(t), int64(n), s)
}

// sumSquaresBlocks is how many partial sums SumSquares takes of a tensor of
// n elements: one per block of 256 threads × 4 elements, at most 1024.
func sumSquaresBlocks(n int) int { return min(blocks(n, 4*ewThreads), 1024) }

// SumSquares implements runtime.Backend: Σ x² over every tensor (F32 or BF16),
// each block squaring and summing in double into a scratch buffer, the
// partials then read back and added on the host in float64. It synchronizes,
// and returns the first device error recorded since the last Sync, if any.
func (b *Backend) SumSquares(ts ...*kdrt.Tensor) (float64, error) {
	const op = "sum squares"
	total := 0
	for _, t := range ts {
		ewSameDType(op, t)
		if n := t.Numel(); n > 0 {
			total += sumSquaresBlocks(n)
		}
	}
	if total == 0 {
		return 0, nil
	}
	// Two F32 elements hold one float64 partial; device allocations are
	// 256-byte aligned, so every partial is 8-byte aligned.
	part, err := b.Alloc(op+".partials", kdrt.F32, 2*total)
	if err != nil {
		return 0, fmt.Errorf("cuda %s: %w", op, err)
	}
	base, off := b.dptr(part), 0
	for _, t := range ts {
		n := t.Numel()
		if n == 0 {
			continue
		}
		nb := sumSquaresBlocks(n)
		b.launch(op, kernelFor("ew_sum_squares", t.DType), d1(nb), d1(ewThreads), 0,
			base+uint64(8*off), b.dptr(t), int64(n))
		off += nb
	}
	buf := make([]byte, part.Bytes())
	err = b.readBytes(op, part, buf)
	b.Free(part)
	if err != nil {
		return 0, err
	}
	var s float64
	for i := range total {
		s += math.Float64frombits(binary.LittleEndian.Uint64(buf[8*i:]))
	}
	return s, nil
}

// Embedding implements runtime.Backend: out[N, C] = table[ids[n], :], ids I32
// [N], out and table sharing a storage dtype. The device validates nothing:
// a row whose id is outside [0, V) comes out zero instead of the CPU's panic.
func (b *Backend) Embedding(out, ids, table *kdrt.Tensor) {
	const op = "embedding"
	C := table.Cols()
	ewCols(op, C, out)
	ewDType(op, ids, kdrt.I32)
	if out.Rows() != ids.Numel() {
		panic(fmt.Sprintf("cuda: embedding %v of %v: row count differs", out, ids))
	}
	dt := ewSameDType(op, out, table)
	N := ids.Numel()
	if N == 0 || C == 0 {
		return
	}
	b.launch(op, kernelFor("ew_embedding", dt), ewRows(N), d1(ewThreads), 0,
		b.dptr(out), b.dptr(ids), b.dptr(table), int32(N), int32(C), int32(table.Rows()))
}

// EmbeddingBackward implements runtime.Backend: dtable[ids[n], :] += dout[n, :]
// by atomic adds (rows with a repeated id add in no fixed order); dtable is
// F32 or dout's dtype. Ids outside [0, V) are skipped.
func (b *Backend) EmbeddingBackward(dtable, dout, ids *kdrt.Tensor) {
	const op = "embedding backward"
	C := dtable.Cols()
	ewCols(op, C, dout)
	ewDType(op, ids, kdrt.I32)
	if dout.Rows() != ids.Numel() {
		panic(fmt.Sprintf("cuda: embedding backward %v for %v: row count differs", dout, ids))
	}
	dt := ewSameDType(op, dout)
	gradDType(op, dt, dtable)
	N := ids.Numel()
	if N == 0 || C == 0 {
		return
	}
	kernel := kernelFor("ew_embedding_backward", dt)
	if dtable.DType != dt {
		kernel = kernelFor("ew_embedding_backward_f32grad", dt)
	}
	b.launch(op, kernel, ewRows(N), d1(ewThreads), 0,
		b.dptr(dtable), b.dptr(dout), b.dptr(ids), int32(N), int32(C), int32(dtable.Rows()))
}

// RoPE implements runtime.Backend: x [N, H·HD] (F32 or BF16) rotated in place;
// pos I32 [N], invFreq F32 [HD/2]. The angle is the fp32 product
// float32(pos)·invFreq as on the CPU, its sine and cosine taken in double.
func (b *Backend) RoPE(x, pos, invFreq *kdrt.Tensor) { b.rope("rope", x, pos, invFreq, 1) }

// RoPEBackward implements runtime.Backend: the inverse rotation, in place.
func (b *Backend) RoPEBackward(dx, pos, invFreq *kdrt.Tensor) {
	b.rope("rope backward", dx, pos, invFreq, -1)
}

func (b *Backend) rope(op string, x, pos, invFreq *kdrt.Tensor, sign float32) {
	half := invFreq.Numel()
	HD := 2 * half
	if HD == 0 || x.Cols()%HD != 0 || pos.Numel() != x.Rows() {
		panic(fmt.Sprintf("cuda: %s on %v with %v and %v: shapes do not agree", op, x, pos, invFreq))
	}
	ewDType(op, pos, kdrt.I32)
	ewDType(op, invFreq, kdrt.F32)
	dt := ewSameDType(op, x)
	N, H := x.Rows(), x.Cols()/HD
	if N == 0 || H == 0 {
		return
	}
	threads := min(ewThreads, 32*blocks(H*half, 32))
	b.launch(op, kernelFor("ew_rope", dt), ewRows(N), d1(threads), 2*half*4,
		b.dptr(x), b.dptr(pos), b.dptr(invFreq), int32(N), int32(H), int32(half), sign)
}

// QKVBiasRoPE implements runtime.Backend: the split of the fused q/k/v
// projection, its bias and RoPE of q and k in one kernel, one block per row.
func (b *Backend) QKVBiasRoPE(q, k, v, qkv, bias, pos, invFreq *kdrt.Tensor) {
	const op = "qkv bias rope"
	dt, NH, NKV, HD := b.qkvCheck(op, qkv, bias, false, q, k, v, pos, invFreq)
	N := q.Rows()
	if N == 0 || HD == 0 {
		return
	}
	b.launch(op, kernelFor("ew_qkv_bias_rope", dt), ewRows(N), d1(b.qkvThreads(NH, HD)), HD*4,
		b.dptr(q), b.dptr(k), b.dptr(v), b.dptr(qkv), b.dptr(bias), b.dptr(pos), b.dptr(invFreq),
		int32(N), int32(NH), int32(NKV), int32(HD))
}

// QKVBiasRoPEBackward implements runtime.Backend: dqkv from dq, dk (rotated
// back) and dv, and the fp32 column partials of the bias gradient, in one
// pass over the rows (a block per chunk of rows, in order: deterministic);
// ew_colsum then adds the partials into dbias.
func (b *Backend) QKVBiasRoPEBackward(dqkv, dbias, dq, dk, dv, pos, invFreq *kdrt.Tensor) {
	const op = "qkv bias rope backward"
	dt, NH, NKV, HD := b.qkvCheck(op, dqkv, dbias, true, dq, dk, dv, pos, invFreq)
	N, W := dqkv.Rows(), dqkv.Cols()
	if N == 0 || HD == 0 {
		return
	}
	threads := b.qkvThreads(NH, HD)
	if dbias == nil || 4*(HD+W) > 48<<10 {
		// No bias, or partials too wide for shared memory (then BiasBackward).
		b.launch(op, kernelFor("ew_qkv_bias_rope_backward", dt), ewRows(N), d1(threads), HD*4,
			b.dptr(dqkv), uint64(0), b.dptr(dq), b.dptr(dk), b.dptr(dv), b.dptr(pos), b.dptr(invFreq),
			int32(N), int32(NH), int32(NKV), int32(HD))
		if dbias != nil {
			b.BiasBackward(dbias, dqkv)
		}
		return
	}
	chunks := min(N, 16*max(b.sms, 1), 1<<16)
	part, ok := b.scratch(op, kdrt.F32, chunks*W)
	if !ok {
		return
	}
	b.launch(op, kernelFor("ew_qkv_bias_rope_backward", dt), d1(chunks), d1(threads), 4*(HD+W),
		b.dptr(dqkv), b.dptr(part), b.dptr(dq), b.dptr(dk), b.dptr(dv), b.dptr(pos), b.dptr(invFreq),
		int32(N), int32(NH), int32(NKV), int32(HD))
	b.launch(op, kernelFor("ew_colsum", dbias.DType), d1(blocks(W, ewThreads)), d1(ewThreads), 0,
		b.dptr(dbias), b.dptr(part), int32(chunks), int32(W))
	b.Free(part)
}

// qkvCheck panics unless q [N, NH·HD], k and v [N, NKV·HD] are the column
// blocks of qkv [N, W], bias (when given) has W elements, all of one storage
// dtype (except a bias gradient, biasGrad, which may be F32), and (with
// invFreq) pos is I32 [N] and invFreq F32 [HD/2]. Without invFreq nothing
// rotates and the head size does not matter; any common divisor of the
// widths serves (their greatest).
func (b *Backend) qkvCheck(op string, qkv, bias *kdrt.Tensor, biasGrad bool, q, k, v, pos, invFreq *kdrt.Tensor) (dt kdrt.DType, NH, NKV, HD int) {
	N := qkv.Rows()
	if q.Rows() != N || k.Rows() != N || v.Rows() != N || v.Cols() != k.Cols() || q.Cols()+2*k.Cols() != qkv.Cols() ||
		(bias != nil && bias.Numel() != qkv.Cols()) {
		panic(fmt.Sprintf("cuda: %s: %v is not [%v %v %v] (bias %v)", op, qkv, q, k, v, bias))
	}
	ts := []*kdrt.Tensor{qkv, q, k, v}
	if bias != nil && !biasGrad {
		ts = append(ts, bias)
	}
	dt = ewSameDType(op, ts...)
	if biasGrad {
		gradDType(op, dt, bias)
	}
	if invFreq == nil {
		HD = gcd(q.Cols(), k.Cols())
	} else {
		HD = 2 * invFreq.Numel()
		if HD == 0 || q.Cols()%HD != 0 || k.Cols()%HD != 0 || pos == nil || pos.Numel() != N ||
			pos.DType != kdrt.I32 || invFreq.DType != kdrt.F32 {
			panic(fmt.Sprintf("cuda: %s on %v, %v with %v and %v: shapes do not agree", op, q, k, pos, invFreq))
		}
	}
	if HD == 0 {
		return dt, 0, 0, 0
	}
	return dt, q.Cols() / HD, k.Cols() / HD, HD
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// qkvThreads is the block size of the q/k/v epilogue: a thread per pair of
// a row's query heads, up to 256.
func (b *Backend) qkvThreads(NH, HD int) int { return min(ewThreads, 32*blocks(max(NH*HD/2, 1), 32)) }

// SwiGLU implements runtime.Backend: out = silu(gate)·up.
func (b *Backend) SwiGLU(out, gate, up *kdrt.Tensor) {
	const op = "swiglu"
	ewSameNumel(op, out, gate, up)
	dt := ewSameDType(op, out, gate, up)
	n := out.Numel()
	if n == 0 {
		return
	}
	b.launch(op, kernelFor("ew_swiglu", dt), b.ewGrid(n), d1(ewThreads), 0,
		b.dptr(out), b.dptr(gate), b.dptr(up), int64(n))
}

// SwiGLUBackward implements runtime.Backend: writes dgate and dup from dout.
func (b *Backend) SwiGLUBackward(dgate, dup, dout, gate, up *kdrt.Tensor) {
	const op = "swiglu backward"
	ewSameNumel(op, dgate, dup, dout, gate, up)
	dt := ewSameDType(op, dgate, dup, dout, gate, up)
	n := dout.Numel()
	if n == 0 {
		return
	}
	b.launch(op, kernelFor("ew_swiglu_backward", dt), b.ewGrid(n), d1(ewThreads), 0,
		b.dptr(dgate), b.dptr(dup), b.dptr(dout), b.dptr(gate), b.dptr(up), int64(n))
}

// GELU implements runtime.Backend: the tanh approximation (gelu_new).
func (b *Backend) GELU(out, x *kdrt.Tensor) {
	const op = "gelu"
	ewSameNumel(op, out, x)
	dt := ewSameDType(op, out, x)
	n := out.Numel()
	if n == 0 {
		return
	}
	b.launch(op, kernelFor("ew_gelu", dt), b.ewGrid(n), d1(ewThreads), 0, b.dptr(out), b.dptr(x), int64(n))
}

// GELUBackward implements runtime.Backend: dx += dout·gelu'(x).
func (b *Backend) GELUBackward(dx, dout, x *kdrt.Tensor) {
	const op = "gelu backward"
	ewSameNumel(op, dx, dout, x)
	dt := ewSameDType(op, dx, dout, x)
	n := dx.Numel()
	if n == 0 {
		return
	}
	b.launch(op, kernelFor("ew_gelu_backward", dt), b.ewGrid(n), d1(ewThreads), 0,
		b.dptr(dx), b.dptr(dout), b.dptr(x), int64(n))
}

// AdamW implements runtime.Backend. param and grad share a storage dtype
// (F32, or BF16 with the update computed in fp32 and rounded once); m and v
// are F32. The scalars are formed in float64 on the host exactly as the CPU
// forms them.
func (b *Backend) AdamW(param, grad, m, v *kdrt.Tensor, h kdrt.AdamWParams) {
	const op = "adamw"
	ewSameNumel(op, param, grad, m, v)
	dt := ewSameDType(op, param, grad)
	ewDType(op, m, kdrt.F32)
	ewDType(op, v, kdrt.F32)
	n := param.Numel()
	if n == 0 {
		return
	}
	b1, b2 := float64(h.Beta1), float64(h.Beta2)
	bc1 := 1 - math.Pow(b1, float64(h.Step))
	bc2sqrt := math.Sqrt(1 - math.Pow(b2, float64(h.Step)))
	stepSize := float32(float64(h.LR) / bc1)
	decay := float32(1 - float64(h.LR)*float64(h.WeightDecay))
	b.launch(op, kernelFor("ew_adamw", dt), b.ewGrid(n), d1(ewThreads), 0,
		b.dptr(param), b.dptr(grad), b.dptr(m), b.dptr(v), int64(n),
		stepSize, decay, float32(b1), float32(b2), h.Eps, float32(bc2sqrt))
}

// Cast converts src into dst, which has the same element count: F32 to BF16
// rounds to nearest even (±Inf stay ±Inf, a NaN stays a quiet NaN), BF16 to
// F32 is exact, and equal dtypes copy. Other dtypes panic. It is queued on the
// stream like any op; errors surface at Sync.
func (b *Backend) Cast(dst, src *kdrt.Tensor) {
	const op = "cast"
	ewSameNumel(op, dst, src)
	if dst.DType == src.DType {
		b.Copy(dst, src)
		return
	}
	var kernel string
	switch {
	case src.DType == kdrt.F32 && dst.DType == kdrt.BF16:
		kernel = "ew_cast_f32_bf16"
	case src.DType == kdrt.BF16 && dst.DType == kdrt.F32:
		kernel = "ew_cast_bf16_f32"
	default:
		panic(fmt.Sprintf("cuda: cast %v to %v: only F32 and BF16 convert", src, dst))
	}
	n := dst.Numel()
	if n == 0 {
		return
	}
	b.launch(op, kernel, b.ewGrid(n), d1(ewThreads), 0, b.dptr(dst), b.dptr(src), int64(n))
}
