//go:build !amd64

package sgemm

// useAsmVec mirrors the amd64 switch; there is no assembly to switch on.
var useAsmVec = false

func dotAsm(x, y []float32) (int, float32)      { return 0, 0 }
func axpyAsm(alpha float32, x, y []float32) int { return 0 }
