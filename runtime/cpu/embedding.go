package cpu

// embeddingForward: out[n, :] = table[ids[n], :] for table [V, C], in any
// element type (float32, or bf16 bits copied as stored).
func embeddingForward[E any](out []E, ids []int32, table []E, C int) {
	parallelFor(len(ids), C, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			copy(out[n*C:(n+1)*C], table[int(ids[n])*C:(int(ids[n])+1)*C])
		}
	})
}

// embeddingBackward: dtable[ids[n], :] += dout[n, :]. Columns are split across
// workers, so repeated ids never race.
func embeddingBackward[F Float](dtable, dout []F, ids []int32, C int) {
	parallelFor(C, len(ids), func(lo, hi int) {
		for n, id := range ids {
			dst, src := dtable[int(id)*C+lo:int(id)*C+hi], dout[n*C+lo:n*C+hi]
			for i := range dst {
				dst[i] += src[i]
			}
		}
	})
}
