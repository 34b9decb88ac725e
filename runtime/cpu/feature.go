package cpu

import (
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// RowNormalize implements runtime.Backend.
func (*Backend) RowNormalize(out, norms, x *kdrt.Tensor, eps float32) {
	mustSameNumel("row normalize", out, x)
	mustRows("row normalize", x.Rows(), norms)
	sameFloat("row normalize", out, x)
	onlyF32("row normalize", norms)
	var f frame
	defer f.done()
	rowNormalize(f.out(out), Float32s(norms), f.in(x), x.Rows(), x.Cols(), eps)
}

// RowNormalizeBackward implements runtime.Backend.
func (*Backend) RowNormalizeBackward(dx, dout, out, norms *kdrt.Tensor, eps float32) {
	mustSameNumel("row normalize backward", dx, dout, out)
	mustRows("row normalize backward", out.Rows(), norms)
	sameFloat("row normalize backward", dx, dout, out)
	onlyF32("row normalize backward", norms)
	var f frame
	defer f.done()
	rowNormalizeBackward(f.out(dx), f.in(dout), f.in(out), Float32s(norms), out.Rows(), out.Cols(), eps)
}

// RowDot implements runtime.Backend.
func (*Backend) RowDot(out, a, b *kdrt.Tensor) {
	mustSameNumel("row dot", a, b)
	mustCols("row dot", a.Cols(), b)
	mustRows("row dot", a.Rows(), out)
	sameFloat("row dot", a, b)
	onlyF32("row dot", out)
	var f frame
	defer f.done()
	rowDot(Float32s(out), f.in(a), f.in(b), a.Rows(), a.Cols())
}

// ScaleRows implements runtime.Backend.
func (*Backend) ScaleRows(dst, x, s *kdrt.Tensor, beta float32) {
	mustSameNumel("scale rows", dst, x)
	mustCols("scale rows", x.Cols(), dst)
	mustRows("scale rows", x.Rows(), s)
	sameFloat("scale rows", dst, x)
	onlyF32("scale rows", s)
	var f frame
	defer f.done()
	scaleRows(f.out(dst), f.in(x), Float32s(s), x.Rows(), x.Cols(), beta)
}

// mustRows panics unless the per-row vector v has n elements.
func mustRows(op string, n int, v *kdrt.Tensor) {
	if v.Numel() != n {
		panic(fmt.Sprintf("cpu: %s: %v should have %d elements, one per row", op, v, n))
	}
}

// rowNormalize: out[n] = x[n]/norms[n], norms[n] = max(‖x[n]‖, eps).
func rowNormalize[F Float](out, norms, x []F, N, C int, eps F) {
	parallelFor(N, 3*C, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			xr, or := x[n*C:(n+1)*C], out[n*C:(n+1)*C]
			var ss F
			for _, v := range xr {
				ss += v * v
			}
			nr := max(sqrt(ss), eps)
			norms[n] = nr
			for i, v := range xr {
				or[i] = v / nr // divide, as PyTorch does
			}
		}
	})
}

// rowNormalizeBackward accumulates dx[n] += (dout − out·⟨out, dout⟩)/norms[n],
// or dout/eps where the norm was clamped (norms[n] ≤ eps).
func rowNormalizeBackward[F Float](dx, dout, out, norms []F, N, C int, eps F) {
	parallelFor(N, 5*C, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			or, dr, dxr := out[n*C:(n+1)*C], dout[n*C:(n+1)*C], dx[n*C:(n+1)*C]
			inv := 1 / norms[n]
			var dot F
			if norms[n] > eps {
				for i := range or {
					dot += or[i] * dr[i]
				}
			}
			for i := range or {
				dxr[i] += (dr[i] - or[i]*dot) * inv
			}
		}
	})
}

// rowDot: out[n] = ⟨a[n], b[n]⟩.
func rowDot[F Float](out, a, b []F, N, C int) {
	parallelFor(N, 2*C, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			ar, br := a[n*C:(n+1)*C], b[n*C:(n+1)*C]
			var s F
			for i := range ar {
				s += ar[i] * br[i]
			}
			out[n] = s
		}
	})
}

// scaleRows: dst[n] = s[n]·x[n] + β·dst[n]; β = 0 does not read dst.
func scaleRows[F Float](dst, x, s []F, N, C int, beta F) {
	parallelFor(N, 2*C, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			xr, dr, sn := x[n*C:(n+1)*C], dst[n*C:(n+1)*C], s[n]
			if beta == 0 {
				for i := range xr {
					dr[i] = sn * xr[i]
				}
				continue
			}
			for i := range xr {
				dr[i] = sn*xr[i] + beta*dr[i]
			}
		}
	})
}
