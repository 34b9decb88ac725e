//go:build !amd64

package sgemm

// useTranspose8 mirrors the amd64 switch; there is no assembly to switch on.
var useTranspose8 = false

// interleave8 has no assembly here; interleave does all the work.
func interleave8(dst []float32, stride int, src []float32, ld, n int) int { return 0 }
