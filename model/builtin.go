package model

// builtinTinyConfig is a small Llama-shaped model (GQA, 2 layers) that ships
// inside the binary, so that `kdnative forward` runs on a fresh machine with
// no files at all. Its weights are made by InitRandom from a seed.
const builtinTinyConfig = `{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "vocab_size": 256,
  "hidden_size": 64,
  "intermediate_size": 176,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "max_position_embeddings": 128,
  "rms_norm_eps": 1e-5,
  "rope_theta": 10000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "float32"
}`

// BuiltinTiny returns the configuration of the tiny model built into kdnative.
func BuiltinTiny() *Config {
	c, err := ParseConfig([]byte(builtinTinyConfig), "built-in tiny model")
	if err != nil {
		panic(err) // a constant that does not parse is a bug caught by the tests
	}
	return c
}
