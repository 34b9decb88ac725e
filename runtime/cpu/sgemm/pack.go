package sgemm

// packA copies the mc×kc block of op(A) starting at row i0, column p0 into
// dst as a sequence of mr-row panels. Panel q holds rows i0+q·mr … i0+q·mr+mr-1
// column by column: dst[q·mr·kc + p·mr + r] = op(A)[i0+q·mr+r][p0+p]. Rows past
// mc are zero, so the kernel may always compute a full mr-row tile.
//
// op(A)[i][p] is a[i·lda+p], or a[p·lda+i] when trans is set.
func packA(dst, a []float32, lda int, trans bool, i0, mc, p0, kc, mr int) {
	if trans {
		// Row p of op(A)ᵀ is contiguous in a and feeds column p of
		// every panel.
		spread(dst, a[p0*lda+i0:], lda, mc, kc, mr)
	}
	for q := 0; q < mc; q += mr {
		rows := min(mr, mc-q)
		panel := dst[q*kc : q*kc+mr*kc]
		if !trans {
			// Row r of the panel is contiguous in a: a transpose.
			interleave(panel, mr, a[(i0+q)*lda+p0:], lda, rows, kc)
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
	if !trans {
		spread(dst, b[p0*ldb+j0:], ldb, nc, kc, nr)
	}
	for q := 0; q < nc; q += nr {
		cols := min(nr, nc-q)
		panel := dst[q*kc : q*kc+nr*kc]
		if trans {
			interleave(panel, nr, b[(j0+q)*ldb+p0:], ldb, cols, kc)
		}
		if cols < nr {
			for p := 0; p < kc; p++ {
				clear(panel[p*nr+cols : p*nr+nr])
			}
		}
	}
}

// spread copies the first width floats of each of n rows of src (stride ld)
// into panels of w columns: src[p·ld + q·w + r] goes to dst[q·w·n + p·w + r].
// Reading src row by row keeps every read sequential, which the hardware
// prefetcher follows even when ld is hundreds of kilobytes; walking one panel
// at a time would instead jump ld floats every w floats. Columns of the last
// panel past width are left alone.
func spread(dst, src []float32, ld, width, n, w int) {
	full := width / w * w
	for p := 0; p < n; p++ {
		row := src[p*ld : p*ld+width]
		q := 0
		// The kernels' panel widths get fixed-size moves.
		switch w {
		case 32:
			for ; q < full; q += 32 {
				*(*[32]float32)(dst[q*n+p*32:]) = [32]float32(row[q:])
			}
		case 16:
			for ; q < full; q += 16 {
				*(*[16]float32)(dst[q*n+p*16:]) = [16]float32(row[q:])
			}
		case 12:
			for ; q < full; q += 12 {
				*(*[12]float32)(dst[q*n+p*12:]) = [12]float32(row[q:])
			}
		}
		for ; q < width; q += w {
			copy(dst[q*n+p*w:q*n+p*w+min(w, width-q)], row[q:])
		}
	}
}

// interleave sets dst[p·stride + r] = src[r·ld + p] for r < rows, p < n: rows
// of src become columns of the panel.
func interleave(dst []float32, stride int, src []float32, ld, rows, n int) {
	r := 0
	for ; r+8 <= rows; r += 8 {
		done := interleave8(dst[r:], stride, src[r*ld:], ld, n)
		for i := 0; i < 8; i++ {
			row := src[(r+i)*ld : (r+i)*ld+n]
			for p := done; p < n; p++ {
				dst[p*stride+r+i] = row[p]
			}
		}
	}
	// Four rows at a time write four adjacent floats per column, a quarter
	// of the scattered stores of one row at a time.
	for ; r+4 <= rows; r += 4 {
		s0 := src[r*ld : r*ld+n]
		s1 := src[(r+1)*ld : (r+1)*ld+n]
		s2 := src[(r+2)*ld : (r+2)*ld+n]
		s3 := src[(r+3)*ld : (r+3)*ld+n]
		for p := 0; p < n; p++ {
			d := (*[4]float32)(dst[p*stride+r:])
			d[0], d[1], d[2], d[3] = s0[p], s1[p], s2[p], s3[p]
		}
	}
	for ; r < rows; r++ {
		row := src[r*ld : r*ld+n]
		for p, v := range row {
			dst[p*stride+r] = v
		}
	}
}
