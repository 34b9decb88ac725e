package cpu

import (
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// AddRMSNorm implements runtime.Backend: the add, then the RMSNorm of the
// sum (the CPU gains nothing from fusing them; the GPU makes one pass). The
// norm reads the sum as stored — rounded, for BF16 — as the GPU's does and
// as the backward will.
func (b *Backend) AddRMSNorm(sum, out, rstd, x, y, w *kdrt.Tensor, eps float32) {
	mustSameNumel("add rmsnorm", sum, out, x, y)
	mustCols("add rmsnorm", w.Numel(), sum)
	if rstd.Numel() != sum.Rows() {
		panic(fmt.Sprintf("cpu: add rmsnorm: %v should have %d elements (the rows of %v)", rstd, sum.Rows(), sum))
	}
	b.Add(sum, x, y)
	b.RMSNorm(out, rstd, sum, w, eps)
}

// rmsnormForward: out[N,C] = x·rstd·w, rstd[n] = 1/sqrt(mean(x[n]²) + eps).
func rmsnormForward[F Float](out, rstd, x, w []F, N, C int, eps F) {
	parallelFor(N, 3*C, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			xr, or := x[n*C:(n+1)*C], out[n*C:(n+1)*C]
			var ss F
			for _, v := range xr {
				ss += v * v
			}
			r := 1 / sqrt(ss/F(C)+eps)
			rstd[n] = r
			for i, v := range xr {
				or[i] = v * r * w[i]
			}
		}
	})
}

// rmsnormBackward accumulates dx[N,C] and dw[C]. With g = dout·w and
// y = x·rstd: dx = rstd·(g − y·mean(g·y)), dw += Σ_n dout·y.
func rmsnormBackward[F Float](dx, dw, dout, x, w, rstd []F, N, C int) {
	parallelFor(N, 6*C, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			xr, dr, dxr := x[n*C:(n+1)*C], dout[n*C:(n+1)*C], dx[n*C:(n+1)*C]
			r := rstd[n]
			var dot F
			for i := range xr {
				dot += dr[i] * w[i] * xr[i] * r
			}
			dot /= F(C)
			for i := range xr {
				dxr[i] += r * (dr[i]*w[i] - xr[i]*r*dot)
			}
		}
	})
	columnsAccumulate(dw, N, C, func(n, i int) F { return dout[n*C+i] * x[n*C+i] * rstd[n] })
}

// layernormForward: out = (x − mean)·rstd·w + b over rows of [N, C].
func layernormForward[F Float](out, mean, rstd, x, w, b []F, N, C int, eps F) {
	parallelFor(N, 4*C, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			xr, or := x[n*C:(n+1)*C], out[n*C:(n+1)*C]
			var m F
			for _, v := range xr {
				m += v
			}
			m /= F(C)
			var vs F
			for _, v := range xr {
				vs += (v - m) * (v - m)
			}
			r := 1 / sqrt(vs/F(C)+eps)
			mean[n], rstd[n] = m, r
			for i, v := range xr {
				or[i] = (v-m)*r*w[i] + b[i]
			}
		}
	})
}

// layernormBackward accumulates dx, dw, db. With xhat = (x−mean)·rstd and
// g = dout·w: dx = rstd·(g − mean(g) − xhat·mean(g·xhat)).
func layernormBackward[F Float](dx, dw, db, dout, x, w, mean, rstd []F, N, C int) {
	parallelFor(N, 8*C, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			xr, dr, dxr := x[n*C:(n+1)*C], dout[n*C:(n+1)*C], dx[n*C:(n+1)*C]
			m, r := mean[n], rstd[n]
			var sg, sgx F
			for i := range xr {
				g := dr[i] * w[i]
				sg += g
				sgx += g * (xr[i] - m) * r
			}
			sg /= F(C)
			sgx /= F(C)
			for i := range xr {
				xhat := (xr[i] - m) * r
				dxr[i] += r * (dr[i]*w[i] - sg - xhat*sgx)
			}
		}
	})
	columnsAccumulate(dw, N, C, func(n, i int) F { return dout[n*C+i] * (x[n*C+i] - mean[n]) * rstd[n] })
	columnsAccumulate(db, N, C, func(n, i int) F { return dout[n*C+i] })
}

// columnsAccumulate adds Σ_n f(n, i) into dst[i] for i in [0, C), splitting the
// columns across workers so that no two write the same element.
func columnsAccumulate[F Float](dst []F, N, C int, f func(n, i int) F) {
	parallelFor(C, 2*N, func(lo, hi int) {
		for n := 0; n < N; n++ {
			for i := lo; i < hi; i++ {
				dst[i] += f(n, i)
			}
		}
	})
}
