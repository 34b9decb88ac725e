package gguf

import (
	"fmt"
	"math"
	"strconv"
)

// llama.cpp stores Llama 3.1-style RoPE scaling ("rope_type": "llama3" in
// config.json) not as its four parameters but as their result: the tensor
// rope_freqs.weight [HD/2] holds a divisor per rotary frequency, 1 for the
// high frequencies, factor for the low ones, and a smooth blend between
// (convert_hf_to_gguf.py, LlamaModel.generate_extra_tensors). transformers'
// GGUF loader ignores the tensor, which changes the model. kdnative instead
// recovers llama3 parameters that give the same divisors: factor is the
// largest divisor, and the two wavelengths where the blend starts and ends
// follow from the blended entries (the blend is linear in 1/wavelength).
// Only those wavelengths enter the frequencies, so original_max_position_
// embeddings is set to Llama 3's 8192 and the two factors follow. The
// recovered parameters are checked to reproduce every divisor; a tensor that
// no llama3 parameters explain is refused.

// llama3Orig is the original_max_position_embeddings written into the
// recovered rope_scaling (only ratios to it matter).
const llama3Orig = 8192

// ropeScalingFromFactors returns the rope_scaling config entry whose
// frequencies equal llama.cpp's θ^(−2i/hd) / rf[i], or nil when every rf[i]
// is 1 (no scaling).
func ropeScalingFromFactors(rf []float32, theta float64, hd int) (map[string]any, error) {
	if len(rf) != hd/2 {
		return nil, fmt.Errorf("it has %d entries for a head size of %d (want %d)", len(rf), hd, hd/2)
	}
	factor := 0.0
	for i, r := range rf {
		if !(r >= 1) || math.IsInf(float64(r), 0) {
			return nil, fmt.Errorf("entry %d is %g; llama3 scaling divides by factors of at least 1", i, r)
		}
		factor = math.Max(factor, float64(r))
	}
	const tol = 1e-6
	if factor <= 1+tol {
		return nil, nil
	}
	wl := make([]float64, len(rf)) // wavelengths, increasing with i
	for i := range wl {
		wl[i] = 2 * math.Pi / float64(float32(1/math.Pow(theta, float64(float32(2*i)/float32(hd)))))
	}
	// Entries run 1…1, blend…, factor…factor as the wavelength grows.
	const one, blend, full = 0, 1, 2
	class := func(r float32) int {
		switch {
		case math.Abs(float64(r)-1) <= tol:
			return one
		case math.Abs(float64(r)-factor) <= tol*factor:
			return full
		}
		return blend
	}
	lastOne, firstFull := -1, len(rf)
	var blends []int
	prev := one
	for i, r := range rf {
		c := class(r)
		if c < prev {
			return nil, fmt.Errorf("its entries do not grow with the wavelength (entry %d is %g)", i, r)
		}
		prev = c
		switch c {
		case one:
			lastOne = i
		case blend:
			blends = append(blends, i)
		case full:
			firstFull = min(firstFull, i)
		}
	}
	// s = (1/rf − 1/factor) / (1 − 1/factor) is the blend weight, and
	// s = (1/wl − 1/Lw) / (1/Hw − 1/Lw) between the wavelengths Hw < Lw.
	s := func(i int) float64 { return (1/float64(rf[i]) - 1/factor) / (1 - 1/factor) }
	lo := 0.0 // a wavelength below every blended or full entry's
	if lastOne >= 0 {
		lo = wl[lastOne]
	}
	hi := math.Inf(1)
	if firstFull < len(rf) {
		hi = wl[firstFull]
	}
	var invHw, invLw float64
	switch len(blends) {
	case 0:
		// Any bounds between the last 1 and the first factor give the same.
		if math.IsInf(hi, 1) {
			hi = 4 * lo
		}
		hw, lw := lo+(hi-lo)/3, lo+2*(hi-lo)/3
		if lo == 0 {
			hw, lw = hi/3, 2*hi/3
		}
		invHw, invLw = 1/hw, 1/lw
	case 1:
		i := blends[0]
		// Put Hw halfway to the blended entry, and solve for Lw.
		hw := (math.Max(lo, wl[i]/2) + wl[i]) / 2
		invHw = 1 / hw
		invLw = (1/wl[i] - s(i)*invHw) / (1 - s(i))
	default:
		a, b := blends[0], blends[len(blends)-1]
		slope := (s(b) - s(a)) / (1/wl[b] - 1/wl[a])
		invLw = 1/wl[a] - s(a)/slope
		invHw = invLw + 1/slope
	}
	if !(invHw > invLw && invLw > 0) {
		return nil, fmt.Errorf("no llama3 scaling gives its factors")
	}
	low, high := round6(llama3Orig*invLw), round6(llama3Orig*invHw)
	// Check every divisor as transformers' llama3 rule computes it.
	lw, hw := llama3Orig/low, llama3Orig/high
	for i, r := range rf {
		want := 1.0
		switch {
		case wl[i] > lw:
			want = factor
		case wl[i] >= hw:
			sm := (llama3Orig/wl[i] - low) / (high - low)
			want = 1 / ((1-sm)/factor + sm)
		}
		if math.Abs(want-float64(r)) > 1e-5*float64(r) {
			return nil, fmt.Errorf("llama3 scaling with factor %g, low_freq_factor %g, high_freq_factor %g gives %g for entry %d, not %g",
				factor, low, high, want, i, r)
		}
	}
	return map[string]any{
		"rope_type":                        "llama3",
		"factor":                           round6(factor),
		"low_freq_factor":                  low,
		"high_freq_factor":                 high,
		"original_max_position_embeddings": llama3Orig,
	}, nil
}

// round6 rounds to 6 significant digits, so that 0.99999994 reads as 1.
func round6(x float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'g', 6, 64), 64)
	return v
}
