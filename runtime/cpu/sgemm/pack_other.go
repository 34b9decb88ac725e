//go:build !amd64

package sgemm

func interleave8(dst []float32, stride int, src []float32, ld, n int) bool { return false }
