package runtime

import "fmt"

// Precision is how a run stores and multiplies its tensors.
type Precision uint8

const (
	// PrecisionFP32 stores everything in float32 and multiplies in float32 (no TF32):
	// the CPU's default and the numerical reference.
	PrecisionFP32 Precision = iota
	// PrecisionBF16 is mixed precision: weights and activations stored in bfloat16,
	// products accumulated in float32, weight gradients, master weights and
	// AdamW moments in float32, logits, softmax, losses and reductions in
	// float32. The default on CUDA (compute capability 8.0 and later).
	PrecisionBF16
	// PrecisionTF32 is PrecisionFP32 with cuBLAS allowed to multiply F32 matrices on the
	// tensor cores in TF32 (10-bit mantissa inputs, float32 accumulation).
	// Only when asked, never by default; CUDA only.
	PrecisionTF32
)

var precisionNames = []string{"fp32", "bf16", "tf32"}

// String returns the name recipes and flags use: fp32, bf16 or tf32.
func (p Precision) String() string {
	if int(p) < len(precisionNames) {
		return precisionNames[p]
	}
	return fmt.Sprintf("Precision(%d)", uint8(p))
}

// ParsePrecision reads fp32, bf16 or tf32; "" and "auto" give the backend's
// default (DefaultPrecision), reported by auto = true.
func ParsePrecision(s string) (p Precision, auto bool, err error) {
	if s == "" || s == "auto" {
		return PrecisionFP32, true, nil
	}
	for i, n := range precisionNames {
		if n == s {
			return Precision(i), false, nil
		}
	}
	return PrecisionFP32, false, fmt.Errorf("unknown precision %q (want auto, bf16, fp32 or tf32)", s)
}

// Storage is the dtype weights and activations are stored in.
func (p Precision) Storage() DType {
	if p == PrecisionBF16 {
		return BF16
	}
	return F32
}

// PrecisionSetter is an optional interface of a Backend: it checks that the
// device can run a precision and configures it (cuBLAS's math mode for
// TF32). A backend without it runs FP32 and BF16 storage and refuses TF32.
type PrecisionSetter interface {
	// DefaultPrecision is what --precision auto means on the backend.
	DefaultPrecision() Precision
	// SetPrecision checks and configures p; an error names the device and
	// the precision to use instead.
	SetPrecision(p Precision) error
}

// DefaultPrecision is the backend's default: BF16 on CUDA, FP32 on the CPU.
func DefaultPrecision(be Backend) Precision {
	if s, ok := be.(PrecisionSetter); ok {
		return s.DefaultPrecision()
	}
	return PrecisionFP32
}

// UsePrecision resolves name ("auto", "", fp32, bf16, tf32) on be, checks
// that be can run it and configures it. Every command that runs a model
// calls it once, before loading.
func UsePrecision(be Backend, name string) (Precision, error) {
	p, auto, err := ParsePrecision(name)
	if err != nil {
		return PrecisionFP32, err
	}
	if auto {
		p = DefaultPrecision(be)
	}
	if s, ok := be.(PrecisionSetter); ok {
		return p, s.SetPrecision(p)
	}
	if p == PrecisionTF32 {
		return p, fmt.Errorf("precision tf32 is a mode of NVIDIA tensor cores; the %s backend computes fp32 (use --precision fp32 or bf16)", be.Name())
	}
	return p, nil
}
