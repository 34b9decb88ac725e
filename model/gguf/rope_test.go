package gguf

import (
	"math"
	"strings"
	"testing"
)

// llamaCppFactors is convert_hf_to_gguf.py's rope_freqs for llama3 scaling.
func llamaCppFactors(theta float64, hd int, factor, low, high, orig float64) []float32 {
	var rf []float32
	for i := 0; i < hd; i += 2 {
		f := float64(float32(1 / math.Pow(theta, float64(float32(i)/float32(hd)))))
		wl := 2 * math.Pi / f
		switch {
		case wl < orig/high:
			rf = append(rf, 1)
		case wl > orig/low:
			rf = append(rf, float32(factor))
		default:
			s := (orig/wl - low) / (high - low)
			rf = append(rf, float32(1/((1-s)/factor+s)))
		}
	}
	return rf
}

func TestRopeScalingFromFactors(t *testing.T) {
	for _, c := range []struct {
		name                          string
		theta                         float64
		hd                            int
		factor, low, high, orig       float64
		wantFactor, wantLow, wantHigh float64 // 0: any that reproduce the factors
	}{
		{"Llama 3.1 8B", 500000, 128, 8, 1, 4, 8192, 8, 1, 4},
		{"Llama 3.2 1B", 500000, 64, 32, 1, 4, 8192, 32, 1, 4},
		{"tiny, two blended", 100, 8, 4, 0.5, 4, 64, 4, 0, 0},
		{"one blended", 10000, 8, 4, 1, 4, 256, 4, 0, 0},
		{"none blended", 10000, 8, 2, 1, 1.5, 100, 2, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			rf := llamaCppFactors(c.theta, c.hd, c.factor, c.low, c.high, c.orig)
			rs, err := ropeScalingFromFactors(rf, c.theta, c.hd)
			if err != nil {
				t.Fatal(err)
			}
			if rs["factor"] != c.wantFactor || (c.wantLow != 0 && (rs["low_freq_factor"] != c.wantLow || rs["high_freq_factor"] != c.wantHigh)) {
				t.Errorf("recovered %v, want factor %g low %g high %g", rs, c.wantFactor, c.wantLow, c.wantHigh)
			}
			// The recovered parameters give llama.cpp's factors again.
			got := llamaCppFactors(c.theta, c.hd, rs["factor"].(float64), rs["low_freq_factor"].(float64),
				rs["high_freq_factor"].(float64), float64(rs["original_max_position_embeddings"].(int)))
			for i := range rf {
				if math.Abs(float64(got[i]-rf[i])) > 1e-5*float64(rf[i]) {
					t.Errorf("factor %d: %g from the recovered parameters, %g in the file", i, got[i], rf[i])
				}
			}
		})
	}
	if rs, err := ropeScalingFromFactors([]float32{1, 1, 1, 1}, 10000, 8); rs != nil || err != nil {
		t.Errorf("all ones: %v, %v; want no scaling", rs, err)
	}
	for _, bad := range [][]float32{{1, 4, 2, 4}, {1, 0.5, 1, 1}, {1, 1, 1}} {
		if _, err := ropeScalingFromFactors(bad, 10000, 8); err == nil || strings.Contains(err.Error(), "%!") {
			t.Errorf("%v: %v, want an error", bad, err)
		}
	}
}
