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
