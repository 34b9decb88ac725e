package sgemm

// C with only a few rows (or columns) is a handful of matrix-vector products.
// There each element of the long operand is used only m (or n) times, so
// packing it — reading and writing every element once more — costs more than
// the arithmetic, and an mr×nr kernel would mostly multiply padding. The
// skinny path instead streams the long operand once through dot products
// or axpys.
const skinnyMax = 4

// A skinny product is split across goroutines once the long operand has this
// many elements (1 MiB): below that one core streams it faster than a helper
// wakes up.
const skinnyParallel = 1 << 18

// fewRows computes columns [j0, j1) of C when m ≤ skinnyMax: with row i of
// op(A) as a vector a_i,
//
//	C[i][j] = α·a_i·op(B)[:, j] + β·C[i][j]
//
// as dot products when B is stored n×k (each column of op(B) a row of b), or
// as axpys of the rows of B into the rows of C when B is stored k×n.
func (t *task) fewRows(buf *buffers, j0, j1 int) {
	m, k := t.m, t.k
	rows := buf.rows[:m]
	if t.transA {
		grow(&buf.vec, m*k)
	}
	for i := range m {
		if t.transA {
			// Row i of op(A) is column i of a: gather it.
			rows[i] = buf.vec[i*k : i*k+k]
			for p := range k {
				rows[i][p] = t.a[p*t.lda+i]
			}
		} else {
			rows[i] = t.a[i*t.lda : i*t.lda+k]
		}
	}
	if t.transB {
		// j outside, i inside: each row of b is read from memory once
		// and reused from L1 by the other rows of A.
		for j := j0; j < j1; j++ {
			bj := t.b[j*t.ldb : j*t.ldb+k]
			for i := range m {
				t.set(i*t.ldc+j, dot(rows[i], bj))
			}
		}
		return
	}
	for i := range m {
		scale(1, j1-j0, t.beta, t.c[i*t.ldc+j0:], t.ldc)
	}
	for p := range k {
		bp := t.b[p*t.ldb+j0 : p*t.ldb+j1]
		for i := range m {
			axpy(t.alpha*rows[i][p], bp, t.c[i*t.ldc+j0:i*t.ldc+j1])
		}
	}
}

// fewCols computes rows [i0, i1) of C when n ≤ skinnyMax, the mirror of
// fewRows: with column j of op(B) as a vector b_j, C[i][j] = α·op(A)[i, :]·b_j
// + β·C[i][j], as dot products when A is stored m×k, or as axpys of the rows
// of A (stored k×m) into a column accumulator when it is stored transposed.
func (t *task) fewCols(buf *buffers, i0, i1 int) {
	n, k, rows := t.n, t.k, i1-i0
	cols, acc := buf.rows[:n], buf.accs[:n]
	grow(&buf.vec, n*k+n*rows)
	for j := range n {
		acc[j] = buf.vec[n*k+j*rows : n*k+j*rows+rows]
		if t.transB {
			cols[j] = t.b[j*t.ldb : j*t.ldb+k]
		} else {
			cols[j] = buf.vec[j*k : j*k+k]
			for p := range k {
				cols[j][p] = t.b[p*t.ldb+j]
			}
		}
	}
	if !t.transA {
		for i := i0; i < i1; i++ {
			ai := t.a[i*t.lda : i*t.lda+k]
			for j := range n {
				t.set(i*t.ldc+j, dot(ai, cols[j]))
			}
		}
		return
	}
	// A is k×m: row p of a holds op(A)[i0:i1, p] contiguously, so column j
	// of this block of C is Σ_p b_j[p]·a[p, i0:i1], accumulated in scratch
	// and written to C's column at the end.
	for j := range n {
		clear(acc[j])
	}
	for p := range k {
		ap := t.a[p*t.lda+i0 : p*t.lda+i1]
		for j := range n {
			axpy(cols[j][p], ap, acc[j])
		}
	}
	for j := range n {
		for i, v := range acc[j] {
			t.set((i0+i)*t.ldc+j, v)
		}
	}
}

// set stores α·v + β·C into C at off, not reading C when β = 0.
func (t *task) set(off int, v float32) {
	if t.beta == 0 {
		t.c[off] = t.alpha * v
	} else {
		t.c[off] = t.alpha*v + t.beta*t.c[off]
	}
}
