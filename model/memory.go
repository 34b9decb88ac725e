package model

import (
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// The sizes below are what the model allocates, computed before allocating
// so that a plan that cannot fit (a damaged config.json, batch_size 10¹²,
// a key/value cache for 10⁹ tokens) is refused with the numbers instead of
// panicking in make or being killed by the kernel. They saturate at
// math.MaxInt64 rather than overflow (runtime.MulBytes). Tests compare each
// with what the model really allocates.

// f32 is the bytes of one float32 or int32 element.
const f32 = 4

// WeightBytes is the memory of the model's parameters (float32, tied weights
// once); gradients and each AdamW moment take as much again.
func (c *Config) WeightBytes() int64 {
	var n int64
	for _, s := range c.paramSpecs() {
		n = kdrt.AddBytes(n, kdrt.MulBytes(f32, int64(s.numel())))
	}
	return n
}

// ActivationBytes is the memory of the activation buffers of a forward and
// backward on B sequences of T tokens (what ForwardHidden allocates for that
// batch shape; it is kept until the shape changes).
func (c *Config) ActivationBytes(B, T int) int64 {
	b, t := int64(B), int64(T)
	N := kdrt.MulBytes(b, t)
	C, F, V := int64(c.Hidden), int64(c.Intermediate), int64(c.Vocab)
	qw, kvw := int64(c.Heads*c.HeadDim), int64(c.KVHeads*c.HeadDim)
	mlp := int64(2) // up, act (and their gradients)
	if c.Arch == Llama {
		mlp = 3 // and gate
	}
	// Per row: 4 residual-width buffers (in, norm1, mid, norm2), 4 norm
	// statistics, q, k, v, the attention output, one log-sum-exp per head
	// and the MLP's buffers.
	perLayerRow := 4*C + 4 + 2*qw + 2*kvw + int64(c.Heads) + mlp*F
	// Outside the layers, per row: ids, positions, targets; the last hidden
	// state, the final norm and its 2 statistics, scratch (a residual
	// width); logits and loss; the fused q/k/v output and its gradient; the
	// backward's scratch: 3 residual-width gradients, q/k/v/attention
	// gradients, the MLP's, and the logits'.
	perRow := 3 + 2*C + 2 + V + 1 + C + 2*(qw+2*kvw) + 3*C + 2*qw + 2*kvw + mlp*F + V
	elems := kdrt.AddBytes(kdrt.MulBytes(int64(c.Layers), N, perLayerRow), kdrt.MulBytes(N, perRow))
	return kdrt.MulBytes(f32, elems)
}

// KVCacheBytes is the memory of a key/value cache for B sequences of up to
// Tmax positions: keys and values of every layer.
func (c *Config) KVCacheBytes(B, Tmax int) int64 {
	return kdrt.MulBytes(f32, 2, int64(c.Layers), int64(B), int64(Tmax), int64(c.KVHeads*c.HeadDim))
}

// decoderBytes is what newGenerator allocates for B rows of up to Tmax
// positions: the key/value cache and one position's buffers and logits (on
// the device and on the host).
func (c *Config) decoderBytes(B, Tmax int) int64 {
	C, F, V := int64(c.Hidden), int64(c.Intermediate), int64(c.Vocab)
	qw, kvw := int64(c.Heads*c.HeadDim), int64(c.KVHeads*c.HeadDim)
	perRow := 4*C + 2 + 2*qw + 2*kvw + 3*F + 2*V + 2
	return kdrt.AddBytes(c.KVCacheBytes(B, Tmax), kdrt.MulBytes(f32, int64(B), perRow))
}

// generatorBytes is what GenerateBatch needs: the decoder's buffers and the
// activations of the prompts' forward pass (B × P).
func (c *Config) generatorBytes(B, P, Tmax int) int64 {
	return kdrt.AddBytes(c.decoderBytes(B, Tmax), c.ActivationBytes(B, P))
}

// checkWeightMemory refuses a model whose parameters do not fit in be's free
// memory.
func (c *Config) checkWeightMemory(be kdrt.Backend) error {
	return kdrt.CheckFree(be, fmt.Sprintf("the %s model's %d parameters", c.ModelType, c.NumParams()), c.WeightBytes(),
		"its sizes come from config.json (vocab_size, hidden_size, intermediate_size, num_hidden_layers)")
}

// checkGenerateMemory refuses a generation whose key/value cache and buffers
// do not fit in the backend's free memory, saying how much each needs.
func (m *Model) checkGenerateMemory(B, P, Tmax int) error {
	c := m.Config
	need := c.generatorBytes(B, P, Tmax)
	what := fmt.Sprintf("generating %d row(s) of up to %d positions (a key/value cache of %s)", B, Tmax, kdrt.FormatBytes(c.KVCacheBytes(B, Tmax)))
	return kdrt.CheckFree(m.be, what, need, "ask for fewer new tokens (--max-tokens, or max_tokens in a request) or generate fewer prompts at once")
}
