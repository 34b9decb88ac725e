package model

import (
	kdrt "github.com/kdnative/kdnative/runtime"
)

// layerActs are what one layer's forward keeps for its backward.
type layerActs struct {
	in                          *kdrt.Tensor // [N, C] residual stream entering the layer
	norm1, norm1Mean, norm1Rstd *kdrt.Tensor // [N, C], [N], [N]
	q, k, v                     *kdrt.Tensor // [N, NH·HD], [N, NKV·HD] ×2, after RoPE
	lse                         *kdrt.Tensor // [B, NH, T] attention's log-sum-exp per query row
	att                         *kdrt.Tensor // [N, NH·HD]
	mid                         *kdrt.Tensor // [N, C] residual stream after attention
	norm2, norm2Mean, norm2Rstd *kdrt.Tensor
	gate, up, act               *kdrt.Tensor // [N, F]; gate only for SwiGLU
}

// activations are the buffers of a training forward and backward at one
// batch shape. The backward's scratch gradients are shared by all layers.
// Activations and their gradients are stored in the model's dtype; the norm
// statistics and attention's log-sum-exps are F32. There are no logits: the
// fused losses compute them a chunk at a time from normF (Forward has its
// own, logitBufs).
type activations struct {
	B, T                        int
	keyStart                    []int        // the last forward's left padding (nil: none)
	ids, pos                    *kdrt.Tensor // I32 [N]
	layers                      []layerActs
	out                         *kdrt.Tensor // [N, C] residual stream after the last layer
	normF, normFMean, normFRstd *kdrt.Tensor
	tmpC                        *kdrt.Tensor // [N, C] scratch: projections' outputs
	qkv, dqkv                   *kdrt.Tensor // [N, NH·HD + 2·NKV·HD] scratch: the fused q/k/v projection, its gradient

	dres, dnorm, dnormF *kdrt.Tensor // [N, C]
	dq, dk, dv, datt    *kdrt.Tensor
	dgate, dup, dact    *kdrt.Tensor // [N, F]
	all                 []*kdrt.Tensor
}

// logitBufs are Forward's: the logits of every row and, for Backward,
// their gradient (F32), and the gradient rounded to the storage dtype when
// that is BF16 (the operand of the head's products).
type logitBufs struct {
	N               int
	logits, dlogits *kdrt.Tensor // F32 [N, V]
	dlogitsLow      *kdrt.Tensor // BF16 [N, V], or nil under F32 storage
	losses          *kdrt.Tensor // F32 [N]
	targets         *kdrt.Tensor // I32 [N]
	all             []*kdrt.Tensor
}

// bufAlloc collects allocations and their first error.
type bufAlloc struct {
	be  kdrt.Backend
	err error
	all []*kdrt.Tensor
}

func (b *bufAlloc) alloc(name string, dt kdrt.DType, shape ...int) *kdrt.Tensor {
	if b.err != nil {
		return nil
	}
	var t *kdrt.Tensor
	t, b.err = b.be.Alloc(name, dt, shape...)
	b.all = append(b.all, t)
	return t
}

func freeAll(be kdrt.Backend, ts []*kdrt.Tensor) {
	for _, t := range ts {
		if t != nil {
			be.Free(t)
		}
	}
}

// prepareLogits makes sure Forward's logit buffers fit N rows.
func (m *Model) prepareLogits(N int) error {
	if m.logits != nil && m.logits.N == N {
		return nil
	}
	if m.logits != nil {
		freeAll(m.be, m.logits.all)
		m.logits = nil
	}
	V := m.Config.Vocab
	ba := &bufAlloc{be: m.be}
	lg := &logitBufs{N: N}
	lg.logits, lg.dlogits = ba.alloc("logits", kdrt.F32, N, V), ba.alloc("grad.logits", kdrt.F32, N, V)
	if m.dt != kdrt.F32 {
		lg.dlogitsLow = ba.alloc("grad.logits."+m.dt.String(), m.dt, N, V)
	}
	lg.losses, lg.targets = ba.alloc("losses", kdrt.F32, N), ba.alloc("targets", kdrt.I32, N)
	lg.all = ba.all
	if ba.err != nil {
		freeAll(m.be, ba.all)
		return ba.err
	}
	m.logits = lg
	return nil
}

// prepare makes sure the activation buffers fit a B×T batch, reallocating
// only when the shape changes.
func (m *Model) prepare(B, T int) error {
	if m.acts != nil && m.acts.B == B && m.acts.T == T {
		return nil
	}
	m.freeActs()
	c := m.Config
	N, C, F := B*T, c.Hidden, c.Intermediate
	qw, kvw := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	a := &activations{B: B, T: T}
	var err error
	alloc := func(name string, dt kdrt.DType, shape ...int) *kdrt.Tensor {
		if err != nil {
			return nil
		}
		var t *kdrt.Tensor
		t, err = m.be.Alloc(name, dt, shape...)
		a.all = append(a.all, t)
		return t
	}
	f := func(name string, shape ...int) *kdrt.Tensor { return alloc(name, m.dt, shape...) }
	stat := func(name string, shape ...int) *kdrt.Tensor { return alloc(name, kdrt.F32, shape...) }
	a.ids, a.pos = alloc("ids", kdrt.I32, N), alloc("positions", kdrt.I32, N)
	a.layers = make([]layerActs, c.Layers)
	for i := range a.layers {
		la := &a.layers[i]
		la.in = f("hidden", N, C)
		la.norm1, la.norm1Mean, la.norm1Rstd = f("norm1", N, C), stat("norm1.mean", N), stat("norm1.rstd", N)
		la.q, la.k, la.v = f("q", N, qw), f("k", N, kvw), f("v", N, kvw)
		la.lse = stat("attention.lse", B, c.Heads, T)
		la.att = f("attention.out", N, qw)
		la.mid = f("residual", N, C)
		la.norm2, la.norm2Mean, la.norm2Rstd = f("norm2", N, C), stat("norm2.mean", N), stat("norm2.rstd", N)
		if c.Arch == Llama {
			la.gate = f("mlp.gate", N, F)
		}
		la.up, la.act = f("mlp.up", N, F), f("mlp.act", N, F)
	}
	a.out = f("hidden.last", N, C)
	a.normF, a.normFMean, a.normFRstd = f("norm.final", N, C), stat("norm.final.mean", N), stat("norm.final.rstd", N)
	a.tmpC = f("scratch", N, C)
	a.qkv, a.dqkv = f("qkv", N, qw+2*kvw), f("grad.qkv", N, qw+2*kvw)
	a.dres, a.dnorm, a.dnormF = f("grad.residual", N, C), f("grad.norm", N, C), f("grad.norm.final", N, C)
	a.dq, a.dk, a.dv, a.datt = f("grad.q", N, qw), f("grad.k", N, kvw), f("grad.v", N, kvw), f("grad.attention", N, qw)
	if c.Arch == Llama {
		a.dgate = f("grad.mlp.gate", N, F)
	}
	a.dup, a.dact = f("grad.mlp.up", N, F), f("grad.mlp.act", N, F)
	if err != nil {
		m.acts = a
		m.freeActs()
		return err
	}
	m.acts = a
	m.haveForward, m.haveCE = false, false
	return nil
}

func (m *Model) freeActs() {
	if m.acts == nil {
		return
	}
	freeAll(m.be, m.acts.all)
	m.acts = nil
}
