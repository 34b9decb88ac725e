package model

import (
	"fmt"
	"math"
	"math/rand/v2"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// Sample continues prompt by n tokens, drawing each from softmax(logits/T)
// (temperature 0: the most likely token) with a seeded generator, and
// returns the new tokens. It recomputes the whole forward pass for every
// token — no KV cache — which makes it the simple reference that a cached
// generator is checked against, and fast enough for short samples of small
// models. When the sequence outgrows the model's positions, the oldest
// tokens fall out of the window.
func (m *Model) Sample(prompt []int32, n int, temperature float64, seed uint64) ([]int32, error) {
	if len(prompt) == 0 {
		return nil, fmt.Errorf("model: Sample needs a prompt of at least one token")
	}
	if temperature < 0 || math.IsNaN(temperature) {
		return nil, fmt.Errorf("model: temperature %g must be ≥ 0", temperature)
	}
	V := m.Config.Vocab
	row, err := m.be.Alloc("sample.logits", kdrt.F32, 1, V)
	if err != nil {
		return nil, err
	}
	defer m.be.Free(row)
	host := make([]float32, V)
	r := rand.New(rand.NewPCG(seed, 0x73616d706c65))
	seq := append([]int32(nil), prompt...)
	var out []int32
	for range n {
		ctx := seq
		if len(ctx) > m.Config.MaxPositions {
			ctx = ctx[len(ctx)-m.Config.MaxPositions:]
		}
		h, err := m.InferHidden(Batch{B: 1, T: len(ctx), IDs: ctx})
		if err != nil {
			return nil, err
		}
		m.be.MatMul(row, m.be.Slice(h, len(ctx)-1, len(ctx)), m.head.W, false, true, 1, 0)
		if err := m.be.Download(row, host); err != nil {
			return nil, err
		}
		next := pick(host, temperature, r)
		seq = append(seq, next)
		out = append(out, next)
	}
	return out, nil
}

// pick draws a token from logits at temperature T (0: argmax).
func pick(logits []float32, T float64, r *rand.Rand) int32 {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	if T == 0 {
		return int32(best)
	}
	mx := float64(logits[best])
	var sum float64
	p := make([]float64, len(logits))
	for i, v := range logits {
		p[i] = math.Exp((float64(v) - mx) / T)
		sum += p[i]
	}
	u := r.Float64() * sum
	for i, v := range p {
		u -= v
		if u <= 0 {
			return int32(i)
		}
	}
	return int32(best)
}
