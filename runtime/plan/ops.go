package plan

import (
	"fmt"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// The ops compute nothing: each checks that its tensors are live tensors of
// the plan and that their shapes agree, with the CPU backend's rules, and
// panics as a backend does on a programming error.

func sameNumel(op string, ts ...*kdrt.Tensor) {
	for _, t := range ts[1:] {
		if t.Numel() != ts[0].Numel() {
			panic(fmt.Sprintf("plan: %s: %v and %v differ in size", op, ts[0], t))
		}
	}
}

func wantCols(op string, want int, t *kdrt.Tensor) {
	if t.Cols() != want {
		panic(fmt.Sprintf("plan: %s: %v should have %d columns", op, t, want))
	}
}

func wantNumel(op string, want int, t *kdrt.Tensor) {
	if t.Numel() != want {
		panic(fmt.Sprintf("plan: %s: %v should have %d elements", op, t, want))
	}
}

// MatMul implements runtime.Backend.
func (b *Backend) MatMul(c, x, y *kdrt.Tensor, transA, transB bool, alpha, beta float32) {
	b.use("matmul", c, x, y)
	m, k := x.Rows(), x.Cols()
	if transA {
		m, k = k, m
	}
	k2, n := y.Rows(), y.Cols()
	if transB {
		k2, n = n, k2
	}
	if k != k2 || c.Rows() != m || c.Cols() != n {
		panic(fmt.Sprintf("plan: matmul %v = op(%v)·op(%v) (transA=%v transB=%v): shapes do not agree", c, x, y, transA, transB))
	}
}

// AddBias implements runtime.Backend.
func (b *Backend) AddBias(y, bias *kdrt.Tensor) {
	b.use("add bias", y, bias)
	wantCols("add bias", bias.Numel(), y)
}

// BiasBackward implements runtime.Backend.
func (b *Backend) BiasBackward(dbias, dy *kdrt.Tensor) {
	b.use("bias backward", dbias, dy)
	wantCols("bias backward", dbias.Numel(), dy)
}

// Add implements runtime.Backend.
func (b *Backend) Add(dst, x, y *kdrt.Tensor) {
	b.use("add", dst, x, y)
	sameNumel("add", dst, x, y)
}

// Scale implements runtime.Backend.
func (b *Backend) Scale(t *kdrt.Tensor, s float32) { b.use("scale", t) }

// SumSquares implements runtime.Backend: 0.
func (b *Backend) SumSquares(ts ...*kdrt.Tensor) (float64, error) {
	b.use("sum squares", ts...)
	return 0, nil
}

// Embedding implements runtime.Backend.
func (b *Backend) Embedding(out, ids, table *kdrt.Tensor) {
	b.use("embedding", out, ids, table)
	wantCols("embedding", table.Cols(), out)
	wantNumel("embedding", out.Rows(), ids)
}

// EmbeddingBackward implements runtime.Backend.
func (b *Backend) EmbeddingBackward(dtable, dout, ids *kdrt.Tensor) {
	b.use("embedding backward", dtable, dout, ids)
	wantCols("embedding backward", dtable.Cols(), dout)
	wantNumel("embedding backward", dout.Rows(), ids)
}

// RMSNorm implements runtime.Backend.
func (b *Backend) RMSNorm(out, rstd, x, w *kdrt.Tensor, eps float32) {
	b.use("rmsnorm", out, rstd, x, w)
	sameNumel("rmsnorm", out, x)
	wantCols("rmsnorm", w.Numel(), x)
	wantNumel("rmsnorm", x.Rows(), rstd)
}

// RMSNormBackward implements runtime.Backend.
func (b *Backend) RMSNormBackward(dx, dw, dout, x, w, rstd *kdrt.Tensor) {
	b.use("rmsnorm backward", dx, dw, dout, x, w, rstd)
	sameNumel("rmsnorm backward", dx, dout, x)
	sameNumel("rmsnorm backward", dw, w)
	wantNumel("rmsnorm backward", x.Rows(), rstd)
}

// AddRMSNorm implements runtime.Backend.
func (b *Backend) AddRMSNorm(sum, out, rstd, x, y, w *kdrt.Tensor, eps float32) {
	b.use("add rmsnorm", sum, out, rstd, x, y, w)
	sameNumel("add rmsnorm", sum, out, x, y)
	wantCols("add rmsnorm", w.Numel(), x)
	wantNumel("add rmsnorm", x.Rows(), rstd)
}

// LayerNorm implements runtime.Backend.
func (b *Backend) LayerNorm(out, mean, rstd, x, w, bias *kdrt.Tensor, eps float32) {
	b.use("layernorm", out, mean, rstd, x, w, bias)
	sameNumel("layernorm", out, x)
	wantCols("layernorm", w.Numel(), x)
	sameNumel("layernorm", mean, rstd)
	wantNumel("layernorm", x.Rows(), rstd)
}

// LayerNormBackward implements runtime.Backend.
func (b *Backend) LayerNormBackward(dx, dw, db, dout, x, w, mean, rstd *kdrt.Tensor) {
	b.use("layernorm backward", dx, dw, db, dout, x, w, mean, rstd)
	sameNumel("layernorm backward", dx, dout, x)
	sameNumel("layernorm backward", dw, db, w)
}

// RoPE implements runtime.Backend.
func (b *Backend) RoPE(x, pos, invFreq *kdrt.Tensor) { b.rope("rope", x, pos, invFreq) }

// RoPEBackward implements runtime.Backend.
func (b *Backend) RoPEBackward(dx, pos, invFreq *kdrt.Tensor) {
	b.rope("rope backward", dx, pos, invFreq)
}

func (b *Backend) rope(op string, x, pos, invFreq *kdrt.Tensor) {
	b.use(op, x, pos, invFreq)
	HD := 2 * invFreq.Numel()
	if HD == 0 || x.Cols()%HD != 0 || pos.Numel() != x.Rows() {
		panic(fmt.Sprintf("plan: %s on %v with %v and %v: shapes do not agree", op, x, pos, invFreq))
	}
}

func checkQKV(op string, qkv, bias, q, k, v *kdrt.Tensor) {
	N := qkv.Rows()
	if q.Rows() != N || k.Rows() != N || v.Rows() != N || v.Cols() != k.Cols() || q.Cols()+2*k.Cols() != qkv.Cols() ||
		(bias != nil && bias.Numel() != qkv.Cols()) {
		panic(fmt.Sprintf("plan: %s: %v is not [%v %v %v] (bias %v)", op, qkv, q, k, v, bias))
	}
}

// QKVBiasRoPE implements runtime.Backend.
func (b *Backend) QKVBiasRoPE(q, k, v, qkv, bias, pos, invFreq *kdrt.Tensor) {
	b.use("qkv bias rope", q, k, v, qkv, bias, pos, invFreq)
	checkQKV("qkv bias rope", qkv, bias, q, k, v)
	if invFreq != nil {
		b.rope("qkv bias rope", q, pos, invFreq)
	}
}

// QKVBiasRoPEBackward implements runtime.Backend.
func (b *Backend) QKVBiasRoPEBackward(dqkv, dbias, dq, dk, dv, pos, invFreq *kdrt.Tensor) {
	b.use("qkv bias rope backward", dqkv, dbias, dq, dk, dv, pos, invFreq)
	checkQKV("qkv bias rope backward", dqkv, dbias, dq, dk, dv)
	if invFreq != nil {
		b.rope("qkv bias rope backward", dq, pos, invFreq)
	}
}

func checkAttention(op string, p kdrt.AttentionParams, out, lse, q, k, v *kdrt.Tensor) {
	ok := p.NKV > 0 && p.NH%p.NKV == 0 && p.B >= 0 && p.T >= 0 && p.HD >= 0 &&
		q.Numel() == p.B*p.T*p.NH*p.HD && out.Numel() == q.Numel() &&
		k.Numel() == p.B*p.T*p.NKV*p.HD && v.Numel() == k.Numel() &&
		lse.Numel() == p.B*p.NH*p.T && (p.KeyStart == nil || len(p.KeyStart) == p.B)
	if !ok {
		panic(fmt.Sprintf("plan: %s %+v: shapes of %v %v %v %v %v do not agree (lse should be [B, NH, T])", op, p, out, lse, q, k, v))
	}
}

// Attention implements runtime.Backend.
func (b *Backend) Attention(out, lse, q, k, v *kdrt.Tensor, p kdrt.AttentionParams) {
	b.use("attention", out, lse, q, k, v)
	checkAttention("attention", p, out, lse, q, k, v)
}

// AttentionBackward implements runtime.Backend.
func (b *Backend) AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v *kdrt.Tensor, p kdrt.AttentionParams) {
	b.use("attention backward", dq, dk, dv, dout, out, lse, q, k, v)
	checkAttention("attention backward", p, out, lse, q, k, v)
	sameNumel("attention backward", dq, q, dout)
	sameNumel("attention backward", dk, k, dv)
}

