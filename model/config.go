package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
)

// Arch is the family of a model: the layer layout and the names of its weights.
type Arch int

const (
	// Llama is the pre-norm RMSNorm/RoPE/SwiGLU decoder of Llama, Qwen2 and Mistral.
	Llama Arch = iota
	// GPT2 is GPT-2: LayerNorm, learned positions, GELU MLP, Conv1D weights.
	GPT2
)

// Config is what kdnative needs from a Hugging Face config.json, validated.
type Config struct {
	ModelType    string // llama, qwen2, mistral, gpt2
	Arch         Arch
	Vocab        int // V
	Hidden       int // C
	Layers       int // L
	Heads        int // NH
	KVHeads      int // NKV
	HeadDim      int // HD
	Intermediate int // F, the MLP's hidden width
	MaxPositions int
	NormEps      float64
	Tied         bool // lm_head shares the token embedding
	// RoPE (Llama family).
	RopeTheta   float64
	RopeScaling *RopeScaling
	// Biases (Llama family): Qwen2 always has q/k/v biases; Llama may have
	// attention_bias (q, k, v and o) and mlp_bias.
	QKVBias, OBias, MLPBias bool
	// LayerWindow[i] > 0 is layer i's sliding attention window.
	LayerWindow []int

	// Raw is the config.json as read, kept so that a saved model carries every
	// field the source had.
	Raw map[string]any
}

// RopeScaling is the rope_scaling entry of Llama 3.1 and later ("llama3").
type RopeScaling struct {
	Type                          string
	Factor, LowFreqFactor         float64
	HighFreqFactor                float64
	OriginalMaxPositionEmbeddings int
}

// Limits on a config.json's sizes. Each is far above any released model of
// the supported families, and low enough that a typo or a corrupted file is
// refused with its key named before anything is allocated, and that every
// product of sizes the model computes (a weight's element count, the
// parameters in all) stays well inside int64.
const (
	// MaxVocab bounds vocab_size: 16,777,216 (the largest vocabularies in use
	// are about 262,000).
	MaxVocab = 1 << 24
	// MaxHidden bounds hidden_size / n_embd: 131,072 (the largest are 16,384–25,600).
	MaxHidden = 1 << 17
	// MaxIntermediate bounds intermediate_size / n_inner: 1,048,576.
	MaxIntermediate = 1 << 20
	// MaxLayers bounds num_hidden_layers / n_layer: 4,096 (the deepest have 126).
	MaxLayers = 1 << 12
	// MaxHeads bounds num_attention_heads and num_key_value_heads: 4,096.
	MaxHeads = 1 << 12
	// MaxHeadDim bounds head_dim (and hidden_size / heads): 4,096 (in use: 64–256).
	MaxHeadDim = 1 << 12
	// MaxPositionsLimit bounds max_position_embeddings / n_positions: positions
	// are int32 token indices, so 2,147,483,647.
	MaxPositionsLimit = 1<<31 - 1
)

// LoadConfig reads and validates a config.json.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model config: %w", err)
	}
	return ParseConfig(data, path)
}

// rawConfig holds every field kdnative reads from any supported model_type;
// pointers tell "absent" from zero.
type rawConfig struct {
	ModelType string `json:"model_type"`
	// Llama family.
	VocabSize         *int            `json:"vocab_size"`
	HiddenSize        *int            `json:"hidden_size"`
	IntermediateSize  *int            `json:"intermediate_size"`
	NumHiddenLayers   *int            `json:"num_hidden_layers"`
	NumAttentionHeads *int            `json:"num_attention_heads"`
	NumKeyValueHeads  *int            `json:"num_key_value_heads"`
	HeadDim           *int            `json:"head_dim"`
	MaxPositionEmbed  *int            `json:"max_position_embeddings"`
	RMSNormEps        *float64        `json:"rms_norm_eps"`
	RopeTheta         *float64        `json:"rope_theta"`
	RopeScaling       json.RawMessage `json:"rope_scaling"`
	RopeParameters    json.RawMessage `json:"rope_parameters"`
	TieWordEmbeddings *bool           `json:"tie_word_embeddings"`
	AttentionBias     *bool           `json:"attention_bias"`
	MLPBias           *bool           `json:"mlp_bias"`
	HiddenAct         *string         `json:"hidden_act"`
	SlidingWindow     *int            `json:"sliding_window"`
	UseSlidingWindow  *bool           `json:"use_sliding_window"`
	MaxWindowLayers   *int            `json:"max_window_layers"`
	LayerTypes        []string        `json:"layer_types"`
	// GPT-2.
	NEmbd               *int     `json:"n_embd"`
	NLayer              *int     `json:"n_layer"`
	NHead               *int     `json:"n_head"`
	NInner              *int     `json:"n_inner"`
	NPositions          *int     `json:"n_positions"`
	ActivationFunction  *string  `json:"activation_function"`
	LayerNormEpsilon    *float64 `json:"layer_norm_epsilon"`
	ScaleAttnByLayerIdx *bool    `json:"scale_attn_by_inverse_layer_idx"`
	ScaleAttnWeights    *bool    `json:"scale_attn_weights"`
}

