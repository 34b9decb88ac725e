package cuda

import (
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// The normalization ops (kernels/norm.cu). Accepted dtypes: x, out, dout, dx
// and the parameters w, b share one storage dtype, F32 or BF16 (arithmetic
// in fp32); the parameter gradients dw, db are F32 or that dtype (their
// column sums are fp32 partials either way); the saved statistics mean [N]
// and rstd [N] are always F32. Anything else panics.

// normThreads is the block size of a row kernel for rows of C elements: about
// 8 elements per thread, a multiple of 32 between 32 and 1024.
func normThreads(C int) int { return min(1024, 32*blocks(blocks(C, 8), 32)) }

// normCheck panics unless x is [N, C] with the float tensors xs of the same
// storage dtype as x, the [C] parameters ps with C elements (of x's dtype,
// except the gradients grads, which may be F32), and the [N] statistics
// stats F32 with N elements. It returns x's dtype.
func normCheck(op string, x *kdrt.Tensor, rowsLike, ps, stats []*kdrt.Tensor, grads ...*kdrt.Tensor) kdrt.DType {
	N, C := x.Rows(), x.Cols()
	for _, t := range rowsLike {
		if t.Numel() != x.Numel() {
			panic(fmt.Sprintf("cuda: %s: %v and %v differ in size", op, x, t))
		}
	}
	for _, t := range append(append([]*kdrt.Tensor(nil), ps...), grads...) {
		if t.Numel() != C {
			panic(fmt.Sprintf("cuda: %s: %v should have %d elements (the columns of %v)", op, t, C, x))
		}
	}
	for _, t := range stats {
		if t.Numel() != N || t.DType != kdrt.F32 {
			panic(fmt.Sprintf("cuda: %s: %v should be F32 with %d elements (the rows of %v)", op, t, N, x))
		}
	}
	dt := ewSameDType(op, append(append([]*kdrt.Tensor{x}, rowsLike...), ps...)...)
	gradDType(op, dt, grads...)
	return dt
}

// RMSNorm implements runtime.Backend: out = x·rstd·w, rstd[n] =
// 1/sqrt(mean(x[n]²) + eps); one block per row.
func (b *Backend) RMSNorm(out, rstd, x, w *kdrt.Tensor, eps float32) {
	const op = "rmsnorm"
	dt := normCheck(op, x, []*kdrt.Tensor{out}, []*kdrt.Tensor{w}, []*kdrt.Tensor{rstd})
	N, C := x.Rows(), x.Cols()
	if N == 0 || C == 0 {
		return
	}
	b.launch(op, kernelFor("norm_rmsnorm", dt), ewRows(N), d1(normThreads(C)), 0,
		b.dptr(out), b.dptr(rstd), b.dptr(x), b.dptr(w), int32(N), int32(C), eps)
}

// RMSNormBackward implements runtime.Backend: dx += rstd·(g − y·mean(g·y))
// with g = dout·w, y = x·rstd, and dw += Σ_n dout·x·rstd column-wise,
// deterministically: one kernel makes the pass over the rows (dx, and fp32
// column partials per block of rows), norm_colsum adds the partials in
// order. Rows wider than normMaxFusedC take three kernels instead.
func (b *Backend) RMSNormBackward(dx, dw, dout, x, w, rstd *kdrt.Tensor) {
	const op = "rmsnorm backward"
	dt := normCheck(op, x, []*kdrt.Tensor{dx, dout}, []*kdrt.Tensor{w}, []*kdrt.Tensor{rstd}, dw)
	N, C := x.Rows(), x.Cols()
	if N == 0 || C == 0 {
		return
	}
	if C > normMaxFusedC {
		b.launch(op, kernelFor("norm_rmsnorm_backward_dx", dt), ewRows(N), d1(normThreads(C)), 0,
			b.dptr(dx), b.dptr(dout), b.dptr(x), b.dptr(w), b.dptr(rstd), int32(N), int32(C))
		b.normColumns(op, dt, dw, nil, dout, x, nil, rstd)
		return
	}
	chunks := min(N, 16*max(b.sms, 1), 1<<16)
	part, ok := b.scratch(op, kdrt.F32, chunks*C)
	if !ok {
		return
	}
	b.launch(op, kernelFor("norm_rmsnorm_backward", dt), d1(chunks), d1(normThreads(C)), 4*C,
		b.dptr(dx), b.dptr(part), b.dptr(dout), b.dptr(x), b.dptr(w), b.dptr(rstd), int32(N), int32(C))
	b.launch(op, kernelFor("norm_colsum", dw.DType), d1(blocks(C, ewThreads)), d1(ewThreads), 0,
		b.dptr(dw), b.dptr(part), int32(chunks), int32(C))
	b.Free(part)
}

// normMaxFusedC is the widest row whose column partials (C floats of
// shared memory) the one-pass RMSNorm backward keeps: 48 KiB.
const normMaxFusedC = 12 << 10

// AddRMSNorm implements runtime.Backend: sum = a + b and out = RMSNorm(sum)
// in one kernel, one block per row.
func (b *Backend) AddRMSNorm(sum, out, rstd, x, y, w *kdrt.Tensor, eps float32) {
	const op = "add rmsnorm"
	dt := normCheck(op, sum, []*kdrt.Tensor{out, x, y}, []*kdrt.Tensor{w}, []*kdrt.Tensor{rstd})
	N, C := sum.Rows(), sum.Cols()
	if N == 0 || C == 0 {
		return
	}
	b.launch(op, kernelFor("norm_add_rmsnorm", dt), ewRows(N), d1(normThreads(C)), 0,
		b.dptr(sum), b.dptr(out), b.dptr(rstd), b.dptr(x), b.dptr(y), b.dptr(w), int32(N), int32(C), eps)
}

// LayerNorm implements runtime.Backend: out = (x − mean)·rstd·w + b, saving
// mean[n] and rstd[n]; one block per row.
func (b *Backend) LayerNorm(out, mean, rstd, x, w, bias *kdrt.Tensor, eps float32) {
	const op = "layernorm"
	dt := normCheck(op, x, []*kdrt.Tensor{out}, []*kdrt.Tensor{w, bias}, []*kdrt.Tensor{mean, rstd})
	N, C := x.Rows(), x.Cols()
	if N == 0 || C == 0 {
		return
	}
	b.launch(op, kernelFor("norm_layernorm", dt), ewRows(N), d1(normThreads(C)), 0,
		b.dptr(out), b.dptr(mean), b.dptr(rstd), b.dptr(x), b.dptr(w), b.dptr(bias), int32(N), int32(C), eps)
}

// LayerNormBackward implements runtime.Backend: dx += rstd·(g − mean(g) −
// xhat·mean(g·xhat)) with xhat = (x − mean)·rstd, g = dout·w (one block per
// row); dw += Σ_n dout·xhat and db += Σ_n dout column-wise, deterministically.
func (b *Backend) LayerNormBackward(dx, dw, db, dout, x, w, mean, rstd *kdrt.Tensor) {
	const op = "layernorm backward"
	dt := normCheck(op, x, []*kdrt.Tensor{dx, dout}, []*kdrt.Tensor{w}, []*kdrt.Tensor{mean, rstd}, dw, db)
	N, C := x.Rows(), x.Cols()
	if N == 0 || C == 0 {
		return
	}
	b.launch(op, kernelFor("norm_layernorm_backward_dx", dt), ewRows(N), d1(normThreads(C)), 0,
		b.dptr(dx), b.dptr(dout), b.dptr(x), b.dptr(w), b.dptr(mean), b.dptr(rstd), int32(N), int32(C))
	b.normColumns(op, dt, dw, db, dout, x, mean, rstd)
}

// normColumns accumulates the parameter gradients of a norm backward:
// dw[C] += Σ_n dout·(x − mean)·rstd (Σ_n dout·x·rstd when mean is nil) and,
// when db is not nil, db[C] += Σ_n dout. norm_partial writes fp32 partials
// per chunk of rows; norm_colsum adds them in order into the gradients.
func (b *Backend) normColumns(op string, dt kdrt.DType, dw, db, dout, x, mean, rstd *kdrt.Tensor) {
	N, C := x.Rows(), x.Cols()
	chunks, rows := b.columnChunks(N, C)
	parts := 1
	if db != nil {
		parts = 2
	}
	part, ok := b.scratch(op, kdrt.F32, parts*chunks*C)
	if !ok {
		return
	}
	pw, pb := b.dptr(part), uint64(0)
	if db != nil {
		pb = pw + uint64(4*chunks*C)
	}
	b.launch(op, kernelFor("norm_partial", dt), dim3{uint32(blocks(C, 32)), uint32(chunks), 1}, dim3{32, 8, 1}, 0,
		pw, pb, b.dptr(dout), b.dptr(x), b.dptr(mean), b.dptr(rstd), int32(N), int32(C), int32(rows))
	b.launch(op, kernelFor("norm_colsum", dw.DType), d1(blocks(C, ewThreads)), d1(ewThreads), 0, b.dptr(dw), pw, int32(chunks), int32(C))
	if db != nil {
		b.launch(op, kernelFor("norm_colsum", db.DType), d1(blocks(C, ewThreads)), d1(ewThreads), 0, b.dptr(db), pb, int32(chunks), int32(C))
	}
	b.Free(part)
}