// AttentionDecode implements runtime.Backend.
func (b *Backend) AttentionDecode(out, q, kCache, vCache, at *kdrt.Tensor, p kdrt.AttentionParams) {
	b.use("attention decode", out, q, kCache, vCache, at)
	sameNumel("attention decode", out, q)
	sameNumel("attention decode", kCache, vCache)
	B := max(p.B, 1)
	if p.NKV <= 0 || p.NH%p.NKV != 0 || q.Numel() != B*p.NH*p.HD || kCache.Cols() != p.NKV*p.HD ||
		kCache.Rows()%B != 0 || at.DType != kdrt.I32 || at.Numel() != B || (p.KeyStart != nil && len(p.KeyStart) != B) {
		panic(fmt.Sprintf("plan: attention decode %+v: shapes of %v %v %v %v do not agree", p, q, kCache, vCache, at))
	}
}

// KVAppend implements runtime.Backend.
func (b *Backend) KVAppend(cache, src, at *kdrt.Tensor) {
	b.use("kv append", cache, src, at)
	B := at.Numel()
	if at.DType != kdrt.I32 || B == 0 || cache.DType != src.DType || cache.Cols() != src.Cols() ||
		cache.Rows()%B != 0 || src.Rows()%B != 0 || src.Rows()/B > cache.Rows()/B {
		panic(fmt.Sprintf("plan: kv append of %v into %v at %v: shapes do not agree", src, cache, at))
	}
}

