//go:build !amd64

package sgemm

// Other GOARCHes have no assembly kernel yet.
var hostKernels []*kernel