// sizeLimits is each size key's bound.
var sizeLimits = map[string]int{
	"vocab_size":              MaxVocab,
	"hidden_size":             MaxHidden,
	"n_embd":                  MaxHidden,
	"intermediate_size":       MaxIntermediate,
	"n_inner":                 MaxIntermediate,
	"num_hidden_layers":       MaxLayers,
	"n_layer":                 MaxLayers,
	"num_attention_heads":     MaxHeads,
	"n_head":                  MaxHeads,
	"num_key_value_heads":     MaxHeads,
	"head_dim":                MaxHeadDim,
	"max_position_embeddings": MaxPositionsLimit,
	"n_positions":             MaxPositionsLimit,
}

// ParseConfig validates a config.json's contents; path names the file in errors.
func ParseConfig(data []byte, path string) (*Config, error) {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("model config %s: %s", path, fmt.Sprintf(format, a...))
	}
	var raw rawConfig
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fail("not valid JSON: %v", err)
	}
	var all map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&all); err != nil {
		return nil, fail("not a JSON object: %v", err)
	}
	c := &Config{ModelType: raw.ModelType, Raw: all}
	req := func(name string, p *int) (int, error) {
		if p == nil {
			return 0, fail("missing %s", name)
		}
		if *p <= 0 {
			return 0, fail("%s = %d, must be positive", name, *p)
		}
		if limit := sizeLimits[name]; *p > limit {
			return 0, fail("%s = %d is larger than kdnative supports (at most %d); is the file damaged?", name, *p, limit)
		}
		return *p, nil
	}
	var err error
	switch raw.ModelType {
	case "llama", "qwen2", "mistral":
		c.Arch = Llama
		if c.Vocab, err = req("vocab_size", raw.VocabSize); err != nil {
			return nil, err
		}
		if c.Hidden, err = req("hidden_size", raw.HiddenSize); err != nil {
			return nil, err
		}
		if c.Intermediate, err = req("intermediate_size", raw.IntermediateSize); err != nil {
			return nil, err
		}
		if c.Layers, err = req("num_hidden_layers", raw.NumHiddenLayers); err != nil {
			return nil, err
		}
		if c.Heads, err = req("num_attention_heads", raw.NumAttentionHeads); err != nil {
			return nil, err
		}
		c.KVHeads = c.Heads
		if raw.NumKeyValueHeads != nil {
			if c.KVHeads, err = req("num_key_value_heads", raw.NumKeyValueHeads); err != nil {
				return nil, err
			}
		}
		if raw.HeadDim != nil {
			if c.HeadDim, err = req("head_dim", raw.HeadDim); err != nil {
				return nil, err
			}
		} else {
			if c.Hidden%c.Heads != 0 {
				return nil, fail("hidden_size %d is not a multiple of num_attention_heads %d (and no head_dim is given)", c.Hidden, c.Heads)
			}
			c.HeadDim = c.Hidden / c.Heads
			if c.HeadDim > MaxHeadDim {
				return nil, fail("hidden_size %d / num_attention_heads %d gives a head size of %d, larger than kdnative supports (at most %d)", c.Hidden, c.Heads, c.HeadDim, MaxHeadDim)
			}
		}
		if c.HeadDim%2 != 0 {
			return nil, fail("head size %d is odd; rotary embeddings need an even head size", c.HeadDim)
		}
		c.MaxPositions = 2048
		if raw.MaxPositionEmbed != nil {
			if c.MaxPositions, err = req("max_position_embeddings", raw.MaxPositionEmbed); err != nil {
				return nil, err
			}
		}
		c.NormEps = 1e-6
		if raw.RMSNormEps != nil {
			c.NormEps = *raw.RMSNormEps
		}
		if raw.HiddenAct != nil && *raw.HiddenAct != "silu" {
			return nil, fail("hidden_act %q is not supported (the Llama family uses silu)", *raw.HiddenAct)
		}
		if err := c.parseRope(raw, fail); err != nil {
			return nil, err
		}
		c.QKVBias = raw.ModelType == "qwen2" || (raw.AttentionBias != nil && *raw.AttentionBias)
		c.OBias = raw.ModelType != "qwen2" && raw.AttentionBias != nil && *raw.AttentionBias
		c.MLPBias = raw.MLPBias != nil && *raw.MLPBias
		c.Tied = raw.TieWordEmbeddings != nil && *raw.TieWordEmbeddings
		if err := c.parseWindows(raw, fail); err != nil {
			return nil, err
		}
	case "gpt2":
		c.Arch = GPT2
		if c.Vocab, err = req("vocab_size", raw.VocabSize); err != nil {
			return nil, err
		}
		if c.Hidden, err = req("n_embd", raw.NEmbd); err != nil {
			return nil, err
		}
		if c.Layers, err = req("n_layer", raw.NLayer); err != nil {
			return nil, err
		}
		if c.Heads, err = req("n_head", raw.NHead); err != nil {
			return nil, err
		}
		if c.MaxPositions, err = req("n_positions", raw.NPositions); err != nil {
			return nil, err
		}
		if c.Hidden%c.Heads != 0 {
			return nil, fail("n_embd %d is not a multiple of n_head %d", c.Hidden, c.Heads)
		}
		c.KVHeads, c.HeadDim = c.Heads, c.Hidden/c.Heads
		if c.HeadDim > MaxHeadDim {
			return nil, fail("n_embd %d / n_head %d gives a head size of %d, larger than kdnative supports (at most %d)", c.Hidden, c.Heads, c.HeadDim, MaxHeadDim)
		}
		c.Intermediate = 4 * c.Hidden // at most 4·MaxHidden < MaxIntermediate
		if raw.NInner != nil {
			if c.Intermediate, err = req("n_inner", raw.NInner); err != nil {
				return nil, err
			}
		}
		c.NormEps = 1e-5
		if raw.LayerNormEpsilon != nil {
			c.NormEps = *raw.LayerNormEpsilon
		}
		if a := raw.ActivationFunction; a != nil && *a != "gelu_new" && *a != "gelu_pytorch_tanh" {
			return nil, fail("activation_function %q is not supported (GPT-2 uses gelu_new)", *a)
		}
		if raw.ScaleAttnByLayerIdx != nil && *raw.ScaleAttnByLayerIdx {
			return nil, fail("scale_attn_by_inverse_layer_idx is not supported")
		}
		if raw.ScaleAttnWeights != nil && !*raw.ScaleAttnWeights {
			return nil, fail("scale_attn_weights = false is not supported")
		}
		c.Tied = raw.TieWordEmbeddings == nil || *raw.TieWordEmbeddings
		c.QKVBias, c.OBias, c.MLPBias = true, true, true
		c.LayerWindow = make([]int, c.Layers)
	case "":
		return nil, fail("no model_type (want one of llama, qwen2, mistral, gpt2)")
	default:
		return nil, fail("model_type %q is not supported (want one of llama, qwen2, mistral, gpt2)", raw.ModelType)
	}
	if c.Heads%c.KVHeads != 0 {
		return nil, fail("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.Heads, c.KVHeads)
	}
	if !(c.NormEps > 0) {
		return nil, fail("norm epsilon %g must be positive", c.NormEps)
	}
	return c, nil
}

