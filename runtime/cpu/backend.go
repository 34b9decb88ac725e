package cpu

import (
	"fmt"
	goruntime "runtime"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu/sgemm"
)

func init() {
	kdrt.Register("cpu", 0, func() (kdrt.Backend, error) { return New(), nil })
}

// Backend is the CPU backend. It holds no state: every tensor is a Go slice.
type Backend struct{}

// New returns the CPU backend.
func New() *Backend { return &Backend{} }

// storage is a CPU tensor's memory: f for F32 tensors, h for BF16 tensors
// (bfloat16 bit patterns), i for I32 tensors.
type storage struct {
	f []float32
	h []uint16
	i []int32
}

func (*storage) Backend() kdrt.Backend { return New() }

// Name implements runtime.Backend.
func (*Backend) Name() string { return "cpu" }

// Describe implements runtime.Backend.
func (*Backend) Describe() string {
	return fmt.Sprintf("cpu: %d threads (GOMAXPROCS), %s/%s, float32 (F32 or BF16 storage), %s GEMM kernel", goruntime.GOMAXPROCS(0), goruntime.GOOS, goruntime.GOARCH, sgemm.KernelName())
}

// Alloc implements runtime.Backend. The CPU computes in float32 and stores
// F32, BF16 (see bf16.go) and I32 tensors; F16 is refused. A size that
// overflows, or exceeds the memory the system has available, is an error
// (see checkAlloc).
func (b *Backend) Alloc(name string, dt kdrt.DType, shape ...int) (*kdrt.Tensor, error) {
	for _, d := range shape {
		if d < 0 {
			return nil, fmt.Errorf("cpu: alloc %s%s: negative dimension", name, kdrt.ShapeString(shape))
		}
	}
	if dt != kdrt.F32 && dt != kdrt.BF16 && dt != kdrt.I32 {
		return nil, fmt.Errorf("cpu: alloc %s%s: dtype %s not supported (F32, BF16 or I32)", name, kdrt.ShapeString(shape), dt)
	}
	if err := b.checkAlloc(name, dt, shape); err != nil {
		return nil, err
	}
	s := &storage{}
	switch n := kdrt.Numel(shape); dt {
	case kdrt.F32:
		s.f = make([]float32, n)
	case kdrt.BF16:
		s.h = make([]uint16, n)
	default:
		s.i = make([]int32, n)
	}
	return &kdrt.Tensor{Shape: append([]int(nil), shape...), DType: dt, Storage: s, Name: name}, nil
}

// Free implements runtime.Backend; the garbage collector does the work.
func (*Backend) Free(t *kdrt.Tensor) { t.Storage = nil }

// Float32s returns the F32 tensor's elements; writes through it change the tensor.
func Float32s(t *kdrt.Tensor) []float32 {
	s, ok := t.Storage.(*storage)
	if !ok || t.DType != kdrt.F32 {
		panic(fmt.Sprintf("cpu: %v is not a CPU F32 tensor", t))
	}
	return s.f
}

// Int32s returns the I32 tensor's elements; writes through it change the tensor.
func Int32s(t *kdrt.Tensor) []int32 {
	s, ok := t.Storage.(*storage)
	if !ok || t.DType != kdrt.I32 {
		panic(fmt.Sprintf("cpu: %v is not a CPU I32 tensor", t))
	}
	return s.i
}

// Upload implements runtime.Backend; BF16 rounds to nearest even.
func (*Backend) Upload(dst *kdrt.Tensor, src []float32) error {
	if len(src) != dst.Numel() {
		return fmt.Errorf("cpu: upload to %v: %d values for %d elements", dst, len(src), dst.Numel())
	}
	switch dst.DType {
	case kdrt.F32:
		copy(Float32s(dst), src)
	case kdrt.BF16:
		narrow(BF16Bits(dst), src)
	default:
		return fmt.Errorf("cpu: upload of float values to %v", dst)
	}
	return nil
}

// UploadInt32 implements runtime.Backend.
func (*Backend) UploadInt32(dst *kdrt.Tensor, src []int32) error {
	d := Int32s(dst)
	if len(src) != len(d) {
		return fmt.Errorf("cpu: upload to %v: %d values for %d elements", dst, len(src), len(d))
	}
	copy(d, src)
	return nil
}