// SwiGLU implements runtime.Backend.
func (b *Backend) SwiGLU(out, gate, up *kdrt.Tensor) {
	b.use("swiglu", out, gate, up)
	sameNumel("swiglu", out, gate, up)
}

// SwiGLUBackward implements runtime.Backend.
func (b *Backend) SwiGLUBackward(dgate, dup, dout, gate, up *kdrt.Tensor) {
	b.use("swiglu backward", dgate, dup, dout, gate, up)
	sameNumel("swiglu backward", dgate, dup, dout, gate, up)
}

// GELU implements runtime.Backend.
func (b *Backend) GELU(out, x *kdrt.Tensor) {
	b.use("gelu", out, x)
	sameNumel("gelu", out, x)
}

// GELUBackward implements runtime.Backend.
func (b *Backend) GELUBackward(dx, dout, x *kdrt.Tensor) {
	b.use("gelu backward", dx, dout, x)
	sameNumel("gelu backward", dx, dout, x)
}

// CrossEntropy implements runtime.Backend.
func (b *Backend) CrossEntropy(losses, logits, targets *kdrt.Tensor) {
	b.use("cross entropy", losses, logits, targets)
	wantNumel("cross entropy", logits.Rows(), targets)
	sameNumel("cross entropy", losses, targets)
}