func (c *Config) parseRope(raw rawConfig, fail func(string, ...any) error) error {
	c.RopeTheta = 10000
	if raw.RopeTheta != nil {
		c.RopeTheta = *raw.RopeTheta
	}
	scaling := raw.RopeScaling
	// Newer transformers write rope_parameters: {"rope_theta", "rope_type", …}.
	if len(raw.RopeParameters) > 0 && string(raw.RopeParameters) != "null" {
		var rp struct {
			RopeTheta *float64 `json:"rope_theta"`
		}
		if err := json.Unmarshal(raw.RopeParameters, &rp); err != nil {
			return fail("rope_parameters: %v", err)
		}
		if rp.RopeTheta != nil {
			c.RopeTheta = *rp.RopeTheta
		}
		scaling = raw.RopeParameters
	}
	if !(c.RopeTheta > 0) {
		return fail("rope_theta %g must be positive", c.RopeTheta)
	}
	if len(scaling) == 0 || string(scaling) == "null" {
		return nil
	}
	var rs struct {
		Type     string   `json:"type"`
		RopeType string   `json:"rope_type"`
		Factor   *float64 `json:"factor"`
		Low      *float64 `json:"low_freq_factor"`
		High     *float64 `json:"high_freq_factor"`
		Orig     *int     `json:"original_max_position_embeddings"`
	}
	if err := json.Unmarshal(scaling, &rs); err != nil {
		return fail("rope_scaling: %v", err)
	}
	typ := rs.RopeType
	if typ == "" {
		typ = rs.Type
	}
	switch typ {
	case "", "default":
		return nil
	case "llama3":
		if rs.Factor == nil || rs.Low == nil || rs.High == nil || rs.Orig == nil {
			return fail("rope_scaling llama3 needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings")
		}
		if *rs.Factor <= 0 || *rs.Low <= 0 || *rs.High <= *rs.Low || *rs.Orig <= 0 {
			return fail("rope_scaling llama3 has inconsistent values")
		}
		c.RopeScaling = &RopeScaling{Type: typ, Factor: *rs.Factor, LowFreqFactor: *rs.Low, HighFreqFactor: *rs.High, OriginalMaxPositionEmbeddings: *rs.Orig}
		return nil
	}
	return fail("rope scaling type %q is not supported (want default or llama3)", typ)
}

