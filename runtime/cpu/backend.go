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

// storage is a CPU tensor's memory: f for F32 tensors, i for I32 tensors.
type storage struct {
	f []float32
	i []int32
}

func (*storage) Backend() kdrt.Backend { return New() }

// Name implements runtime.Backend.
func (*Backend) Name() string { return "cpu" }

// Describe implements runtime.Backend.
func (*Backend) Describe() string {
	return fmt.Sprintf("cpu: %d threads (GOMAXPROCS), %s/%s, float32, %s GEMM kernel", goruntime.GOMAXPROCS(0), goruntime.GOOS, goruntime.GOARCH, sgemm.KernelName())
}

// Alloc implements runtime.Backend. The CPU computes in float32: it stores F32
// and I32 tensors and refuses the 16-bit storage types. A size that
// overflows, or exceeds the memory the system has available, is an error
// (see checkAlloc).
func (b *Backend) Alloc(name string, dt kdrt.DType, shape ...int) (*kdrt.Tensor, error) {
	for _, d := range shape {
		if d < 0 {
			return nil, fmt.Errorf("cpu: alloc %s%s: negative dimension", name, kdrt.ShapeString(shape))
		}
	}
	if dt != kdrt.F32 && dt != kdrt.I32 {
		return nil, fmt.Errorf("cpu: alloc %s%s: dtype %s not supported (the CPU backend computes in F32)", name, kdrt.ShapeString(shape), dt)
	}
	if err := b.checkAlloc(name, dt, shape); err != nil {
		return nil, err
	}
	s := &storage{}
	if n := kdrt.Numel(shape); dt == kdrt.F32 {
		s.f = make([]float32, n)
	} else {
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

// Upload implements runtime.Backend.
func (*Backend) Upload(dst *kdrt.Tensor, src []float32) error {
	d := Float32s(dst)
	if len(src) != len(d) {
		return fmt.Errorf("cpu: upload to %v: %d values for %d elements", dst, len(src), len(d))
	}
	copy(d, src)
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
	s := Float32s(src)
	if len(s) != len(dst) {
		return fmt.Errorf("cpu: download of %v into %d values", src, len(dst))
	}
	copy(dst, s)
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
	s := t.Storage.(*storage)
	clear(s.f)
	clear(s.i)
}

// Copy implements runtime.Backend.
func (*Backend) Copy(dst, src *kdrt.Tensor) {
	mustSameNumel("copy", dst, src)
	d, s := dst.Storage.(*storage), src.Storage.(*storage)
	if dst.DType != src.DType {
		panic(fmt.Sprintf("cpu: copy %v from %v: dtypes differ", dst, src))
	}
	copy(d.f, s.f)
	copy(d.i, s.i)
}

// Sync implements runtime.Backend; CPU work is synchronous and cannot fail.
func (*Backend) Sync() error { return nil }

// MatMul implements runtime.Backend.
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
	matmul(Float32s(c), Float32s(a), Float32s(b), a.Rows(), a.Cols(), b.Rows(), b.Cols(), transA, transB, alpha, beta)
}

// AddBias implements runtime.Backend.
func (*Backend) AddBias(y, bias *kdrt.Tensor) {
	mustCols("add bias", bias.Numel(), y)
	addBias(Float32s(y), Float32s(bias), y.Rows(), y.Cols())
}

// BiasBackward implements runtime.Backend.
func (*Backend) BiasBackward(dbias, dy *kdrt.Tensor) {
	mustCols("bias backward", dbias.Numel(), dy)
	biasBackward(Float32s(dbias), Float32s(dy), dy.Rows(), dy.Cols())
}

// Add implements runtime.Backend.
func (*Backend) Add(dst, a, b *kdrt.Tensor) {
	mustSameNumel("add", dst, a, b)
	add(Float32s(dst), Float32s(a), Float32s(b))
}

// Scale implements runtime.Backend.
func (*Backend) Scale(t *kdrt.Tensor, s float32) { scale(Float32s(t), s) }

// SumSquares implements runtime.Backend.
func (*Backend) SumSquares(ts ...*kdrt.Tensor) (float64, error) {
	var s float64
	for _, t := range ts {
		s += sumSquares(Float32s(t))
	}
	return s, nil
}

// Embedding implements runtime.Backend.
func (*Backend) Embedding(out, ids, table *kdrt.Tensor) {
	C := table.Cols()
	mustCols("embedding", C, out)
	if out.Rows() != ids.Numel() {
		panic(fmt.Sprintf("cpu: embedding %v of %v: row count differs", out, ids))
	}
	idv := Int32s(ids)
	checkIDs(idv, table)
	embeddingForward(Float32s(out), idv, Float32s(table), C)
}

// EmbeddingBackward implements runtime.Backend.
func (*Backend) EmbeddingBackward(dtable, dout, ids *kdrt.Tensor) {
	C := dtable.Cols()
	mustCols("embedding backward", C, dout)
	idv := Int32s(ids)
	checkIDs(idv, dtable)
	embeddingBackward(Float32s(dtable), Float32s(dout), idv, C)
}

// RMSNorm implements runtime.Backend.
func (*Backend) RMSNorm(out, rstd, x, w *kdrt.Tensor, eps float32) {
	mustSameNumel("rmsnorm", out, x)
	mustCols("rmsnorm", w.Numel(), x)
	rmsnormForward(Float32s(out), Float32s(rstd), Float32s(x), Float32s(w), x.Rows(), x.Cols(), eps)
}

// RMSNormBackward implements runtime.Backend.
func (*Backend) RMSNormBackward(dx, dw, dout, x, w, rstd *kdrt.Tensor) {
	mustSameNumel("rmsnorm backward", dx, dout, x)
	rmsnormBackward(Float32s(dx), Float32s(dw), Float32s(dout), Float32s(x), Float32s(w), Float32s(rstd), x.Rows(), x.Cols())
}

// LayerNorm implements runtime.Backend.
func (*Backend) LayerNorm(out, mean, rstd, x, w, b *kdrt.Tensor, eps float32) {
	mustSameNumel("layernorm", out, x)
	mustCols("layernorm", w.Numel(), x)
	layernormForward(Float32s(out), Float32s(mean), Float32s(rstd), Float32s(x), Float32s(w), Float32s(b), x.Rows(), x.Cols(), eps)
}

// LayerNormBackward implements runtime.Backend.
func (*Backend) LayerNormBackward(dx, dw, db, dout, x, w, mean, rstd *kdrt.Tensor) {
	mustSameNumel("layernorm backward", dx, dout, x)
	layernormBackward(Float32s(dx), Float32s(dw), Float32s(db), Float32s(dout), Float32s(x), Float32s(w), Float32s(mean), Float32s(rstd), x.Rows(), x.Cols())
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
	rope(Float32s(x), Int32s(pos), Float32s(invFreq), x.Rows(), x.Cols()/HD, HD, inverse)
}

// SwiGLU implements runtime.Backend.
func (*Backend) SwiGLU(out, gate, up *kdrt.Tensor) {
	mustSameNumel("swiglu", out, gate, up)
	swigluForward(Float32s(out), Float32s(gate), Float32s(up))
}

// SwiGLUBackward implements runtime.Backend.
func (*Backend) SwiGLUBackward(dgate, dup, dout, gate, up *kdrt.Tensor) {
	mustSameNumel("swiglu backward", dgate, dup, dout, gate, up)
	swigluBackward(Float32s(dgate), Float32s(dup), Float32s(dout), Float32s(gate), Float32s(up))
}

// GELU implements runtime.Backend.
func (*Backend) GELU(out, x *kdrt.Tensor) {
	mustSameNumel("gelu", out, x)
	geluForward(Float32s(out), Float32s(x))
}

// GELUBackward implements runtime.Backend.
func (*Backend) GELUBackward(dx, dout, x *kdrt.Tensor) {
	mustSameNumel("gelu backward", dx, dout, x)
	geluBackward(Float32s(dx), Float32s(dout), Float32s(x))
}

// CrossEntropy implements runtime.Backend.
func (*Backend) CrossEntropy(losses, logits, targets *kdrt.Tensor) {
	checkTargets(logits, targets)
	mustSameNumel("cross entropy", losses, targets)
	crossEntropyForward(Float32s(losses), Float32s(logits), Int32s(targets), logits.Rows(), logits.Cols())
}

// CrossEntropyBackward implements runtime.Backend.
func (*Backend) CrossEntropyBackward(dlogits, logits, targets, weights *kdrt.Tensor, scale float32) {
	checkTargets(logits, targets)
	mustSameNumel("cross entropy backward", dlogits, logits)
	var w []float32
	if weights != nil {
		mustSameNumel("cross entropy backward", weights, targets)
		w = Float32s(weights)
	}
	crossEntropyBackward(Float32s(dlogits), Float32s(logits), Int32s(targets), w, logits.Rows(), logits.Cols(), scale)
}

// AdamW implements runtime.Backend.
func (*Backend) AdamW(param, grad, m, v *kdrt.Tensor, h kdrt.AdamWParams) {
	mustSameNumel("adamw", param, grad, m, v)
	adamw(Float32s(param), Float32s(grad), Float32s(m), Float32s(v), h)
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
	s := t.Storage.(*storage)
	v := &storage{}
	if s.f != nil {
		v.f = s.f[start*C : end*C : end*C]
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
