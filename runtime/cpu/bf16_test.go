package cpu_test

import (
	"testing"

	"github.com/kdnative/kdnative/runtime/backendtest"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestBF16Conformance runs the BF16 conformance suite on the CPU's own BF16
// storage: every op against the F32 ops on the same inputs.
func TestBF16Conformance(t *testing.T) { backendtest.BF16(t, cpu.New()) }
