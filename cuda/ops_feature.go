package cuda

import (
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// The feature-distillation ops (kernels/feature.cu). The [N, C] tensors of one
// op (x, out, dout, dx, a, b, dst) share one storage dtype, F32 or BF16
// (arithmetic in fp32); the per-row vectors (norms, RowDot's out, ScaleRows'
// s) are F32. One block per row.

// featThreads is the block size for rows of C elements: about 8 per thread,
// a multiple of 32 between 32 and 1024.
func featThreads(C int) int { return min(1024, 32*blocks(blocks(C, 8), 32)) }

// featDType panics unless every tensor has the first one's dtype, F32 or
// BF16, and returns it.
func featDType(op string, ts ...*kdrt.Tensor) kdrt.DType {
	dt := ts[0].DType
	if dt != kdrt.F32 && dt != kdrt.BF16 {
		panic(fmt.Sprintf("cuda: %s: %v: dtype %s not supported (F32 or BF16)", op, ts[0], dt))
	}
	for _, t := range ts[1:] {
		if t.DType != dt {
			panic(fmt.Sprintf("cuda: %s: %v and %v differ in dtype", op, ts[0], t))
		}
	}
	return dt
}

// featSameNumel panics unless the tensors have as many elements as the first.
func featSameNumel(op string, ts ...*kdrt.Tensor) {
	for _, t := range ts[1:] {
		if t.Numel() != ts[0].Numel() {
			panic(fmt.Sprintf("cuda: %s: %v and %v differ in size", op, ts[0], t))
		}
	}
}

// featRows panics unless the per-row vector v is F32 with n elements.
func featRows(op string, n int, v *kdrt.Tensor) {
	if v.Numel() != n || v.DType != kdrt.F32 {
		panic(fmt.Sprintf("cuda: %s: %v should be F32 with %d elements, one per row", op, v, n))
	}
}

// featCols panics unless t has want columns.
func featCols(op string, want int, t *kdrt.Tensor) {
	if t.Cols() != want {
		panic(fmt.Sprintf("cuda: %s: %v should have %d columns", op, t, want))
	}
}

// RowNormalize implements runtime.Backend: out[n] = x[n]/max(‖x[n]‖₂, eps),
// saving the clamped norms. out may alias x.
func (b *Backend) RowNormalize(out, norms, x *kdrt.Tensor, eps float32) {
	const op = "row normalize"
	featSameNumel(op, out, x)
	N, C := x.Rows(), x.Cols()
	featRows(op, N, norms)
	dt := featDType(op, x, out)
	if N == 0 {
		return
	}
	b.launch(op, kernelFor("feat_row_normalize", dt), d1(N), d1(featThreads(C)), 0,
		b.dptr(out), b.dptr(norms), b.dptr(x), int32(C), eps)
}

// RowNormalizeBackward implements runtime.Backend: dx[n] += (dout −
// out·⟨out, dout⟩)/norms[n], or dout/eps for a row whose norm was clamped.
func (b *Backend) RowNormalizeBackward(dx, dout, out, norms *kdrt.Tensor, eps float32) {
	const op = "row normalize backward"
	featSameNumel(op, dx, dout, out)
	N, C := out.Rows(), out.Cols()
	featRows(op, N, norms)
	dt := featDType(op, out, dx, dout)
	if N == 0 {
		return
	}
	b.launch(op, kernelFor("feat_row_normalize_backward", dt), d1(N), d1(featThreads(C)), 0,
		b.dptr(dx), b.dptr(dout), b.dptr(out), b.dptr(norms), int32(C), eps)
}

// RowDot implements runtime.Backend: out[n] = Σ_c a[n, c]·b[n, c].
func (b *Backend) RowDot(out, a, bm *kdrt.Tensor) {
	const op = "row dot"
	featSameNumel(op, a, bm)
	N, C := a.Rows(), a.Cols()
	featCols(op, C, bm)
	featRows(op, N, out)
	dt := featDType(op, a, bm)
	if N == 0 {
		return
	}
	b.launch(op, kernelFor("feat_row_dot", dt), d1(N), d1(featThreads(C)), 0,
		b.dptr(out), b.dptr(a), b.dptr(bm), int32(C))
}

// ScaleRows implements runtime.Backend: dst[n] = s[n]·x[n] + β·dst[n]; β = 0
// does not read dst. dst may alias x.
func (b *Backend) ScaleRows(dst, x, s *kdrt.Tensor, beta float32) {
	const op = "scale rows"
	featSameNumel(op, dst, x)
	N, C := x.Rows(), x.Cols()
	featCols(op, C, dst)
	featRows(op, N, s)
	dt := featDType(op, x, dst)
	if N == 0 {
		return
	}
	b.launch(op, kernelFor("feat_scale_rows", dt), d1(N), d1(featThreads(C)), 0,
		b.dptr(dst), b.dptr(x), b.dptr(s), int32(C), beta)
}