// CrossEntropyBackward implements runtime.Backend.
func (b *Backend) CrossEntropyBackward(dlogits, logits, targets, weights *kdrt.Tensor, scale float32) {
	b.use("cross entropy backward", dlogits, logits, targets, weights)
	wantNumel("cross entropy backward", logits.Rows(), targets)
	sameNumel("cross entropy backward", dlogits, logits)
	if weights != nil {
		sameNumel("cross entropy backward", weights, targets)
	}
}

// AdamW implements runtime.Backend.
func (b *Backend) AdamW(param, grad, m, v *kdrt.Tensor, h kdrt.AdamWParams) {
	b.use("adamw", param, grad, m, v)
	sameNumel("adamw", param, grad, m, v)
}

// Divergence implements runtime.Backend.
func (b *Backend) Divergence(losses, dstudent, student, teacher, weights *kdrt.Tensor, p kdrt.DivergenceParams) {
	b.use("divergence", losses, dstudent, student, teacher, weights)
	N, Vs, Vt := student.Rows(), student.Cols(), teacher.Cols()
	V := p.Vocab
	if V == 0 && Vs != Vt {
		panic(fmt.Sprintf("plan: divergence between %v and %v: vocabularies differ and no shared width is given", student, teacher))
	}
	if V > Vs || V > Vt || teacher.Rows() != N || losses.Numel() != N || weights.Numel() != N {
		panic(fmt.Sprintf("plan: divergence %v vs %v (vocab %d, losses %v, weights %v): shapes do not agree", student, teacher, V, losses, weights))
	}
	if dstudent != nil {
		sameNumel("divergence", dstudent, student)
	}
}

// SparseDivergence implements runtime.Backend.
func (b *Backend) SparseDivergence(losses, dstudent, student, ids, logprobs, tail, weights *kdrt.Tensor, p kdrt.DivergenceParams) {
	b.use("sparse divergence", losses, dstudent, student, ids, logprobs, tail, weights)
	N := student.Rows()
	if ids.Rows() != N || logprobs.Numel() != ids.Numel() || losses.Numel() != N || weights.Numel() != N {
		panic(fmt.Sprintf("plan: sparse divergence %v vs %v %v: shapes do not agree", student, ids, logprobs))
	}
	if dstudent != nil {
		sameNumel("sparse divergence", dstudent, student)
	}
	if tail != nil {
		sameNumel("sparse divergence tail", tail, losses)
	}
}

// RowNormalize implements runtime.Backend.
func (b *Backend) RowNormalize(out, norms, x *kdrt.Tensor, eps float32) {
	b.use("row normalize", out, norms, x)
	sameNumel("row normalize", out, x)
	wantNumel("row normalize", x.Rows(), norms)
}

// RowNormalizeBackward implements runtime.Backend.
func (b *Backend) RowNormalizeBackward(dx, dout, out, norms *kdrt.Tensor, eps float32) {
	b.use("row normalize backward", dx, dout, out, norms)
	sameNumel("row normalize backward", dx, dout, out)
	wantNumel("row normalize backward", out.Rows(), norms)
}

// RowDot implements runtime.Backend.
func (b *Backend) RowDot(out, x, y *kdrt.Tensor) {
	b.use("row dot", out, x, y)
	sameNumel("row dot", x, y)
	wantNumel("row dot", x.Rows(), out)
}

// ScaleRows implements runtime.Backend.
func (b *Backend) ScaleRows(dst, x, s *kdrt.Tensor, beta float32) {
	b.use("scale rows", dst, x, s)
	sameNumel("scale rows", dst, x)
	wantNumel("scale rows", x.Rows(), s)
}

// Cast implements runtime.Backend.
func (b *Backend) Cast(dst, src *kdrt.Tensor) {
	b.use("cast", dst, src)
	sameNumel("cast", dst, src)
}

