package gguf

import (
	"fmt"
	"regexp"
	"strconv"
)

// HFModel is the Hugging Face model a GGUF file holds: the config.json
// transformers would build for it and the file's tensors under transformers'
// names.
type HFModel struct {
	// Arch is the file's general.architecture (llama, qwen2, mistral).
	Arch string
	// Config is the config.json (model_type llama, qwen2 or mistral).
	Config map[string]any
	// Tensors are the weights in file order.
	Tensors []HFTensor
}

// HFTensor is one weight of an HFModel.
type HFTensor struct {
	// Name is transformers' name ("model.layers.0.self_attn.q_proj.weight").
	Name string
	// Shape is the PyTorch shape ([out, in] for a linear weight).
	Shape []int
	// Source is the GGUF tensor it comes from ("blk.0.attn_q.weight").
	Source string
	// unpermute > 0 undoes llama.cpp's interleaving of the rotary halves in
	// the rows of a Q or K projection of that many heads.
	unpermute int
}

// SupportedArchitectures names the general.architecture values HF reads.
const SupportedArchitectures = "llama, qwen2, mistral"

// archInfo says what a GGUF architecture becomes.
type archInfo struct {
	modelType, class string
	// permuted: llama.cpp's converter interleaves the two rotary halves of
	// each head in attn_q and attn_k (LlamaModel.permute), which transformers'
	// loader undoes for this architecture.
	permuted bool
}

var archs = map[string]archInfo{
	"llama": {"llama", "LlamaForCausalLM", true},
	// llama.cpp writes Qwen2 (and Qwen2.5) unpermuted.
	"qwen2": {"qwen2", "Qwen2ForCausalLM", false},
	// llama.cpp itself writes Mistral models as "llama"; a file that says
	// "mistral" is read as transformers reads it: the Llama layout, not
	// permuted.
	"mistral": {"mistral", "MistralForCausalLM", false},
}

// layerTensor maps the per-layer GGUF names to transformers' names.
var layerTensor = map[string]string{
	"attn_norm":   "input_layernorm",
	"attn_q":      "self_attn.q_proj",
	"attn_k":      "self_attn.k_proj",
	"attn_v":      "self_attn.v_proj",
	"attn_output": "self_attn.o_proj",
	"ffn_norm":    "post_attention_layernorm",
	"ffn_gate":    "mlp.gate_proj",
	"ffn_up":      "mlp.up_proj",
	"ffn_down":    "mlp.down_proj",
}

var globalTensor = map[string]string{
	"token_embd.weight":  "model.embed_tokens.weight",
	"output_norm.weight": "model.norm.weight",
	"output.weight":      "lm_head.weight",
}

var blkName = regexp.MustCompile(`^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$`)

// HF describes the file as a Hugging Face model. An architecture other than
// llama, qwen2 or mistral, a tensor with no transformers counterpart, RoPE
// scaling kdnative does not implement, or a needed metadata key that is
// missing is an error naming it.
func (f *File) HF() (*HFModel, error) {
	md := f.Metadata
	arch, err := md.String("general.architecture")
	if err != nil {
		return nil, err
	}
	ai, ok := archs[arch]
	if !ok {
		return nil, fmt.Errorf("%w: %s: architecture %q is not supported (kdnative reads %s)",
			ErrUnsupported, f.path, arch, SupportedArchitectures)
	}
	if md.Has("split.count") {
		if n, err := md.Int("split.count"); err != nil || n > 1 {
			return nil, fmt.Errorf("%w: %s: one part of a split GGUF (split.count %d): merge the parts first (llama-gguf-split --merge)",
				ErrUnsupported, f.path, n)
		}
	}
	cfg, heads, kvHeads, err := f.hfConfig(arch, ai)
	if err != nil {
		return nil, err
	}
	m := &HFModel{Arch: arch, Config: cfg}
	for _, t := range f.Tensors {
		ht := HFTensor{Source: t.Name, Shape: t.Shape()}
		if name, ok := globalTensor[t.Name]; ok {
			ht.Name = name
		} else if sm := blkName.FindStringSubmatch(t.Name); sm != nil && layerTensor[sm[2]] != "" {
			ht.Name = "model.layers." + sm[1] + "." + layerTensor[sm[2]] + "." + sm[3]
			if ai.permuted && sm[2] == "attn_q" {
				ht.unpermute = heads
			} else if ai.permuted && sm[2] == "attn_k" {
				ht.unpermute = kvHeads
			}
		} else if t.Name == "rope_freqs.weight" && arch == "llama" {
			rf, err := f.Float32(t.Name)
			if err != nil {
				return nil, err
			}
			rs, err := ropeScalingFromFactors(rf, cfg["rope_theta"].(float64), cfg["head_dim"].(int))
			if err != nil {
				return nil, fmt.Errorf("%w: %s: rope_freqs.weight (per-frequency RoPE divisors): %v", ErrUnsupported, f.path, err)
			}
			if rs != nil {
				cfg["rope_scaling"] = rs
			}
			continue // not a weight: it became config.json's rope_scaling
		} else {
			return nil, fmt.Errorf("%w: %s: tensor %s has no counterpart in a %s model", ErrUnsupported, f.path, printable(t.Name), arch)
		}
		if ht.unpermute > 0 {
			rows := ht.Shape[0]
			if rows%(2*ht.unpermute) != 0 {
				return nil, fmt.Errorf("%w: %s: tensor %s has %d rows, not a whole number of %d heads of even size",
					ErrInvalid, f.path, t.Name, rows, ht.unpermute)
			}
		}
		m.Tensors = append(m.Tensors, ht)
	}
	return m, nil
}

