package safetensors

// dtypeBits gives the element width in bits of every dtype the reference
// implementation knows (its spelling in the header is the key).
var dtypeBits = map[string]int64{
	"BOOL":        8,
	"F4":          4,
	"F6_E2M3":     6,
	"F6_E3M2":     6,
	"U8":          8,
	"I8":          8,
	"F8_E5M2":     8,
	"F8_E4M3":     8,
	"F8_E8M0":     8,
	"F8_E4M3FNUZ": 8,
	"F8_E5M2FNUZ": 8,
	"I16":         16,
	"U16":         16,
	"F16":         16,
	"BF16":        16,
	"I32":         32,
	"U32":         32,
	"F32":         32,
	"C64":         64,
	"F64":         64,
	"I64":         64,
	"U64":         64,
}

// KnownDType reports whether dtype is a dtype spelling that safetensors
// defines (F32, BF16, F16, F64, I64, I32, I16, I8, U8, BOOL, the F8/F6/F4
// variants, ...).
func KnownDType(dtype string) bool {
	_, ok := dtypeBits[dtype]
	return ok
}
