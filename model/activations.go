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
// own, logitBufs). Every tensor is a view of the first elements of a flat
// buffer (all): a batch of fewer tokens (B·T ≤ capN) reuses the buffers of
// the largest batch so far, each tensor laid out contiguously in its own
// shape ([B·T, C] rows, lse [B, NH, T]) at the start of its buffer, so that
// the kernels see ordinary tensors and a step of a shorter batch allocates
// nothing.
type activations struct {
	B, T                        int
	capN                        int            // the tokens the buffers hold
	all                         []*kdrt.Tensor // the flat buffers, in the order prepare makes them
	keyStart                    []int          // the last forward's left padding (nil: none)
	ids, pos                    *kdrt.Tensor   // I32 [N]
	layers                      []layerActs
	out                         *kdrt.Tensor // [N, C] residual stream after the last layer
	normF, normFMean, normFRstd *kdrt.Tensor
	tmpC                        *kdrt.Tensor // [N, C] scratch: projections' outputs
	qkv, dqkv                   *kdrt.Tensor // [N, NH·HD + 2·NKV·HD] scratch: the fused q/k/v projection, its gradient

	dres, dnorm, dnormF *kdrt.Tensor // [N, C]
	dq, dk, dv, datt    *kdrt.Tensor
	dgate, dup, dact    *kdrt.Tensor // [N, F]
}

// logitBufs are Forward's: the logits of every row and, for Backward,
// their gradient (F32), and the gradient rounded to the storage dtype when
// that is BF16 (the operand of the head's products). Like the activations
// they are views of flat buffers (all) holding capN rows, which a batch of
// fewer rows reuses.
type logitBufs struct {
	N, capN         int
	logits, dlogits *kdrt.Tensor // F32 [N, V]
	dlogitsLow      *kdrt.Tensor // BF16 [N, V], or nil under F32 storage
	losses          *kdrt.Tensor // F32 [N]
	targets         *kdrt.Tensor // I32 [N]
	all             []*kdrt.Tensor
}

func freeAll(be kdrt.Backend, ts []*kdrt.Tensor) {
	for _, t := range ts {
		if t != nil {
			be.Free(t)
		}
	}
}

// prepareLogits makes sure Forward's logit buffers fit N rows: at most the
// rows of the largest so far get views of its buffers, more new buffers.
func (m *Model) prepareLogits(N int) error {
	if m.logits != nil && m.logits.N == N {
		return nil
	}
	va := &viewAlloc{be: m.be}
	capN := N
	if m.logits != nil && N <= m.logits.capN {
		va.reuse, capN = m.logits.all, m.logits.capN
	} else if m.logits != nil {
		freeAll(m.be, m.logits.all)
		m.logits = nil
	}
	V := m.Config.Vocab
	lg := &logitBufs{N: N, capN: capN}
	lg.logits, lg.dlogits = va.get("logits", kdrt.F32, N, V), va.get("grad.logits", kdrt.F32, N, V)
	if m.dt != kdrt.F32 {
		lg.dlogitsLow = va.get("grad.logits."+m.dt.String(), m.dt, N, V)
	}
	lg.losses, lg.targets = va.get("losses", kdrt.F32, N), va.get("targets", kdrt.I32, N)
	lg.all = va.buffers()
	if va.err != nil {
		freeAll(m.be, lg.all)
		m.logits = nil
		return va.err
	}
	m.logits = lg
	return nil
}

// prepare makes sure the activation buffers fit a B×T batch: a batch of at
// most the tokens of the largest so far gets views of its buffers, a larger
// one new buffers.
func (m *Model) prepare(B, T int) error {
	if m.acts != nil && m.acts.B == B && m.acts.T == T {
		return nil
	}
	va := &viewAlloc{be: m.be}
	capN := B * T
	if m.acts != nil && B*T <= m.acts.capN {
		va.reuse, capN = m.acts.all, m.acts.capN
	} else {
		m.freeActs()
	}
	c := m.Config
	N, C, F := B*T, c.Hidden, c.Intermediate
	qw, kvw := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	a := &activations{B: B, T: T, capN: capN}
	f := func(name string, shape ...int) *kdrt.Tensor { return va.get(name, m.dt, shape...) }
	stat := func(name string, shape ...int) *kdrt.Tensor { return va.get(name, kdrt.F32, shape...) }
	a.ids, a.pos = va.get("ids", kdrt.I32, N), va.get("positions", kdrt.I32, N)
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
	a.all = va.buffers()
	if va.err != nil {
		m.acts = a
		m.freeActs()
		return va.err
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
