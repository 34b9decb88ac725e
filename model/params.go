package model

import (
	"fmt"
	"math/rand/v2"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// Param is one trainable tensor: its value W and, once a backward has run, its
// gradient G (same shape, accumulated until ZeroGrad).
type Param struct {
	// Name is the parameter's internal name. For the Llama family it is the
	// checkpoint name; for GPT-2 the split q/k/v projections have names of
	// their own (see the package comment).
	Name  string
	Shape []int
	// W is the value (the model's storage dtype) and G the gradient (F32).
	W, G *kdrt.Tensor
	// Master is the F32 master copy of a BF16 W when the model was made with
	// MasterWeights (nil otherwise): the optimizer updates it and rounds it
	// into W, checkpoints save it.
	Master *kdrt.Tensor
	// NoDecay marks norms and biases, which trainers usually exclude from
	// weight decay.
	NoDecay bool
	kind    paramKind
}

type paramKind int

const (
	kindMatrix paramKind = iota // N(0, 0.02²) at random init
	kindNorm                    // ones
	kindBias                    // zeros
)

func (p *paramSpec) numel() int { return kdrt.Numel(p.shape) }

type paramSpec struct {
	name  string
	shape []int
	kind  paramKind
}

// linear is y = x·Wᵀ + b with W [out, in]; b may be nil.
type linear struct{ W, B *Param }

// layer holds one transformer block's parameters. For GPT-2, up is c_fc, down
// is the MLP's c_proj and gate is unused; norm biases exist only for GPT-2.
type layer struct {
	norm1W, norm1B, norm2W, norm2B *Param
	q, k, v, o                     linear
	gate, up, down                 linear
	window                         int
}

// structure builds the model's parameter list and wiring, calling mk for
// every parameter in a fixed order (the order optimizer state is saved in).
func (c *Config) structure(mk func(paramSpec) *Param) (params []*Param, embed, pos *Param, layers []layer, normFW, normFB, head *Param) {
	p := func(name string, kind paramKind, shape ...int) *Param {
		q := mk(paramSpec{name, shape, kind})
		params = append(params, q)
		return q
	}
	C, F, HD := c.Hidden, c.Intermediate, c.HeadDim
	qOut, kvOut := c.Heads*HD, c.KVHeads*HD
	lin := func(name string, out, in int, bias bool) linear {
		l := linear{W: p(name+".weight", kindMatrix, out, in)}
		if bias {
			l.B = p(name+".bias", kindBias, out)
		}
		return l
	}
	layers = make([]layer, c.Layers)
	switch c.Arch {
	case Llama:
		embed = p("model.embed_tokens.weight", kindMatrix, c.Vocab, C)
		for i := range layers {
			pre := fmt.Sprintf("model.layers.%d.", i)
			l := &layers[i]
			l.norm1W = p(pre+"input_layernorm.weight", kindNorm, C)
			l.q = lin(pre+"self_attn.q_proj", qOut, C, c.QKVBias)
			l.k = lin(pre+"self_attn.k_proj", kvOut, C, c.QKVBias)
			l.v = lin(pre+"self_attn.v_proj", kvOut, C, c.QKVBias)
			l.o = lin(pre+"self_attn.o_proj", C, qOut, c.OBias)
			l.norm2W = p(pre+"post_attention_layernorm.weight", kindNorm, C)
			l.gate = lin(pre+"mlp.gate_proj", F, C, c.MLPBias)
			l.up = lin(pre+"mlp.up_proj", F, C, c.MLPBias)
			l.down = lin(pre+"mlp.down_proj", C, F, c.MLPBias)
			l.window = c.LayerWindow[i]
		}
		normFW = p("model.norm.weight", kindNorm, C)
		head = embed
		if !c.Tied {
			head = p("lm_head.weight", kindMatrix, c.Vocab, C)
		}
	case GPT2:
		embed = p("wte.weight", kindMatrix, c.Vocab, C)
		pos = p("wpe.weight", kindMatrix, c.MaxPositions, C)
		for i := range layers {
			pre := fmt.Sprintf("h.%d.", i)
			l := &layers[i]
			l.norm1W = p(pre+"ln_1.weight", kindNorm, C)
			l.norm1B = p(pre+"ln_1.bias", kindBias, C)
			l.q = lin(pre+"attn.q", C, C, true)
			l.k = lin(pre+"attn.k", C, C, true)
			l.v = lin(pre+"attn.v", C, C, true)
			l.o = lin(pre+"attn.c_proj", C, C, true)
			l.norm2W = p(pre+"ln_2.weight", kindNorm, C)
			l.norm2B = p(pre+"ln_2.bias", kindBias, C)
			l.up = lin(pre+"mlp.c_fc", F, C, true)
			l.down = lin(pre+"mlp.c_proj", C, F, true)
		}
		normFW = p("ln_f.weight", kindNorm, C)
		normFB = p("ln_f.bias", kindBias, C)
		head = embed
		if !c.Tied {
			head = p("lm_head.weight", kindMatrix, c.Vocab, C)
		}
	}
	return
}

func (c *Config) paramSpecs() []paramSpec {
	var specs []paramSpec
	c.structure(func(s paramSpec) *Param { specs = append(specs, s); return &Param{} })
	return specs
}

// Params returns every trainable parameter once (a tied lm_head is the
// embedding), in a fixed order.
func (m *Model) Params() []*Param { return m.params }

// Param returns the parameter with the given internal name, or nil.
func (m *Model) Param(name string) *Param { return m.byName[name] }

// InitRandom fills the parameters as GPT-2 and Llama initialize them:
// matrices and embeddings N(0, 0.02²), norm weights 1, biases 0, from a
// seeded generator (the same seed gives the same model on every backend).
func (m *Model) InitRandom(seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 0x6b646e6174697665))
	for _, p := range m.params {
		vals := make([]float32, kdrt.Numel(p.Shape))
		switch p.kind {
		case kindMatrix:
			for i := range vals {
				vals[i] = float32(r.NormFloat64() * 0.02)
			}
		case kindNorm:
			for i := range vals {
				vals[i] = 1
			}
		}
		if err := m.setValue(p, vals); err != nil {
			return err
		}
	}
	return nil
}

// setValue uploads a parameter's values: into its master copy (exactly) and
// its W (rounded to the storage dtype).
func (m *Model) setValue(p *Param, vals []float32) error {
	if p.Master != nil {
		if err := m.be.Upload(p.Master, vals); err != nil {
			return err
		}
	}
	return m.be.Upload(p.W, vals)
}