// ReadHF returns the values of t as transformers holds them: dequantized to
// float32, row-major in t.Shape, with llama.cpp's Q/K permutation undone.
func (f *File) ReadHF(t HFTensor) ([]float32, error) {
	v, err := f.Float32(t.Source)
	if err != nil {
		return nil, err
	}
	if t.unpermute > 0 {
		v = unpermuteRows(v, t.Shape[0], t.unpermute)
	}
	return v, nil
}

// unpermuteRows undoes llama.cpp's LlamaModel.permute on a [rows, cols]
// matrix (or a [rows] bias): within each of nHead heads of hd rows, GGUF row
// 2i+p holds row p·hd/2 + i of the original (p = 0, 1; i < hd/2). This is
// transformers' _reverse_permute_weights: reshape (nHead, hd/2, 2, cols),
// swap axes 1 and 2.
func unpermuteRows(w []float32, rows, nHead int) []float32 {
	cols := len(w) / rows
	hd := rows / nHead
	out := make([]float32, len(w))
	for h := range nHead {
		for i := range hd / 2 {
			for p := range 2 {
				src := h*hd + 2*i + p
				dst := h*hd + p*hd/2 + i
				copy(out[dst*cols:(dst+1)*cols], w[src*cols:(src+1)*cols])
			}
		}
	}
	return out
}