// CrossTokenizerDivergence implements runtime.Backend.
func (b *Backend) CrossTokenizerDivergence(losses, dstudent, dslog, student, teacher, slog, tlog, weights *kdrt.Tensor, m kdrt.VocabMatch, p kdrt.CrossTokenizerParams) {
	const op = "cross-tokenizer divergence"
	b.use(op, losses, dstudent, dslog, student, teacher, slog, tlog, weights, m.Pairs, m.StudentFree, m.TeacherFree)
	N := student.Rows()
	if teacher.Rows() != N {
		panic(fmt.Sprintf("plan: %s: %v and %v differ in rows", op, student, teacher))
	}
	for _, t := range []*kdrt.Tensor{losses, slog, tlog, weights, dslog} {
		if t != nil {
			wantNumel(op, N, t)
		}
	}
	if dstudent != nil {
		sameNumel(op, dstudent, student)
	}
}

// The CUDA backend's multi-tensor AdamW tables (cuda/ops_optim.go): per
// slot a row of cudaOptFields 8-byte fields, per chunk of cudaOptChunk
// elements two 8-byte numbers, and the norm's partial sums of at most
// cudaOptMaxBlocks blocks.
const (
	cudaOptFields    = 8
	cudaOptChunk     = 1 << 16
	cudaOptMaxBlocks = 1024
)

// adamwGroup is the planner's AdamWGroup: the slots and, in a plan sized
// as the CUDA allocator sizes blocks, the tables the CUDA backend's
// PrepareAdamW allocates (the CPU's allocates none, which an exact plan
// follows).
type adamwGroup struct {
	b      *Backend
	slots  []kdrt.AdamWSlot
	tables []*kdrt.Tensor
}

func (g *adamwGroup) Slots() []kdrt.AdamWSlot { return g.slots }

func (g *adamwGroup) Free() {
	for _, t := range g.tables {
		g.b.Free(t)
	}
	g.tables = nil
}

// PrepareAdamW implements runtime.Backend.
func (b *Backend) PrepareAdamW(slots []kdrt.AdamWSlot) (kdrt.AdamWGroup, error) {
	if err := kdrt.CheckAdamWSlots(slots); err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	chunks := 0
	for _, s := range slots {
		b.use("prepare adamw", s.Param, s.Master, s.Grad, s.M, s.V)
		chunks += (s.Param.Numel() + cudaOptChunk - 1) / cudaOptChunk
	}
	g := &adamwGroup{b: b, slots: append([]kdrt.AdamWSlot(nil), slots...)}
	if b.opt.Exact {
		return g, nil
	}
	grid := max(1, min(chunks, cudaOptMaxBlocks))
	for _, t := range []struct {
		name string
		dt   kdrt.DType
		n    int
	}{
		{"adamw.tensors", kdrt.I32, 2 * max(cudaOptFields*len(slots), 1)},
		{"adamw.chunks", kdrt.I32, 2 * max(2*chunks, 1)},
		{"adamw.norm_partials", kdrt.F32, 2 * grid},
		{"adamw.clip", kdrt.F32, 2},
		{"adamw.hyper", kdrt.F32, 6}, // the step's scalars, uploaded each step
	} {
		x, err := b.Alloc(t.name, t.dt, t.n)
		if err != nil {
			g.Free()
			return nil, err
		}
		g.tables = append(g.tables, x)
	}
	return g, nil
}

// AdamWStep implements runtime.Backend.
func (b *Backend) AdamWStep(grp kdrt.AdamWGroup, norm *kdrt.Tensor, h kdrt.AdamWParams, maxNorm float32) {
	g, ok := grp.(*adamwGroup)
	if !ok || g.b != b {
		panic(fmt.Sprintf("plan: AdamWStep of a %T this plan did not prepare", grp))
	}
	b.use("adamw step", norm)
	wantNumel("adamw step", 1, norm)
	for _, s := range g.slots {
		b.use("adamw step", s.Param, s.Master, s.Grad, s.M, s.V)
	}
	b.use("adamw step", g.tables...)
}

// AddSum implements runtime.Backend.
func (b *Backend) AddSum(acc *kdrt.Tensor, slot int, x *kdrt.Tensor) {
	b.use("add sum", acc, x)
	kdrt.CheckAddSum(acc, slot, x)
}