// Download implements runtime.Backend.
func (*Backend) Download(src *kdrt.Tensor, dst []float32) error {
	if src.Numel() != len(dst) {
		return fmt.Errorf("cpu: download of %v into %d values", src, len(dst))
	}
	switch src.DType {
	case kdrt.F32:
		copy(dst, Float32s(src))
	case kdrt.BF16:
		widen(dst, BF16Bits(src))
	default:
		return fmt.Errorf("cpu: download of %v as float values", src)
	}
	return nil
}

// DownloadInt32 implements runtime.Backend.
func (*Backend) DownloadInt32(src *kdrt.Tensor, dst []int32) error {
	s := Int32s(src)
	if len(s) != len(dst) {
		return fmt.Errorf("cpu: download of %v into %d values", src, len(dst))
	}
	copy(dst, s)
	return nil
}

// Zero implements runtime.Backend.
func (*Backend) Zero(t *kdrt.Tensor) {
	s := storageOf(t)
	clear(s.f)
	clear(s.h)
	clear(s.i)
}

// Copy implements runtime.Backend.
func (*Backend) Copy(dst, src *kdrt.Tensor) {
	mustSameNumel("copy", dst, src)
	d, s := storageOf(dst), storageOf(src)
	if dst.DType != src.DType {
		panic(fmt.Sprintf("cpu: copy %v from %v: dtypes differ", dst, src))
	}
	copy(d.f, s.f)
	copy(d.h, s.h)
	copy(d.i, s.i)
}

// Cast implements runtime.Backend: F32 to BF16 rounds to nearest even, BF16
// to F32 is exact, equal dtypes copy.
func (b *Backend) Cast(dst, src *kdrt.Tensor) {
	mustSameNumel("cast", dst, src)
	switch {
	case dst.DType == src.DType:
		b.Copy(dst, src)
	case src.DType == kdrt.F32 && dst.DType == kdrt.BF16:
		narrow(BF16Bits(dst), Float32s(src))
	case src.DType == kdrt.BF16 && dst.DType == kdrt.F32:
		widen(Float32s(dst), BF16Bits(src))
	default:
		panic(fmt.Sprintf("cpu: cast %v to %v: only F32 and BF16 convert", src, dst))
	}
}

// Sync implements runtime.Backend; CPU work is synchronous and cannot fail.
func (*Backend) Sync() error { return nil }

// MatMul implements runtime.Backend. A and B share a dtype (F32 or BF16); C
// is F32 or that dtype (BF16 products accumulate in float32 and, into a
// BF16 C, round once: cublasGemmEx's FP32 compute).
func (*Backend) MatMul(c, a, b *kdrt.Tensor, transA, transB bool, alpha, beta float32) {
	m, k := a.Rows(), a.Cols()
	if transA {
		m, k = k, m
	}
	k2, n := b.Rows(), b.Cols()
	if transB {
		k2, n = n, k2
	}
	if k != k2 || c.Rows() != m || c.Cols() != n {
		panic(fmt.Sprintf("cpu: matmul %v = op(%v)·op(%v) (transA=%v transB=%v): shapes do not agree", c, a, b, transA, transB))
	}
	dt := sameFloat("matmul", a, b)
	if c.DType != kdrt.F32 && c.DType != dt {
		panic(fmt.Sprintf("cpu: matmul %v = %v·%v: the product of %s operands is F32 or %s", c, a, b, dt, dt))
	}
	if dt == kdrt.F32 && c.DType == kdrt.F32 {
		matmul(Float32s(c), Float32s(a), Float32s(b), a.Rows(), a.Cols(), b.Rows(), b.Cols(), transA, transB, alpha, beta)
		return
	}
	matmulBF16(c, a, b, m, n, k, transA, transB, alpha, beta)
}

// AddBias implements runtime.Backend.
func (*Backend) AddBias(y, bias *kdrt.Tensor) {
	mustCols("add bias", bias.Numel(), y)
	sameFloat("add bias", y, bias)
	var f frame
	defer f.done()
	addBias(f.out(y), f.in(bias), y.Rows(), y.Cols())
}

// BiasBackward implements runtime.Backend; dbias is F32 or dy's dtype.
func (*Backend) BiasBackward(dbias, dy *kdrt.Tensor) {
	mustCols("bias backward", dbias.Numel(), dy)
	gradFloat("bias backward", sameFloat("bias backward", dy), dbias)
	var f frame
	defer f.done()
	biasBackward(f.out(dbias), f.in(dy), dy.Rows(), dy.Cols())
}