// hfConfig builds config.json from the metadata, as transformers'
// GGUF_CONFIG_MAPPING reads it for these architectures.
func (f *File) hfConfig(arch string, ai archInfo) (map[string]any, int, int, error) {
	md := f.Metadata
	key := func(k string) string { return arch + "." + k }
	const maxDim = 1 << 24
	positive := func(k string) (int, error) { return md.IntIn(key(k), 1, maxDim) }
	optPositive := func(k string, def int) (int, error) {
		if !md.Has(key(k)) {
			return def, nil
		}
		return positive(k)
	}
	layers, err := positive("block_count")
	if err != nil {
		return nil, 0, 0, err
	}
	hidden, err := positive("embedding_length")
	if err != nil {
		return nil, 0, 0, err
	}
	ffn, err := positive("feed_forward_length")
	if err != nil {
		return nil, 0, 0, err
	}
	heads, err := positive("attention.head_count")
	if err != nil {
		return nil, 0, 0, err
	}
	kvHeads, err := optPositive("attention.head_count_kv", heads)
	if err != nil {
		return nil, 0, 0, err
	}
	ctx, err := positive("context_length")
	if err != nil {
		return nil, 0, 0, err
	}
	eps, err := md.Float(key("attention.layer_norm_rms_epsilon"))
	if err != nil {
		return nil, 0, 0, err
	}
	theta := 10000.0
	if md.Has(key("rope.freq_base")) {
		if theta, err = md.Float(key("rope.freq_base")); err != nil {
			return nil, 0, 0, err
		}
	}
	headDim := 0
	if hidden%heads == 0 {
		headDim = hidden / heads
	}
	if md.Has(key("attention.key_length")) {
		if headDim, err = positive("attention.key_length"); err != nil {
			return nil, 0, 0, err
		}
	}
	if headDim == 0 {
		return nil, 0, 0, fmt.Errorf("%w: %s: embedding_length %d is not a multiple of head_count %d and no attention.key_length is given",
			ErrMetadata, f.path, hidden, heads)
	}
	for _, k := range []string{"attention.key_length", "attention.value_length", "rope.dimension_count"} {
		if md.Has(key(k)) {
			if v, err := positive(k); err != nil {
				return nil, 0, 0, err
			} else if v != headDim {
				return nil, 0, 0, fmt.Errorf("%w: %s: %s = %d differs from the head size %d (partial rotary or unequal key and value sizes are not supported)",
					ErrUnsupported, f.path, key(k), v, headDim)
			}
		}
	}
	if md.Has(key("rope.scaling.type")) {
		typ, err := md.String(key("rope.scaling.type"))
		if err != nil {
			return nil, 0, 0, err
		}
		if typ != "none" && typ != "" {
			return nil, 0, 0, fmt.Errorf("%w: %s: %s = %q is not supported (kdnative applies no RoPE scaling to GGUF models)",
				ErrUnsupported, f.path, key("rope.scaling.type"), typ)
		}
	}
	vocab := 0
	if md.Has(key("vocab_size")) {
		if vocab, err = positive("vocab_size"); err != nil {
			return nil, 0, 0, err
		}
	} else if toks, err := md.Strings("tokenizer.ggml.tokens"); err == nil {
		vocab = len(toks)
	} else if t, ok := f.Tensor("token_embd.weight"); ok && len(t.Dims) == 2 {
		vocab = int(t.Dims[1])
	} else {
		return nil, 0, 0, fmt.Errorf("%w: %s: no %s, tokenizer.ggml.tokens or token_embd.weight to give the vocabulary size",
			ErrMetadata, f.path, key("vocab_size"))
	}
	_, hasOutput := f.Tensor("output.weight")
	_, qBias := f.Tensor("blk.0.attn_q.bias")
	_, oBias := f.Tensor("blk.0.attn_output.bias")
	_, mlpBias := f.Tensor("blk.0.ffn_up.bias")
	cfg := map[string]any{
		"architectures":           []any{ai.class},
		"model_type":              ai.modelType,
		"vocab_size":              vocab,
		"hidden_size":             hidden,
		"intermediate_size":       ffn,
		"num_hidden_layers":       layers,
		"num_attention_heads":     heads,
		"num_key_value_heads":     kvHeads,
		"head_dim":                headDim,
		"max_position_embeddings": ctx,
		"rms_norm_eps":            shortest32(eps),
		"rope_theta":              shortest32(theta),
		"hidden_act":              "silu",
		"tie_word_embeddings":     !hasOutput,
		"torch_dtype":             "float32",
	}
	if arch == "llama" || arch == "mistral" {
		cfg["attention_bias"] = qBias || oBias
		cfg["mlp_bias"] = mlpBias
	}
	if arch == "mistral" {
		cfg["sliding_window"] = nil
		if md.Has(key("attention.sliding_window")) {
			w, err := positive("attention.sliding_window")
			if err != nil {
				return nil, 0, 0, err
			}
			cfg["sliding_window"] = w
		}
	}
	for gk, ck := range map[string]string{
		"tokenizer.ggml.bos_token_id":     "bos_token_id",
		"tokenizer.ggml.eos_token_id":     "eos_token_id",
		"tokenizer.ggml.padding_token_id": "pad_token_id",
	} {
		if md.Has(gk) {
			id, err := md.IntIn(gk, 0, int64(vocab)-1)
			if err != nil {
				return nil, 0, 0, err
			}
			cfg[ck] = id
		}
	}
	return cfg, heads, kvHeads, nil
}

// shortest32 returns the float64 nearest to the shortest decimal that reads
// back as the float32 of x: GGUF stores rms_norm_eps = 1e-5 as the float32
// 9.99999974738e-06, and config.json should say 1e-05 as the source did.
func shortest32(x float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(float64(float32(x)), 'g', -1, 32), 64)
	return v
}
