// Package gguf reads GGUF files, the single-file model format of llama.cpp
// and ggml, and turns the Llama-family models they hold (general.architecture
// llama, qwen2 or mistral) into what the rest of kdnative uses: a Hugging
// Face config.json and float32 weights under transformers' names.
//
// A GGUF file (version 2 or 3, little-endian) is
//
//	"GGUF" uint32 version, uint64 tensor_count, uint64 metadata_kv_count
//	metadata: key (uint64 length + UTF-8), uint32 value type, value …
//	tensor infos: name, uint32 n_dims, uint64 ne[n_dims], uint32 ggml type, uint64 offset …
//	padding to general.alignment (default 32)
//	tensor data, each tensor at its offset from the start of this region
//
// ne[0] is the fastest-varying dimension, so a PyTorch weight [out, in] is
// stored with ne = [in, out]. Quantized types store ne[0] in blocks of 32 or
// 256 values (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1; Q4_K, Q5_K, Q6_K), each block
// with its own scales; Dequantize expands them to float32 exactly as
// llama.cpp's ggml-quants.c does.
//
// Parse reads and checks the header from any io.ReaderAt: every length and
// count is checked against the bytes that remain before it is used, so a
// truncated or corrupt file is an error that names the byte offset (wrapping
// ErrTruncated or ErrInvalid), never a panic or a huge allocation; it is
// fuzzed (FuzzParse). Open parses a file and reads tensors from it on demand.
//
// Why not github.com/gpustack/gguf-parser-go: it builds with CGO_ENABLED=0
// and reports truncation, but its errors carry no offsets, it panics on some
// malformed files (a general.alignment that is not a uint32 panics inside
// ParseGGUFFile; its size helpers panic on overflow by design), and it pulls
// in net/http, golang.org/x/crypto/ssh, json-iterator and reflect2 for its
// remote-file and estimation features. The header is a few hundred lines.
package gguf