// Add implements runtime.Backend.
func (*Backend) Add(dst, a, b *kdrt.Tensor) {
	mustSameNumel("add", dst, a, b)
	sameFloat("add", dst, a, b)
	var f frame
	defer f.done()
	add(f.out(dst), f.in(a), f.in(b))
}

// Scale implements runtime.Backend.
func (*Backend) Scale(t *kdrt.Tensor, s float32) {
	sameFloat("scale", t)
	var f frame
	defer f.done()
	scale(f.out(t), s)
}

// SumSquares implements runtime.Backend.
func (*Backend) SumSquares(ts ...*kdrt.Tensor) (float64, error) {
	var s float64
	for _, t := range ts {
		sameFloat("sum squares", t)
		var f frame
		s += sumSquares(f.in(t))
		f.done()
	}
	return s, nil
}

// Embedding implements runtime.Backend. The rows are gathered as stored
// (out and table share a dtype), so a BF16 table costs no conversion.
func (*Backend) Embedding(out, ids, table *kdrt.Tensor) {
	C := table.Cols()
	mustCols("embedding", C, out)
	if out.Rows() != ids.Numel() {
		panic(fmt.Sprintf("cpu: embedding %v of %v: row count differs", out, ids))
	}
	idv := Int32s(ids)
	checkIDs(idv, table)
	if sameFloat("embedding", out, table) == kdrt.BF16 {
		embeddingForward(BF16Bits(out), idv, BF16Bits(table), C)
		return
	}
	embeddingForward(Float32s(out), idv, Float32s(table), C)
}

// EmbeddingBackward implements runtime.Backend; dtable is F32 or dout's dtype.
func (*Backend) EmbeddingBackward(dtable, dout, ids *kdrt.Tensor) {
	C := dtable.Cols()
	mustCols("embedding backward", C, dout)
	gradFloat("embedding backward", sameFloat("embedding backward", dout), dtable)
	idv := Int32s(ids)
	checkIDs(idv, dtable)
	var f frame
	defer f.done()
	embeddingBackward(f.out(dtable), f.in(dout), idv, C)
}

// RMSNorm implements runtime.Backend.
func (*Backend) RMSNorm(out, rstd, x, w *kdrt.Tensor, eps float32) {
	mustSameNumel("rmsnorm", out, x)
	mustCols("rmsnorm", w.Numel(), x)
	sameFloat("rmsnorm", out, x, w)
	onlyF32("rmsnorm", rstd)
	var f frame
	defer f.done()
	rmsnormForward(f.out(out), Float32s(rstd), f.in(x), f.in(w), x.Rows(), x.Cols(), eps)
}

// RMSNormBackward implements runtime.Backend; dw is F32 or x's dtype.
func (*Backend) RMSNormBackward(dx, dw, dout, x, w, rstd *kdrt.Tensor) {
	mustSameNumel("rmsnorm backward", dx, dout, x)
	gradFloat("rmsnorm backward", sameFloat("rmsnorm backward", dx, dout, x, w), dw)
	onlyF32("rmsnorm backward", rstd)
	var f frame
	defer f.done()
	rmsnormBackward(f.out(dx), f.out(dw), f.in(dout), f.in(x), f.in(w), Float32s(rstd), x.Rows(), x.Cols())
}

// LayerNorm implements runtime.Backend.
func (*Backend) LayerNorm(out, mean, rstd, x, w, b *kdrt.Tensor, eps float32) {
	mustSameNumel("layernorm", out, x)
	mustCols("layernorm", w.Numel(), x)
	sameFloat("layernorm", out, x, w, b)
	onlyF32("layernorm", mean, rstd)
	var f frame
	defer f.done()
	layernormForward(f.out(out), Float32s(mean), Float32s(rstd), f.in(x), f.in(w), f.in(b), x.Rows(), x.Cols(), eps)
}

// LayerNormBackward implements runtime.Backend; dw and db are F32 or x's
// dtype.
func (*Backend) LayerNormBackward(dx, dw, db, dout, x, w, mean, rstd *kdrt.Tensor) {
	mustSameNumel("layernorm backward", dx, dout, x)
	gradFloat("layernorm backward", sameFloat("layernorm backward", dx, dout, x, w), dw, db)
	onlyF32("layernorm backward", mean, rstd)
	var f frame
	defer f.done()
	layernormBackward(f.out(dx), f.out(dw), f.out(db), f.in(dout), f.in(x), f.in(w), Float32s(mean), Float32s(rstd), x.Rows(), x.Cols())
}

