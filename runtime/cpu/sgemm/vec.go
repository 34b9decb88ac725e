package sgemm

// dot returns Σ x[i]·y[i]; len(y) ≥ len(x).
func dot(x, y []float32) float32 {
	done, s := dotAsm(x, y)
	y = y[:len(x)]
	// Four partial sums let the loop run at add throughput, not latency.
	var s0, s1, s2, s3 float32
	i := done
	for ; i+4 <= len(x); i += 4 {
		s0 += x[i] * y[i]
		s1 += x[i+1] * y[i+1]
		s2 += x[i+2] * y[i+2]
		s3 += x[i+3] * y[i+3]
	}
	for ; i < len(x); i++ {
		s0 += x[i] * y[i]
	}
	return s + (s0 + s1) + (s2 + s3)
}

// axpy sets y[i] += alpha·x[i]; len(y) ≥ len(x).
func axpy(alpha float32, x, y []float32) {
	done := axpyAsm(alpha, x, y)
	y = y[:len(x)]
	for i := done; i < len(x); i++ {
		y[i] += alpha * x[i]
	}
}
