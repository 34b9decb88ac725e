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

// WeightBytes is the memory of the model's parameters in float32 (tied
// weights once); gradients and each AdamW moment take as much again.
func (c *Config) WeightBytes() int64 { return c.weightBytes(kdrt.F32, false) }

// weightBytes is what New allocates for the parameters stored in dt, with
// F32 master copies when master is set (and dt is not F32).
func (c *Config) weightBytes(dt kdrt.DType, master bool) int64 {
	per := int64(dt.Size())
	if master && dt != kdrt.F32 {
		per += f32
	}
	var n int64
	for _, s := range c.paramSpecs() {
		n = kdrt.AddBytes(n, kdrt.MulBytes(per, int64(s.numel())))
	}
	return n
}

// ActivationBytes is the memory of the activation buffers of a forward and
// backward on B sequences of T tokens in float32 (what ForwardHidden
// allocates for that batch shape; it is kept until the shape changes).
func (c *Config) ActivationBytes(B, T int) int64 { return c.activationBytes(kdrt.F32, B, T) }

// ActivationBytesAs is ActivationBytes for activations stored in dt (the
// statistics and ids are 4 bytes whatever dt is).
func (c *Config) ActivationBytesAs(dt kdrt.DType, B, T int) int64 { return c.activationBytes(dt, B, T) }

// InferenceBytes is what the inference forward (InferHidden) allocates for B
// sequences of T tokens with storage dt: one layer's buffers, whatever the
// depth.
func (c *Config) InferenceBytes(dt kdrt.DType, B, T int) int64 { return c.inferBytes(dt, B, T) }

func (c *Config) activationBytes(dt kdrt.DType, B, T int) int64 {
	b, t := int64(B), int64(T)
	N := kdrt.MulBytes(b, t)
	C, F := int64(c.Hidden), int64(c.Intermediate)
	qw, kvw := int64(c.Heads*c.HeadDim), int64(c.KVHeads*c.HeadDim)
	mlp := int64(2) // up, act (and their gradients)
	if c.Arch == Llama {
		mlp = 3 // and gate
	}
	// In dt, per layer and row: 4 residual-width buffers (in, norm1, mid,
	// norm2), q, k, v, the attention output and the MLP's buffers; outside
	// the layers: the last hidden state, the final norm, the scratch, the
	// fused q/k/v projection and its gradient, 3 residual-width gradients,
	// the q/k/v/attention gradients and the MLP's.
	perLayerRow := 4*C + 2*qw + 2*kvw + mlp*F
	perRow := 3*C + 2*(qw+2*kvw) + 3*C + 2*qw + 2*kvw + mlp*F
	wide := kdrt.AddBytes(kdrt.MulBytes(int64(c.Layers), N, perLayerRow), kdrt.MulBytes(N, perRow))
	// In 4 bytes: per layer and row the norms' 4 statistics, and
	// attention's log-sum-exp per head; outside, ids, positions and the
	// final norm's 2 statistics.
	lse := kdrt.MulBytes(b, int64(c.Heads), t)
	narrow := kdrt.AddBytes(kdrt.MulBytes(int64(c.Layers), kdrt.AddBytes(kdrt.MulBytes(N, 4), lse)), kdrt.MulBytes(N, 4))
	return kdrt.AddBytes(kdrt.MulBytes(int64(dt.Size()), wide), kdrt.MulBytes(f32, narrow))
}

// KVCacheBytes is the memory of a key/value cache for B sequences of up to
// Tmax positions in float32: keys and values of every layer.
func (c *Config) KVCacheBytes(B, Tmax int) int64 { return c.kvCacheBytes(kdrt.F32, B, Tmax) }

func (c *Config) kvCacheBytes(dt kdrt.DType, B, Tmax int) int64 {
	return kdrt.MulBytes(int64(dt.Size()), 2, int64(c.Layers), int64(B), int64(Tmax), int64(c.KVHeads*c.HeadDim))
}

// decoderBytes is what newGenerator allocates for B rows of up to Tmax
// positions with the cache and buffers in dt: the key/value cache and one
// position's buffers, the logits (F32, on the device and on the host), and
// the decode attention's scores (F32, every head and cache position).
func (c *Config) decoderBytes(dt kdrt.DType, B, Tmax int) int64 {
	C, F, V := int64(c.Hidden), int64(c.Intermediate), int64(c.Vocab)
	qw, kvw := int64(c.Heads*c.HeadDim), int64(c.KVHeads*c.HeadDim)
	wide := 4*C + 2*qw + 2*kvw + 3*F
	narrow := 2 + 2*V + 3
	perRow := kdrt.AddBytes(kdrt.MulBytes(int64(dt.Size()), wide), kdrt.MulBytes(f32, narrow))
	return kdrt.AddBytes(kdrt.AddBytes(c.kvCacheBytes(dt, B, Tmax), kdrt.MulBytes(int64(B), perRow)), c.decodeScratchBytes(B, Tmax))
}

// decodeScratchBytes is what the backend takes during each decode attention
// call: a score for every head and cache position of each row.
func (c *Config) decodeScratchBytes(B, Tmax int) int64 {
	return kdrt.MulBytes(f32, int64(B), int64(c.Heads), int64(Tmax))
}

// inferBytes is what the inference forward allocates for B sequences of T
// tokens with storage dt (one layer's buffers, whatever the depth).
func (c *Config) inferBytes(dt kdrt.DType, B, T int) int64 {
	N := kdrt.MulBytes(int64(B), int64(T))
	C, F := int64(c.Hidden), int64(c.Intermediate)
	qw, kvw := int64(c.Heads*c.HeadDim), int64(c.KVHeads*c.HeadDim)
	mlp := int64(2)
	if c.Arch == Llama {
		mlp = 3
	}
	wide := kdrt.MulBytes(N, 4*C+2*qw+2*kvw+(qw+2*kvw)+mlp*F)
	narrow := kdrt.AddBytes(kdrt.MulBytes(N, 4), kdrt.MulBytes(int64(B), int64(c.Heads), int64(T)))
	return kdrt.AddBytes(kdrt.MulBytes(int64(dt.Size()), wide), kdrt.MulBytes(f32, narrow))
}

// generatorBytes is what GenerateBatch needs: the decoder's buffers and the
// prompts' inference forward (B × P).
func (c *Config) generatorBytes(dt kdrt.DType, B, P, Tmax int) int64 {
	return kdrt.AddBytes(c.decoderBytes(dt, B, Tmax), c.inferBytes(dt, B, P))
}

// checkWeightMemory refuses a model whose parameters (stored in dt, with
// master copies if master) do not fit in be's free memory.
func (c *Config) checkWeightMemory(be kdrt.Backend, dt kdrt.DType, master bool) error {
	return kdrt.CheckFree(be, fmt.Sprintf("the %s model's %d parameters", c.ModelType, c.NumParams()), c.weightBytes(dt, master),
		"its sizes come from config.json (vocab_size, hidden_size, intermediate_size, num_hidden_layers)")
}

// checkGenerateMemory refuses a generation whose key/value cache and buffers
// do not fit in the backend's free memory, saying how much each needs.
func (m *Model) checkGenerateMemory(B, P, Tmax int) error {
	c := m.Config
	need := c.generatorBytes(m.dt, B, P, Tmax)
	what := fmt.Sprintf("generating %d row(s) of up to %d positions (a key/value cache of %s)", B, Tmax, kdrt.FormatBytes(c.kvCacheBytes(m.dt, B, Tmax)))
	return kdrt.CheckFree(m.be, what, need, "ask for fewer new tokens (--max-tokens, or max_tokens in a request) or generate fewer prompts at once")
}