// RoPE implements runtime.Backend.
func (b *Backend) RoPE(x, pos, invFreq *kdrt.Tensor) { b.rope(x, pos, invFreq, false) }

// RoPEBackward implements runtime.Backend.
func (b *Backend) RoPEBackward(dx, pos, invFreq *kdrt.Tensor) { b.rope(dx, pos, invFreq, true) }

func (*Backend) rope(x, pos, invFreq *kdrt.Tensor, inverse bool) {
	HD := 2 * invFreq.Numel()
	if HD == 0 || x.Cols()%HD != 0 || pos.Numel() != x.Rows() {
		panic(fmt.Sprintf("cpu: rope on %v with %v and %v: shapes do not agree", x, pos, invFreq))
	}
	sameFloat("rope", x)
	var f frame
	defer f.done()
	rope(f.out(x), Int32s(pos), Float32s(invFreq), x.Rows(), x.Cols()/HD, HD, inverse)
}

// SwiGLU implements runtime.Backend.
func (*Backend) SwiGLU(out, gate, up *kdrt.Tensor) {
	mustSameNumel("swiglu", out, gate, up)
	sameFloat("swiglu", out, gate, up)
	var f frame
	defer f.done()
	swigluForward(f.out(out), f.in(gate), f.in(up))
}

// SwiGLUBackward implements runtime.Backend.
func (*Backend) SwiGLUBackward(dgate, dup, dout, gate, up *kdrt.Tensor) {
	mustSameNumel("swiglu backward", dgate, dup, dout, gate, up)
	sameFloat("swiglu backward", dgate, dup, dout, gate, up)
	var f frame
	defer f.done()
	swigluBackward(f.out(dgate), f.out(dup), f.in(dout), f.in(gate), f.in(up))
}

// GELU implements runtime.Backend.
func (*Backend) GELU(out, x *kdrt.Tensor) {
	mustSameNumel("gelu", out, x)
	sameFloat("gelu", out, x)
	var f frame
	defer f.done()
	geluForward(f.out(out), f.in(x))
}

// GELUBackward implements runtime.Backend.
func (*Backend) GELUBackward(dx, dout, x *kdrt.Tensor) {
	mustSameNumel("gelu backward", dx, dout, x)
	sameFloat("gelu backward", dx, dout, x)
	var f frame
	defer f.done()
	geluBackward(f.out(dx), f.in(dout), f.in(x))
}

// CrossEntropy implements runtime.Backend. Logits and losses are F32.
func (*Backend) CrossEntropy(losses, logits, targets *kdrt.Tensor) {
	checkTargets(logits, targets)
	mustSameNumel("cross entropy", losses, targets)
	onlyF32("cross entropy", losses, logits)
	crossEntropyForward(Float32s(losses), Float32s(logits), Int32s(targets), logits.Rows(), logits.Cols())
}

// CrossEntropyBackward implements runtime.Backend. Every float tensor is F32.
func (*Backend) CrossEntropyBackward(dlogits, logits, targets, weights *kdrt.Tensor, scale float32) {
	checkTargets(logits, targets)
	mustSameNumel("cross entropy backward", dlogits, logits)
	onlyF32("cross entropy backward", dlogits, logits, weights)
	var w []float32
	if weights != nil {
		mustSameNumel("cross entropy backward", weights, targets)
		w = Float32s(weights)
	}
	crossEntropyBackward(Float32s(dlogits), Float32s(logits), Int32s(targets), w, logits.Rows(), logits.Cols(), scale)
}

// AdamW implements runtime.Backend. param and grad share a dtype (a BF16
// param is updated in float32 and rounded once); m and v are F32.
func (*Backend) AdamW(param, grad, m, v *kdrt.Tensor, h kdrt.AdamWParams) {
	mustSameNumel("adamw", param, grad, m, v)
	sameFloat("adamw", param, grad)
	onlyF32("adamw", m, v)
	var f frame
	defer f.done()
	adamw(f.out(param), f.in(grad), Float32s(m), Float32s(v), h, 1)
}

func mustSameNumel(op string, ts ...*kdrt.Tensor) {
	for _, t := range ts[1:] {
		if t.Numel() != ts[0].Numel() {
			panic(fmt.Sprintf("cpu: %s: %v and %v differ in size", op, ts[0], t))
		}
	}
}

func mustCols(op string, want int, t *kdrt.Tensor) {
	if t.Cols() != want {
		panic(fmt.Sprintf("cpu: %s: %v should have %d columns", op, t, want))
	}
}

