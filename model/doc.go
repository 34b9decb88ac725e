// Package model loads, runs and saves the transformer students and teachers
// that kdnative distills: the Llama family (model_type llama, qwen2, mistral)
// and GPT-2, read from and written to Hugging Face model folders (config.json
// and safetensors).
//
// A Model owns its parameters, their gradients and the activations of its last
// forward pass, all as runtime tensors on one backend. There is no autograd:
// Forward records what Backward needs, and Backward walks the layers in reverse
// with each op's explicit backward, as llm.c does.
//
// Inside the model every linear layer is stored as nn.Linear stores it, W
// [out, in] with y = x·Wᵀ + b, and attention has separate q, k and v
// projections. GPT-2's Conv1D weights ([in, out]) and its fused c_attn are
// converted on load and converted back on save, so the saved folder is the
// layout transformers expects.
package model
