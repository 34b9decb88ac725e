package model

import "testing"

func TestBuiltinTinyParses(t *testing.T) {
	c := BuiltinTiny()
	if c.Arch != Llama || c.Layers != 2 || c.KVHeads != 2 || !c.Tied {
		t.Fatalf("built-in config parsed as %+v", c)
	}
	// 256·64 embedding (tied) + 2 layers + final norm.
	perLayer := 64 + 64*64 + 2*32*64 + 64*64 + 64 + 3*64*176
	if got, want := c.NumParams(), 256*64+2*perLayer+64; got != want {
		t.Fatalf("NumParams %d, want %d", got, want)
	}
}

// TestTrainingFLOPs checks the count for the built-in model by hand: 6 per
// matrix parameter per token, and 12·L·B·T²·(NH·HD) for attention.
func TestTrainingFLOPs(t *testing.T) {
	c := BuiltinTiny() // C 64, F 176, L 2, NH 4, NKV 2, HD 16, V 256
	perLayer := 64*64 + 2*64*32 + 64*64 + 3*64*176
	matrix := 2*perLayer + 256*64
	B, T := 3, 10
	want := 6*float64(matrix)*float64(B*T) + 12*2*float64(B)*float64(T*T)*64
	if got := c.TrainingFLOPs(B, T); got != want {
		t.Fatalf("TrainingFLOPs %g, want %g", got, want)
	}
}