func checkIDs(ids []int32, table *kdrt.Tensor) {
	V := int32(table.Rows())
	for n, id := range ids {
		if id < 0 || id >= V {
			panic(fmt.Sprintf("cpu: embedding: id %d at position %d is outside %v", id, n, table))
		}
	}
}

func checkTargets(logits, targets *kdrt.Tensor) {
	V := int32(logits.Cols())
	if targets.Numel() != logits.Rows() {
		panic(fmt.Sprintf("cpu: cross entropy: %v for %v", targets, logits))
	}
	for n, t := range Int32s(targets) {
		if t != kdrt.IgnoreIndex && (t < 0 || t >= V) {
			panic(fmt.Sprintf("cpu: cross entropy: target %d at row %d is outside the vocabulary of %v", t, n, logits))
		}
	}
}

// Slice implements runtime.Backend.
func (*Backend) Slice(t *kdrt.Tensor, start, end int) *kdrt.Tensor {
	C, rows := t.Cols(), t.Rows()
	if len(t.Shape) == 1 { // a vector [N] is N rows of one element
		C, rows = 1, t.Shape[0]
	}
	if start < 0 || end > rows || start > end {
		panic(fmt.Sprintf("cpu: slice rows [%d, %d) of %v", start, end, t))
	}
	s := storageOf(t)
	v := &storage{}
	if s.f != nil {
		v.f = s.f[start*C : end*C : end*C]
	}
	if s.h != nil {
		v.h = s.h[start*C : end*C : end*C]
	}
	if s.i != nil {
		v.i = s.i[start*C : end*C : end*C]
	}
	shape := []int{end - start, C}
	if len(t.Shape) == 1 {
		shape = []int{end - start}
	}
	return &kdrt.Tensor{Shape: shape, DType: t.DType, Storage: v, Name: fmt.Sprintf("%s[%d:%d]", t.Name, start, end)}
}

// Divergence implements runtime.Backend.
func (*Backend) Divergence(losses, dstudent, student, teacher, weights *kdrt.Tensor, p kdrt.DivergenceParams) {
	N, Vs, Vt := student.Rows(), student.Cols(), teacher.Cols()
	V := p.Vocab
	if V == 0 && Vs != Vt {
		panic(fmt.Sprintf("cpu: divergence between %v and %v: vocabularies differ and no shared width is given", student, teacher))
	}
	if V > Vs || V > Vt || teacher.Rows() != N || losses.Numel() != N || weights.Numel() != N {
		panic(fmt.Sprintf("cpu: divergence %v vs %v (vocab %d, losses %v, weights %v): shapes do not agree", student, teacher, V, losses, weights))
	}
	onlyF32("divergence", losses, dstudent, student, teacher, weights)
	var ds []float32
	if dstudent != nil {
		mustSameNumel("divergence", dstudent, student)
		ds = Float32s(dstudent)
	}
	divergenceRows(Float32s(losses), ds, Float32s(student), Float32s(teacher), Float32s(weights), N, Vs, Vt, p)
}

// SparseDivergence implements runtime.Backend.
func (*Backend) SparseDivergence(losses, dstudent, student, ids, logprobs, tail, weights *kdrt.Tensor, p kdrt.DivergenceParams) {
	N, V, K := student.Rows(), student.Cols(), ids.Cols()
	if ids.Rows() != N || logprobs.Numel() != ids.Numel() || losses.Numel() != N || weights.Numel() != N {
		panic(fmt.Sprintf("cpu: sparse divergence %v vs %v %v: shapes do not agree", student, ids, logprobs))
	}
	onlyF32("sparse divergence", losses, dstudent, student, logprobs, tail, weights)
	idv := Int32s(ids)
	for i, id := range idv {
		if id < 0 || int(id) >= V {
			panic(fmt.Sprintf("cpu: sparse divergence: teacher id %d at row %d is outside the vocabulary of %v", id, i/K, student))
		}
	}
	var ds []float32
	if dstudent != nil {
		mustSameNumel("sparse divergence", dstudent, student)
		ds = Float32s(dstudent)
	}
	var tl []float32
	if tail != nil {
		mustSameNumel("sparse divergence tail", tail, losses)
		tl = Float32s(tail)
	}
	sparseDivergenceRows(Float32s(losses), ds, Float32s(student), idv, Float32s(logprobs), tl, Float32s(weights), N, V, K, p)
}
