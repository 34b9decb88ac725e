package sgemm

import "golang.org/x/sys/cpu"

// useAsmVec gates the assembly dot and axpy; tests turn it off to run the
// pure-Go loops.
var useAsmVec = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// dotAsm computes the dot product of the first len(x) rounded down to 32
// elements, returning how many it did and the sum.
func dotAsm(x, y []float32) (int, float32) {
	n := len(x) &^ 31
	if !useAsmVec || n == 0 {
		return 0, 0
	}
	_ = y[n-1]
	return n, dotFMA(&x[0], &y[0], n)
}

// axpyAsm does y += alpha·x over the first len(x) rounded down to 32
// elements and returns how many it did.
func axpyAsm(alpha float32, x, y []float32) int {
	n := len(x) &^ 31
	if !useAsmVec || n == 0 {
		return 0
	}
	_ = y[n-1]
	axpyFMA(alpha, &x[0], &y[0], n)
	return n
}

// dotFMA returns Σ x[i]·y[i] for i < n, n a multiple of 32.
//
//go:noescape
func dotFMA(x, y *float32, n int) float32

// axpyFMA sets y[i] += alpha·x[i] for i < n, n a multiple of 32.
//
//go:noescape
func axpyFMA(alpha float32, x, y *float32, n int)
