package sgemm

// packA copies the mc×kc block of op(A) starting at row i0, column p0 into
// dst as a sequence of mr-row panels. Panel q holds rows i0+q·mr … i0+q·mr+mr-1
// column by column: dst[q·mr·kc + p·mr + r] = op(A)[i0+q·mr+r][p0+p]. Rows past
// mc are zero, so the kernel may always compute a full mr-row tile.
//
// op(A)[i][p] is a[i·lda+p], or a[p·lda+i] when trans is set.
func packA(dst, a []float32, lda int, trans bool, i0, mc, p0, kc, mr int) {
	for q := 0; q < mc; q += mr {
		rows := min(mr, mc-q)
		panel := dst[q*kc : q*kc+mr*kc]
		if trans {
			// Column p of the panel is contiguous in a: one copy per p.
			for p := 0; p < kc; p++ {
				off := (p0+p)*lda + i0 + q
				copy(panel[p*mr:p*mr+rows], a[off:off+rows])
			}
		} else {
			// Row r of the panel is contiguous in a; scatter it with
			// stride mr.
			for r := 0; r < rows; r++ {
				off := (i0+q+r)*lda + p0
				scatter(panel[r:], a[off:off+kc], mr)
			}
		}
		if rows < mr {
			for p := 0; p < kc; p++ {
				clear(panel[p*mr+rows : p*mr+mr])
			}
		}
	}
}

// packB copies the kc×nc block of op(B) starting at row p0, column j0 into dst
// as a sequence of nr-column panels. Panel q holds columns j0+q·nr … row by
// row: dst[q·nr·kc + p·nr + c] = op(B)[p0+p][j0+q·nr+c]. Columns past nc are
// zero.
//
// op(B)[p][j] is b[p·ldb+j], or b[j·ldb+p] when trans is set.
func packB(dst, b []float32, ldb int, trans bool, p0, kc, j0, nc, nr int) {
	for q := 0; q < nc; q += nr {
		cols := min(nr, nc-q)
		panel := dst[q*kc : q*kc+nr*kc]
		if trans {
			for c := 0; c < cols; c++ {
				off := (j0+q+c)*ldb + p0
				scatter(panel[c:], b[off:off+kc], nr)
			}
		} else {
			for p := 0; p < kc; p++ {
				off := (p0+p)*ldb + j0 + q
				copy(panel[p*nr:p*nr+cols], b[off:off+cols])
			}
		}
		if cols < nr {
			for p := 0; p < kc; p++ {
				clear(panel[p*nr+cols : p*nr+nr])
			}
		}
	}
}

// scatter sets dst[i·stride] = src[i] for every i.
func scatter(dst, src []float32, stride int) {
	if len(src) == 0 {
		return
	}
	_ = dst[(len(src)-1)*stride]
	for i, v := range src {
		dst[i*stride] = v
	}
}
