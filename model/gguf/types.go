package gguf

import "fmt"

// Type is a ggml tensor type (enum ggml_type in ggml.h).
type Type uint32

// The ggml tensor types. The numbering is llama.cpp's; gaps are types that
// were removed from ggml (31–33, 36–38).
const (
	F32     Type = 0
	F16     Type = 1
	Q4_0    Type = 2
	Q4_1    Type = 3
	Q5_0    Type = 6
	Q5_1    Type = 7
	Q8_0    Type = 8
	Q8_1    Type = 9
	Q2_K    Type = 10
	Q3_K    Type = 11
	Q4_K    Type = 12
	Q5_K    Type = 13
	Q6_K    Type = 14
	Q8_K    Type = 15
	IQ2_XXS Type = 16
	IQ2_XS  Type = 17
	IQ3_XXS Type = 18
	IQ1_S   Type = 19
	IQ4_NL  Type = 20
	IQ3_S   Type = 21
	IQ2_S   Type = 22
	IQ4_XS  Type = 23
	I8      Type = 24
	I16     Type = 25
	I32     Type = 26
	I64     Type = 27
	F64     Type = 28
	IQ1_M   Type = 29
	BF16    Type = 30
	TQ1_0   Type = 34
	TQ2_0   Type = 35
	MXFP4   Type = 39
	NVFP4   Type = 40
	Q1_0    Type = 41
)

// typeInfo is a type's block layout: blockElems values stored in blockBytes
// bytes (1 and the element size for unquantized types).
type typeInfo struct {
	name       string
	blockElems int
	blockBytes int
}

// types lists every type llama.cpp writes, so that a file holding one that
// kdnative cannot dequantize is still parsed, with its sizes checked, and the
// refusal names the type. The block sizes follow the block_* structs of
// ggml-common.h (QK_K = 256).
var types = map[Type]typeInfo{
	F32:     {"F32", 1, 4},
	F16:     {"F16", 1, 2},
	Q4_0:    {"Q4_0", 32, 2 + 16},
	Q4_1:    {"Q4_1", 32, 2 + 2 + 16},
	Q5_0:    {"Q5_0", 32, 2 + 4 + 16},
	Q5_1:    {"Q5_1", 32, 2 + 2 + 4 + 16},
	Q8_0:    {"Q8_0", 32, 2 + 32},
	Q8_1:    {"Q8_1", 32, 2 + 2 + 32},
	Q2_K:    {"Q2_K", 256, 16 + 64 + 2 + 2},
	Q3_K:    {"Q3_K", 256, 32 + 64 + 12 + 2},
	Q4_K:    {"Q4_K", 256, 2 + 2 + 12 + 128},
	Q5_K:    {"Q5_K", 256, 2 + 2 + 12 + 32 + 128},
	Q6_K:    {"Q6_K", 256, 128 + 64 + 16 + 2},
	Q8_K:    {"Q8_K", 256, 4 + 256 + 32},
	IQ2_XXS: {"IQ2_XXS", 256, 2 + 64},
	IQ2_XS:  {"IQ2_XS", 256, 2 + 64 + 8},
	IQ3_XXS: {"IQ3_XXS", 256, 2 + 96},
	IQ1_S:   {"IQ1_S", 256, 2 + 32 + 16},
	IQ4_NL:  {"IQ4_NL", 32, 2 + 16},
	IQ3_S:   {"IQ3_S", 256, 2 + 64 + 32 + 8 + 4},
	IQ2_S:   {"IQ2_S", 256, 2 + 64 + 8 + 8},
	IQ4_XS:  {"IQ4_XS", 256, 2 + 2 + 4 + 128},
	I8:      {"I8", 1, 1},
	I16:     {"I16", 1, 2},
	I32:     {"I32", 1, 4},
	I64:     {"I64", 1, 8},
	F64:     {"F64", 1, 8},
	IQ1_M:   {"IQ1_M", 256, 32 + 16 + 8},
	BF16:    {"BF16", 1, 2},
	TQ1_0:   {"TQ1_0", 256, 2 + 48 + 4},
	TQ2_0:   {"TQ2_0", 256, 2 + 64},
	MXFP4:   {"MXFP4", 32, 1 + 16},
	NVFP4:   {"NVFP4", 64, 4 + 32},
	Q1_0:    {"Q1_0", 128, 2 + 16},
}

// String is the type's name as llama.cpp prints it ("Q4_K"), or "type N"
// for a number ggml does not define.
func (t Type) String() string {
	if ti, ok := types[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("type %d", uint32(t))
}

// Known reports whether t is a type ggml defines (not necessarily one that
// Dequantize supports).
func (t Type) Known() bool {
	_, ok := types[t]
	return ok
}

// BlockSize returns how many values one block of t holds and how many bytes
// it takes (1 and the element size for F32, F16, BF16 and the integer
// types). ok is false for a type ggml does not define.
func (t Type) BlockSize() (elems, bytes int, ok bool) {
	ti, ok := types[t]
	return ti.blockElems, ti.blockBytes, ok
}

// Dequantizable reports whether Dequantize reads t.
func (t Type) Dequantizable() bool {
	_, ok := dequantizers[t]
	return ok
}

// SupportedTypes names the types Dequantize reads, for error messages.
const SupportedTypes = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K"