// parseWindows sets each layer's sliding window from layer_types when present,
// else from the model_type's rules (Mistral: every layer; Qwen2: the layers
// from max_window_layers on, only with use_sliding_window).
func (c *Config) parseWindows(raw rawConfig, fail func(string, ...any) error) error {
	c.LayerWindow = make([]int, c.Layers)
	w := 0
	if raw.SlidingWindow != nil {
		w = *raw.SlidingWindow
		if w < 0 {
			return fail("sliding_window %d is negative", w)
		}
	}
	if raw.LayerTypes != nil {
		if len(raw.LayerTypes) != c.Layers {
			return fail("layer_types has %d entries for %d layers", len(raw.LayerTypes), c.Layers)
		}
		for i, lt := range raw.LayerTypes {
			switch lt {
			case "full_attention":
			case "sliding_attention":
				if w == 0 {
					return fail("layer %d uses sliding_attention but sliding_window is not set", i)
				}
				c.LayerWindow[i] = w
			default:
				return fail("layer_types[%d] = %q is not supported", i, lt)
			}
		}
		return nil
	}
	switch c.ModelType {
	case "mistral":
		for i := range c.LayerWindow {
			c.LayerWindow[i] = w
		}
	case "qwen2":
		if raw.UseSlidingWindow != nil && *raw.UseSlidingWindow && w > 0 {
			from := c.Layers
			if raw.MaxWindowLayers != nil {
				from = *raw.MaxWindowLayers
				if from < 0 {
					return fail("max_window_layers %d is negative", from)
				}
			}
			for i := from; i < c.Layers; i++ {
				c.LayerWindow[i] = w
			}
		}
	}
	return nil
}

// InvFreq returns RoPE's inverse frequencies [HD/2], computed as transformers
// computes them (in float32 from θ^(−2i/HD)), with llama3 scaling applied.
func (c *Config) InvFreq() []float32 {
	half := c.HeadDim / 2
	inv := make([]float32, half)
	for i := range inv {
		inv[i] = float32(1 / math.Pow(c.RopeTheta, float64(float32(2*i)/float32(c.HeadDim))))
	}
	if s := c.RopeScaling; s != nil && s.Type == "llama3" {
		lowWavelen := float64(s.OriginalMaxPositionEmbeddings) / s.LowFreqFactor
		highWavelen := float64(s.OriginalMaxPositionEmbeddings) / s.HighFreqFactor
		for i, f := range inv {
			wavelen := 2 * math.Pi / float64(f)
			switch {
			case wavelen > lowWavelen:
				inv[i] = float32(float64(f) / s.Factor)
			case wavelen >= highWavelen:
				smooth := (float64(s.OriginalMaxPositionEmbeddings)/wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
				inv[i] = float32((1-smooth)*float64(f)/s.Factor + smooth*float64(f))
			}
		}
	}
	return inv
}

// NumParams counts the model's parameters (tied weights once).
func (c *Config) NumParams() int {
	n := 0
	for _, s := range c.paramSpecs() {
		n += s.numel()
	}
	return n
}

// TrainingFLOPs is the arithmetic of one training step (forward and
// backward) on B sequences of T tokens, counted the usual way: 6 FLOPs per
// matrix parameter per token (forward 2, backward 4), the lm_head included,
// plus attention's QKᵀ and PV products (forward 4·T²·NH·HD per sequence and
// layer, backward twice that). Embedding lookups, norms and elementwise ops
// are left out, as in llm.c's and PaLM's MFU accounting.
func (c *Config) TrainingFLOPs(B, T int) float64 {
	C, F, V := float64(c.Hidden), float64(c.Intermediate), float64(c.Vocab)
	q, kv := float64(c.Heads*c.HeadDim), float64(c.KVHeads*c.HeadDim)
	perLayer := C*q + 2*C*kv + q*C + C*F + F*C // q, k, v, o, up, down
	if c.Arch == Llama {
		perLayer += C * F // gate
	}
	matrix := float64(c.Layers)*perLayer + V*C
	tokens := float64(B * T)
	attn := 12 * float64(c.Layers) * float64(B) * float64(T) * float64(T) * q
	return 6*matrix*tokens + attn
}
