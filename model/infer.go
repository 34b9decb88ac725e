package model

import (
	"errors"
	"fmt"
	"math"
	"slices"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// The inference forward: a model run without gradients (a distillation
// teacher, DPO's frozen reference, evaluation, generation's prompt, the
// teacher cache) keeps no activations for a backward. It holds one residual
// stream and one layer's worth of buffers, which every layer reuses — a
// block reads its input from the residual buffer and adds its output into
// the same buffer, as the decode step does — so its memory does not grow
// with the number of layers. A training forward (ForwardHidden) keeps every
// layer's activations instead.

// inferBufs are the inference forward's buffers at one batch shape: views
// of flat buffers (all) holding capN tokens, which a batch of fewer tokens
// reuses as the training activations do (the teacher of a run with length
// buckets allocates nothing after its largest batch).
type inferBufs struct {
	B, T, capN    int
	ids, pos      *kdrt.Tensor // I32 [N]
	x, h, tmp     *kdrt.Tensor // [N, C]: the residual stream, a norm's output, a projection's output
	mean, rstd    *kdrt.Tensor // F32 [N]: the norms' statistics (kept by no one)
	q, k, v, att  *kdrt.Tensor // [N, NH·HD], [N, NKV·HD] ×2, [N, NH·HD]
	qkv           *kdrt.Tensor // [N, NH·HD + 2·NKV·HD]
	lse           *kdrt.Tensor // F32 [B, NH, T]
	gate, up, act *kdrt.Tensor // [N, F]; gate only for SwiGLU
	normF         *kdrt.Tensor // [N, C] the output
	kept          map[int]*kdrt.Tensor
	keyStart      []int
	all           []*kdrt.Tensor
}

func (m *Model) prepareInfer(B, T int) error {
	if m.inf != nil && m.inf.B == B && m.inf.T == T {
		return nil
	}
	va := &viewAlloc{be: m.be}
	capN := B * T
	if m.inf != nil && B*T <= m.inf.capN {
		// The kept hidden states are [N, C]: infer makes them again at
		// the new shape.
		for i, t := range m.inf.kept {
			m.be.Free(t)
			delete(m.inf.kept, i)
		}
		va.reuse, capN = m.inf.all, m.inf.capN
	} else {
		m.freeInfer()
	}
	c := m.Config
	N, C, F := B*T, c.Hidden, c.Intermediate
	qw, kvw := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	f := func(name string, shape ...int) *kdrt.Tensor { return va.get(name, m.dt, shape...) }
	in := &inferBufs{B: B, T: T, capN: capN, kept: map[int]*kdrt.Tensor{}}
	in.ids, in.pos = va.get("infer.ids", kdrt.I32, N), va.get("infer.positions", kdrt.I32, N)
	in.x, in.h, in.tmp = f("infer.hidden", N, C), f("infer.norm", N, C), f("infer.scratch", N, C)
	in.mean, in.rstd = va.get("infer.norm.mean", kdrt.F32, N), va.get("infer.norm.rstd", kdrt.F32, N)
	in.q, in.k, in.v, in.att = f("infer.q", N, qw), f("infer.k", N, kvw), f("infer.v", N, kvw), f("infer.attention.out", N, qw)
	in.qkv = f("infer.qkv", N, qw+2*kvw)
	in.lse = va.get("infer.attention.lse", kdrt.F32, B, c.Heads, T)
	if c.Arch == Llama {
		in.gate = f("infer.mlp.gate", N, F)
	}
	in.up, in.act = f("infer.mlp.up", N, F), f("infer.mlp.act", N, F)
	in.normF = f("infer.norm.final", N, C)
	in.all = va.buffers()
	if va.err != nil {
		freeAll(m.be, in.all)
		m.inf = nil
		m.lastInfer = false
		return va.err
	}
	m.inf = in
	return nil
}

func (m *Model) freeInfer() {
	if m.inf == nil {
		return
	}
	freeAll(m.be, m.inf.all)
	for _, t := range m.inf.kept {
		m.be.Free(t)
	}
	m.inf = nil
	m.lastInfer = false
}

// ReleaseBuffers frees the buffers of every batch shape (training
// activations, Forward's logits, the inference forward's); the next forward
// allocates them again. Parameters, master weights and gradients stay.
func (m *Model) ReleaseBuffers() {
	m.freeActs()
	if m.logits != nil {
		freeAll(m.be, m.logits.all)
		m.logits = nil
	}
	m.freeInfer()
	m.haveForward, m.haveCE = false, false
}

// InferHidden runs the model without gradients up to the final norm and
// returns its output [B·T, C] (valid until the next forward), keeping no
// activations for a backward: its buffers are one layer's, reused by every
// layer. The hidden states numbered in keep (as Hidden numbers them) are
// copied aside, for Hidden to return. BackwardHidden cannot follow it.
func (m *Model) InferHidden(b Batch, keep ...int) (*kdrt.Tensor, error) {
	return m.infer(b, keep, nil)
}

// infer is InferHidden; onKV, when not nil, is called for each layer with
// its keys and values (rotated) [N, NKV·HD] once they are computed (the
// generator fills its cache from them).
func (m *Model) infer(b Batch, keep []int, onKV func(layer int, k, v *kdrt.Tensor)) (*kdrt.Tensor, error) {
	m.lastInfer, m.haveForward, m.haveCE = false, false, false
	if err := m.validate(b); err != nil {
		return nil, err
	}
	L := len(m.layers)
	for _, i := range keep {
		if i < 0 || i > L {
			return nil, fmt.Errorf("model: hidden state %d does not exist (the model has %d layers, states 0…%d)", i, L, L)
		}
	}
	if err := m.prepareInfer(b.B, b.T); err != nil {
		return nil, err
	}
	in, be, cfg := m.inf, m.be, m.Config
	for i, t := range in.kept {
		if !slices.Contains(keep, i) {
			be.Free(t)
			delete(in.kept, i)
		}
	}
	for _, i := range keep {
		if in.kept[i] == nil {
			t, err := be.Alloc(fmt.Sprintf("infer.hidden%d", i), m.dt, b.B*b.T, cfg.Hidden)
			if err != nil {
				return nil, err
			}
			in.kept[i] = t
		}
	}
	in.keyStart = b.KeyStart
	pos := b.Positions
	if pos == nil {
		pos = make([]int32, b.B*b.T)
		for i := range pos {
			pos[i] = int32(i % b.T)
		}
	}
	if err := be.UploadInt32(in.ids, b.IDs); err != nil {
		return nil, err
	}
	if err := be.UploadInt32(in.pos, pos); err != nil {
		return nil, err
	}
	be.Embedding(in.x, in.ids, m.embed.W)
	if m.pos != nil {
		be.Embedding(in.tmp, in.pos, m.pos.W)
		be.Add(in.x, in.x, in.tmp)
	}
	eps := float32(cfg.NormEps)
	rms := m.normFB == nil
	if rms {
		m.norm(in.h, in.mean, in.rstd, in.x, m.layers[0].norm1W, nil, eps)
	}
	ap := kdrt.AttentionParams{B: b.B, T: b.T, NH: cfg.Heads, NKV: cfg.KVHeads, HD: cfg.HeadDim,
		Scale: float32(1 / math.Sqrt(float64(cfg.HeadDim))), KeyStart: b.KeyStart}
	for i := range m.layers {
		l := &m.layers[i]
		if t := in.kept[i]; t != nil {
			be.Copy(t, in.x)
		}
		bufs := blockBufs{in: in.x, norm1: in.h, norm1Mean: in.mean, norm1Rstd: in.rstd,
			q: in.q, k: in.k, v: in.v, att: in.att, mid: in.x, norm2: in.h, norm2Mean: in.mean,
			norm2Rstd: in.rstd, gate: in.gate, up: in.up, act: in.act, tmp: in.tmp, out: in.x, pos: in.pos,
			qkv: in.qkv, norm1Done: rms}
		if rms {
			bufs.nextNorm, bufs.nextRstd, bufs.nextW = in.normF, in.rstd, m.normFW
			if i+1 < len(m.layers) {
				bufs.nextNorm, bufs.nextW = in.h, m.layers[i+1].norm1W
			}
		}
		li, p := i, ap
		p.Window = l.window
		m.block(l, bufs, eps, func() {
			if onKV != nil {
				onKV(li, in.k, in.v)
			}
			be.Attention(in.att, in.lse, in.q, in.k, in.v, p)
		})
	}
	if !rms {
		m.norm(in.normF, in.mean, in.rstd, in.x, m.normFW, m.normFB, eps)
	}
	if t := in.kept[L]; t != nil {
		be.Copy(t, in.normF)
	}
	m.lastInfer = true
	return in.normF, kdrt.Check(be) // no host round-trip: errors of queued work surface at the step's read
}

// inferHidden is Hidden after an inference forward: the states it kept.
func (m *Model) inferHidden(i int) (*kdrt.Tensor, error) {
	if t := m.inf.kept[i]; t != nil {
		return t, nil
	}
	if i < 0 || i > len(m.layers) {
		return nil, fmt.Errorf("model: hidden state %d does not exist (the model has %d layers, states 0…%d)", i, len(m.layers), len(m.layers))
	}
	return nil, fmt.Errorf("model: hidden state %d was not kept by the inference forward (pass it to InferHidden)", i)
}

// HeadLogits computes dst = h·headᵀ, F32 [R, V], for rows h [R, C] of a
// forward's output (InferHidden's or ForwardHidden's, or a Slice of it): the
// logits of those rows in float32 from the product's accumulator, without
// the other rows'.
func (m *Model) HeadLogits(dst, h *kdrt.Tensor) error {
	if dst.DType != kdrt.F32 || dst.Rows() != h.Rows() || dst.Cols() != m.Config.Vocab || h.Cols() != m.Config.Hidden {
		return fmt.Errorf("model: logits %v of hidden states %v: want F32 [%d %d]", dst, h, h.Rows(), m.Config.Vocab)
	}
	if h.DType != m.dt {
		return errors.New("model: hidden states of another dtype than the model's")
	}
	m.be.MatMul(dst, h, m.head.W, false, true, 1, 0)
	return nil
}
