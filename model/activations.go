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

// activations are the buffers of a forward and backward at one batch shape.
// The backward's scratch gradients are shared by all layers. Every tensor
// is a view of the first elements of a flat buffer (all): a batch of fewer
// tokens (B·T ≤ capN) reuses the buffers of the largest batch so far, each
// tensor laid out contiguously in its own shape ([B·T, C] rows, lse
// [B, NH, T]) at the start of its buffer, so that the kernels see ordinary
// tensors and a step of a shorter batch allocates nothing.
type activations struct {
	B, T                        int
	capN                        int            // the tokens the buffers hold
	all                         []*kdrt.Tensor // the flat buffers, in the order prepare makes them
	keyStart                    []int          // the last forward's left padding (nil: none)
	ids, pos, targets           *kdrt.Tensor   // I32 [N]
	layers                      []layerActs
	out                         *kdrt.Tensor // [N, C] residual stream after the last layer
	normF, normFMean, normFRstd *kdrt.Tensor
	logits, losses              *kdrt.Tensor // [N, V], [N]
	tmpC                        *kdrt.Tensor // [N, C] scratch: projections' outputs
	qkv, dqkv                   *kdrt.Tensor // [N, NH·HD + 2·NKV·HD] scratch: the fused q/k/v projection, its gradient

	dres, dnorm, dnormF *kdrt.Tensor // [N, C]
	dq, dk, dv, datt    *kdrt.Tensor
	dgate, dup, dact    *kdrt.Tensor // [N, F]
	dlogits             *kdrt.Tensor // [N, V]
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
	var err error
	alloc := func(name string, dt kdrt.DType, shape ...int) *kdrt.Tensor {
		if err != nil {
			return nil
		}
		var t *kdrt.Tensor
		t, err = va.alloc(name, dt, shape...)
		return t
	}
	f := func(name string, shape ...int) *kdrt.Tensor { return alloc(name, kdrt.F32, shape...) }
	a.ids, a.pos, a.targets = alloc("ids", kdrt.I32, N), alloc("positions", kdrt.I32, N), alloc("targets", kdrt.I32, N)
	a.layers = make([]layerActs, c.Layers)
	for i := range a.layers {
		la := &a.layers[i]
		la.in = f("hidden", N, C)
		la.norm1, la.norm1Mean, la.norm1Rstd = f("norm1", N, C), f("norm1.mean", N), f("norm1.rstd", N)
		la.q, la.k, la.v = f("q", N, qw), f("k", N, kvw), f("v", N, kvw)
		la.lse = f("attention.lse", B, c.Heads, T)
		la.att = f("attention.out", N, qw)
		la.mid = f("residual", N, C)
		la.norm2, la.norm2Mean, la.norm2Rstd = f("norm2", N, C), f("norm2.mean", N), f("norm2.rstd", N)
		if c.Arch == Llama {
			la.gate = f("mlp.gate", N, F)
		}
		la.up, la.act = f("mlp.up", N, F), f("mlp.act", N, F)
	}
	a.out = f("hidden.last", N, C)
	a.normF, a.normFMean, a.normFRstd = f("norm.final", N, C), f("norm.final.mean", N), f("norm.final.rstd", N)
	a.logits, a.losses = f("logits", N, c.Vocab), f("losses", N)
	a.tmpC = f("scratch", N, C)
	a.qkv, a.dqkv = f("qkv", N, qw+2*kvw), f("grad.qkv", N, qw+2*kvw)
	a.dres, a.dnorm, a.dnormF = f("grad.residual", N, C), f("grad.norm", N, C), f("grad.norm.final", N, C)
	a.dq, a.dk, a.dv, a.datt = f("grad.q", N, qw), f("grad.k", N, kvw), f("grad.v", N, kvw), f("grad.attention", N, qw)
	if c.Arch == Llama {
		a.dgate = f("grad.mlp.gate", N, F)
	}
	a.dup, a.dact = f("grad.mlp.up", N, F), f("grad.mlp.act", N, F)
	a.dlogits = f("grad.logits", N, c.Vocab)
	a.all = va.bufs
	if va.reuse != nil {
		a.all = va.reuse
	}
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
	for _, t := range m.acts.all {
		if t != nil {
			m.be.Free(t)
		}
	}
	m.acts = nil
}
