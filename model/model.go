package model

import (
	"errors"
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// Model is a transformer on one backend: its parameters, their gradients, and
// the activations of the last forward pass.
//
// Weights and activations are stored in the model's dtype (F32, or BF16 for
// mixed precision, see Storage); parameter gradients, normalization
// statistics, attention's log-sum-exps, logits and losses are F32 whatever
// it is.
type Model struct {
	Config *Config
	be     kdrt.Backend
	dt     kdrt.DType // storage of weights and activations

	params              []*Param
	byName              map[string]*Param
	embed, pos          *Param // pos: GPT-2's learned positions, else nil
	layers              []layer
	normFW, normFB      *Param
	head                *Param // the embedding itself when tied
	invFreq             *kdrt.Tensor
	grads               *kdrt.Tensor // every parameter's gradient, one buffer (ZeroGrad is one memset)
	qkv                 map[*layer]*qkvFused
	acts                *activations
	logits              *logitBufs // Forward's [N × V] logits and their gradient (only Forward makes them)
	inf                 *inferBufs // the inference forward's buffers (infer.go)
	lastInfer           bool       // the last forward was InferHidden
	ckptPrefix          string     // GPT-2's checkpoint name prefix ("transformer." or "")
	lossCount           int        // target tokens in the last forward
	haveForward, haveCE bool
	graphLog            func(string) // SetGraphLog
}

// New allocates a model with zeroed parameters on be, stored as opts say
// (F32 by default). Use InitRandom, Load or LoadDir to give it weights.
// Weights larger than be's free memory are an error that gives both sizes.
func New(cfg *Config, be kdrt.Backend, opts ...Option) (*Model, error) {
	o, err := applyOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := cfg.checkWeightMemory(be, o.dtype, o.master); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	m := &Model{Config: cfg, be: be, dt: o.dtype, byName: map[string]*Param{}, ckptPrefix: "transformer."}
	m.params, m.embed, m.pos, m.layers, m.normFW, m.normFB, m.head = cfg.structure(func(s paramSpec) *Param {
		return &Param{Name: s.name, Shape: s.shape, kind: s.kind, NoDecay: s.kind != kindMatrix}
	})
	for _, p := range m.params {
		m.byName[p.Name] = p
	}
	// The q, k, v weights are views of one buffer per layer; the others
	// have their own.
	if err := m.fuseQKV(); err != nil {
		return nil, err
	}
	for _, p := range m.params {
		var err error
		if p.W == nil {
			p.W, err = be.Alloc(p.Name, o.dtype, p.Shape...)
		}
		if err == nil && o.master {
			p.Master, err = be.Alloc("master."+p.Name, kdrt.F32, p.Shape...)
		}
		if err != nil {
			return nil, fmt.Errorf("model: allocating parameters: %w", err)
		}
	}
	if cfg.Arch == Llama {
		inv := cfg.InvFreq()
		t, err := be.Alloc("rope.inv_freq", kdrt.F32, len(inv))
		if err != nil {
			return nil, err
		}
		if err := be.Upload(t, inv); err != nil {
			return nil, err
		}
		m.invFreq = t
	}
	return m, nil
}

// Backend returns the backend the model lives on.
func (m *Model) Backend() kdrt.Backend { return m.be }

// Batch is one forward pass's input: B sequences of T tokens, row-major.
type Batch struct {
	B, T int
	// IDs are the input token ids [B·T].
	IDs []int32
	// Targets [B·T] are the next-token labels for the cross-entropy loss, with
	// runtime.IgnoreIndex where no loss is taken (prompt, padding). Nil means
	// no loss.
	Targets []int32
	// Positions [B·T] are the position ids; nil means 0…T−1 in every row.
	Positions []int32
	// KeyStart [B], when not nil, is each row's count of left-padding
	// positions, which attention then ignores (batched generation).
	KeyStart []int
}

func (m *Model) validate(b Batch) error {
	cfg := m.Config
	if b.B <= 0 || b.T <= 0 {
		return fmt.Errorf("model: batch of %d×%d tokens", b.B, b.T)
	}
	if len(b.IDs) != b.B*b.T {
		return fmt.Errorf("model: batch %d×%d has %d input ids", b.B, b.T, len(b.IDs))
	}
	if b.Targets != nil && len(b.Targets) != b.B*b.T {
		return fmt.Errorf("model: batch %d×%d has %d targets", b.B, b.T, len(b.Targets))
	}
	if b.Positions != nil && len(b.Positions) != b.B*b.T {
		return fmt.Errorf("model: batch %d×%d has %d positions", b.B, b.T, len(b.Positions))
	}
	if b.Positions == nil && b.T > cfg.MaxPositions {
		return fmt.Errorf("model: sequence of %d tokens is longer than the model allows (%d positions)", b.T, cfg.MaxPositions)
	}
	if b.KeyStart != nil && len(b.KeyStart) != b.B {
		return fmt.Errorf("model: batch of %d rows has %d key starts", b.B, len(b.KeyStart))
	}
	for i, k := range b.KeyStart {
		if k < 0 || k >= b.T {
			return fmt.Errorf("model: row %d has %d padding positions of %d", i, k, b.T)
		}
	}
	for i, p := range b.Positions {
		if p < 0 || int(p) >= cfg.MaxPositions {
			return fmt.Errorf("model: position %d at index %d is outside [0, %d)", p, i, cfg.MaxPositions)
		}
	}
	for i, id := range b.IDs {
		if id < 0 || int(id) >= cfg.Vocab {
			return fmt.Errorf("model: token id %d at index %d is outside the vocabulary [0, %d)", id, i, cfg.Vocab)
		}
	}
	for i, t := range b.Targets {
		if t != kdrt.IgnoreIndex && (t < 0 || int(t) >= cfg.Vocab) {
			return fmt.Errorf("model: target %d at index %d is outside the vocabulary [0, %d)", t, i, cfg.Vocab)
		}
	}
	return nil
}

// ForwardHidden runs the model up to the final norm and returns its output,
// the last hidden state [B·T, C] (valid until the next forward).
func (m *Model) ForwardHidden(b Batch) (*kdrt.Tensor, error) {
	m.haveForward, m.haveCE, m.lastInfer = false, false, false
	if err := m.validate(b); err != nil {
		return nil, err
	}
	if err := m.prepare(b.B, b.T); err != nil {
		return nil, err
	}
	a, be, cfg := m.acts, m.be, m.Config
	a.keyStart = b.KeyStart
	pos := b.Positions
	if pos == nil {
		pos = make([]int32, b.B*b.T)
		for i := range pos {
			pos[i] = int32(i % b.T)
		}
	}
	if err := be.UploadInt32(a.ids, b.IDs); err != nil {
		return nil, err
	}
	if err := be.UploadInt32(a.pos, pos); err != nil {
		return nil, err
	}
	x := a.layers[0].in
	be.Embedding(x, a.ids, m.embed.W)
	if m.pos != nil {
		be.Embedding(a.tmpC, a.pos, m.pos.W)
		be.Add(x, x, a.tmpC)
	}
	eps := float32(cfg.NormEps)
	// RMSNorm models fuse each block's last residual add with the next
	// norm (the next block's norm1, or the final norm): one pass, not two.
	rms := m.normFB == nil
	if rms {
		m.norm(a.layers[0].norm1, a.layers[0].norm1Mean, a.layers[0].norm1Rstd, a.layers[0].in, m.layers[0].norm1W, nil, eps)
	}
	for i := range m.layers {
		l, la := &m.layers[i], &a.layers[i]
		bufs := blockBufs{in: la.in, norm1: la.norm1, norm1Mean: la.norm1Mean, norm1Rstd: la.norm1Rstd,
			q: la.q, k: la.k, v: la.v, att: la.att, mid: la.mid, norm2: la.norm2, norm2Mean: la.norm2Mean,
			norm2Rstd: la.norm2Rstd, gate: la.gate, up: la.up, act: la.act, tmp: a.tmpC, out: a.out, pos: a.pos,
			qkv: a.qkv, norm1Done: rms}
		if i+1 < len(m.layers) {
			bufs.out = a.layers[i+1].in
		}
		if rms {
			bufs.nextNorm, bufs.nextRstd, bufs.nextW = a.normF, a.normFRstd, m.normFW
			if i+1 < len(m.layers) {
				bufs.nextNorm, bufs.nextRstd, bufs.nextW = a.layers[i+1].norm1, a.layers[i+1].norm1Rstd, m.layers[i+1].norm1W
			}
		}
		m.block(l, bufs, eps, func() { be.Attention(la.att, la.lse, la.q, la.k, la.v, m.attnParams(l)) })
	}
	if !rms {
		m.norm(a.normF, a.normFMean, a.normFRstd, a.out, m.normFW, m.normFB, eps)
	}
	m.haveForward, m.haveCE = true, false
	return a.normF, kdrt.Check(be) // no host round-trip: errors of queued work surface at the step's read
}

// Forward runs the model to logits [B·T, V] and, when the batch has targets,
// returns the mean cross-entropy over the target tokens (else NaN). It is
// the one forward that makes the [B·T × V] logits (F32, straight from the
// product's float32 accumulator); ForwardHidden, which the fused losses
// use, never does.
func (m *Model) Forward(b Batch) (loss float64, err error) {
	if _, err := m.ForwardHidden(b); err != nil {
		return 0, err
	}
	if err := m.prepareLogits(b.B * b.T); err != nil {
		return 0, err
	}
	a, lg := m.acts, m.logits
	m.be.MatMul(lg.logits, a.normF, m.head.W, false, true, 1, 0)
	if b.Targets == nil {
		return math.NaN(), m.be.Sync()
	}
	m.lossCount = 0
	for _, t := range b.Targets {
		if t != kdrt.IgnoreIndex {
			m.lossCount++
		}
	}
	if m.lossCount == 0 {
		return 0, errors.New("model: the batch has no target tokens (every target is ignored)")
	}
	if err := m.be.UploadInt32(lg.targets, b.Targets); err != nil {
		return 0, err
	}
	m.be.CrossEntropy(lg.losses, lg.logits, lg.targets)
	host := make([]float32, len(b.Targets))
	if err := m.be.Download(lg.losses, host); err != nil {
		return 0, err
	}
	var sum float64
	for _, l := range host {
		sum += float64(l)
	}
	m.haveCE = true
	return sum / float64(m.lossCount), nil
}

// Logits returns the last Forward's logits [B·T, V] (F32).
func (m *Model) Logits() *kdrt.Tensor {
	if m.logits == nil {
		return nil
	}
	return m.logits.logits
}

// Hidden returns hidden state i of the last forward, as transformers'
// output_hidden_states numbers them: i < L is the residual stream entering
// layer i (0 is the embedding output), i = L is the output of the final norm.
func (m *Model) Hidden(i int) (*kdrt.Tensor, error) {
	if m.lastInfer {
		return m.inferHidden(i)
	}
	if m.acts == nil || !m.haveForward {
		return nil, errors.New("model: no forward pass has run")
	}
	switch {
	case i >= 0 && i < len(m.layers):
		return m.acts.layers[i].in, nil
	case i == len(m.layers):
		return m.acts.normF, nil
	}
	return nil, fmt.Errorf("model: hidden state %d does not exist (the model has %d layers, states 0…%d)", i, len(m.layers), len(m.layers))
}

// Head returns the lm_head parameter [V, C] (the embedding when tied), for
// losses that compute logits themselves, a block of rows at a time.
func (m *Model) Head() *Param { return m.head }

// qkvFused is one layer's q, k and v projections as one product: w [W, C]
// and b [W] (nil without biases), W = NH·HD + 2·NKV·HD, whose row blocks are
// the q, k and v parameters' own tensors (views), and gw, gb the same over
// their gradients once ZeroGrad has made them.
type qkvFused struct{ w, b, gw, gb *kdrt.Tensor }

// fuseQKV puts each layer's q, k, v weights (and biases) into one buffer,
// so that the block computes the three projections with one GEMM and their
// gradients with two.
func (m *Model) fuseQKV() error {
	m.qkv = map[*layer]*qkvFused{}
	for i := range m.layers {
		l := &m.layers[i]
		parts := []linear{l.q, l.k, l.v}
		f := &qkvFused{}
		var err error
		if f.w, err = m.fuse(fmt.Sprintf("layer%d.qkv.weight", i), []*Param{l.q.W, l.k.W, l.v.W}); err != nil {
			return err
		}
		switch {
		case parts[0].B != nil && parts[1].B != nil && parts[2].B != nil:
			if f.b, err = m.fuse(fmt.Sprintf("layer%d.qkv.bias", i), []*Param{l.q.B, l.k.B, l.v.B}); err != nil {
				return err
			}
		case parts[0].B != nil || parts[1].B != nil || parts[2].B != nil:
			return fmt.Errorf("model: layer %d has biases on some of q, k, v but not all", i)
		}
		m.qkv[l] = f
	}
	return nil
}

// fuse allocates one buffer for ps stacked along their first dimension and
// makes each parameter's value a view of its rows.
func (m *Model) fuse(name string, ps []*Param) (*kdrt.Tensor, error) {
	shape := append([]int(nil), ps[0].Shape...)
	shape[0] = 0
	for _, p := range ps {
		shape[0] += p.Shape[0]
	}
	buf, err := m.be.Alloc(name, m.dt, shape...)
	if err != nil {
		return nil, fmt.Errorf("model: allocating parameters: %w", err)
	}
	off := 0
	for _, p := range ps {
		v := m.be.Slice(buf, off, off+p.Shape[0])
		v.Shape, v.Name = append([]int(nil), p.Shape...), p.Name
		p.W = v
		off += p.Shape[0]
	}
	return buf, nil
}

// ZeroGrad allocates the gradients on first use and sets them to zero. The
// gradients are views into one buffer (each starting 256-byte aligned, the
// fused q/k/v parameters' adjacent as their values are), so that zeroing
// them is one operation, not one per parameter.
func (m *Model) ZeroGrad() error {
	if m.grads != nil {
		m.be.Zero(m.grads)
		return nil
	}
	const align = 64 // elements: 256 bytes of F32
	// Groups laid out back to back: a fused triple, or one parameter.
	var groups [][]*Param
	grouped := map[*Param]bool{}
	for i := range m.layers {
		l := &m.layers[i]
		for _, g := range [][]*Param{{l.q.W, l.k.W, l.v.W}, {l.q.B, l.k.B, l.v.B}} {
			if g[0] != nil {
				groups = append(groups, g)
				for _, p := range g {
					grouped[p] = true
				}
			}
		}
	}
	for _, p := range m.params {
		if !grouped[p] {
			groups = append(groups, []*Param{p})
		}
	}
	offs, total := map[*Param]int{}, 0
	for _, g := range groups {
		for _, p := range g {
			offs[p] = total
			total += kdrt.Numel(p.Shape)
		}
		total = (total + align - 1) / align * align
	}
	buf, err := m.be.Alloc("grads", kdrt.F32, total)
	if err != nil {
		return fmt.Errorf("model: allocating gradients: %w", err)
	}
	m.grads = buf
	view := func(off int, name string, shape []int) *kdrt.Tensor {
		g := m.be.Slice(buf, off, off+kdrt.Numel(shape))
		g.Shape, g.Name = append([]int(nil), shape...), name
		return g
	}
	for _, p := range m.params {
		p.G = view(offs[p], "grad."+p.Name, p.Shape)
	}
	for l, f := range m.qkv {
		f.gw = view(offs[l.q.W], "grad."+f.w.Name, f.w.Shape)
		if f.b != nil {
			f.gb = view(offs[l.q.B], "grad."+f.b.Name, f.b.Shape)
		}
	}
	return nil
}

// Backward accumulates into every parameter's gradient the gradient of the
// mean cross-entropy loss of the last Forward.
func (m *Model) Backward() error {
	if !m.haveCE {
		return errors.New("model: Backward needs a Forward with targets first")
	}
	if err := m.ensureGrads(); err != nil {
		return err
	}
	a, lg, be := m.acts, m.logits, m.be
	be.Zero(lg.dlogits)
	be.CrossEntropyBackward(lg.dlogits, lg.logits, lg.targets, nil, 1/float32(m.lossCount))
	// logits = normF · headᵀ. The products take operands of one dtype: under
	// BF16 storage the F32 logits' gradient is rounded to bf16 first, as
	// autocast rounds the gradient flowing into a bf16 matmul.
	dl := lg.dlogits
	if lg.dlogitsLow != nil {
		be.Cast(lg.dlogitsLow, lg.dlogits)
		dl = lg.dlogitsLow
	}
	be.MatMul(a.dnormF, dl, m.head.W, false, false, 1, 0)
	be.MatMul(m.head.G, dl, a.normF, true, false, 1, 1)
	return m.BackwardHidden(a.dnormF)
}

// HiddenGrad is the gradient of a loss with respect to hidden state Index
// (numbered as Hidden numbers them), for losses on intermediate layers such as
// feature distillation.
type HiddenGrad struct {
	Index int
	Grad  *kdrt.Tensor // [B·T, C]
}

// BackwardHidden accumulates parameter gradients from dh [B·T, C], the
// gradient of a loss with respect to ForwardHidden's output (nil: none), plus
// the gradients of losses on other hidden states. It does not touch the
// lm_head: a loss that computes its own logits adds that gradient.
func (m *Model) BackwardHidden(dh *kdrt.Tensor, extra ...HiddenGrad) error {
	if !m.haveForward {
		return errors.New("model: BackwardHidden needs a forward pass first")
	}
	if err := m.ensureGrads(); err != nil {
		return err
	}
	a, be := m.acts, m.be
	L := len(m.layers)
	at := make([][]*kdrt.Tensor, L+1)
	for _, e := range extra {
		if e.Index < 0 || e.Index > L {
			return fmt.Errorf("model: gradient for hidden state %d, which does not exist (states 0…%d)", e.Index, L)
		}
		if e.Grad == nil || e.Grad.Numel() != a.out.Numel() {
			return fmt.Errorf("model: gradient %v for hidden state %d should have %d elements", e.Grad, e.Index, a.out.Numel())
		}
		at[e.Index] = append(at[e.Index], e.Grad)
	}
	be.Zero(a.dres)
	if dh != nil {
		m.normBackward(a.dres, m.normFW, m.normFB, dh, a.out, a.normFMean, a.normFRstd)
	}
	for _, g := range at[L] { // the final norm's backward is linear in its gradient
		m.normBackward(a.dres, m.normFW, m.normFB, g, a.out, a.normFMean, a.normFRstd)
	}
	for i := L - 1; i >= 0; i-- {
		l, la := &m.layers[i], &a.layers[i]
		// MLP: out = mid + down(act(up(norm2(mid)))). The first product
		// into each scratch gradient overwrites it (β = 0): no memset.
		m.linearBackward(a.dact, a.dres, la.act, l.down, 0)
		if m.Config.Arch == Llama {
			be.SwiGLUBackward(a.dgate, a.dup, a.dact, la.gate, la.up) // writes
			m.linearBackward(a.dnorm, a.dgate, la.norm2, l.gate, 0)
			m.linearBackward(a.dnorm, a.dup, la.norm2, l.up, 1)
		} else {
			be.Zero(a.dup)
			be.GELUBackward(a.dup, a.dact, la.up)
			m.linearBackward(a.dnorm, a.dup, la.norm2, l.up, 0)
		}
		m.normBackward(a.dres, l.norm2W, l.norm2B, a.dnorm, la.mid, la.norm2Mean, la.norm2Rstd)
		// Attention: mid = in + o(attention(rope(q), rope(k), v)).
		m.linearBackward(a.datt, a.dres, la.att, l.o, 0)
		be.AttentionBackward(a.dq, a.dk, a.dv, a.datt, la.att, la.lse, la.q, la.k, la.v, m.attnParams(l)) // writes
		// RoPE's inverse and the q/k/v bias gradient in one pass, into the
		// fused projection's gradient; then its two products.
		f := m.qkv[l]
		be.QKVBiasRoPEBackward(a.dqkv, f.gb, a.dq, a.dk, a.dv, a.pos, m.invFreq)
		be.MatMul(a.dnorm, a.dqkv, f.w, false, false, 1, 0)
		be.MatMul(f.gw, a.dqkv, la.norm1, true, false, 1, 1)
		m.normBackward(a.dres, l.norm1W, l.norm1B, a.dnorm, la.in, la.norm1Mean, la.norm1Rstd)
		// a.dres is now the gradient at hidden state i, the layer's input.
		for _, g := range at[i] {
			be.Add(a.dres, a.dres, g)
		}
	}
	be.EmbeddingBackward(m.embed.G, a.dres, a.ids)
	if m.pos != nil {
		be.EmbeddingBackward(m.pos.G, a.dres, a.pos)
	}
	return kdrt.Check(be)
}

func (m *Model) ensureGrads() error {
	if m.params[0].G == nil {
		return m.ZeroGrad()
	}
	return nil
}

func (m *Model) attnParams(l *layer) kdrt.AttentionParams {
	c := m.Config
	return kdrt.AttentionParams{B: m.acts.B, T: m.acts.T, NH: c.Heads, NKV: c.KVHeads, HD: c.HeadDim,
		Scale: float32(1 / math.Sqrt(float64(c.HeadDim))), Window: l.window, KeyStart: m.acts.keyStart}
}

// linear computes y = x·Wᵀ (+ b).
func (m *Model) linear(y, x *kdrt.Tensor, l linear) {
	m.be.MatMul(y, x, l.W.W, false, true, 1, 0)
	if l.B != nil {
		m.be.AddBias(y, l.B.W)
	}
}

// linearBackward computes dx = dy·W + beta·dx (beta 0: overwrite, 1:
// accumulate) and accumulates dW += dyᵀ·x and db += Σ dy.
func (m *Model) linearBackward(dx, dy, x *kdrt.Tensor, l linear, beta float32) {
	m.be.MatMul(dx, dy, l.W.W, false, false, 1, beta)
	m.be.MatMul(l.W.G, dy, x, true, false, 1, 1)
	if l.B != nil {
		m.be.BiasBackward(l.B.G, dy)
	}
}

// norm is RMSNorm for the Llama family and LayerNorm (with bias) for GPT-2.
func (m *Model) norm(out, mean, rstd, x *kdrt.Tensor, w, b *Param, eps float32) {
	if b == nil {
		m.be.RMSNorm(out, rstd, x, w.W, eps)
	} else {
		m.be.LayerNorm(out, mean, rstd, x, w.W, b.W, eps)
	}
}

func (m *Model) normBackward(dx *kdrt.Tensor, w, b *Param, dout, x, mean, rstd *kdrt.Tensor) {
	if b == nil {
		m.be.RMSNormBackward(dx, w.G, dout, x, w.W, rstd)
	} else {
		m.be.LayerNormBackward(dx, w.G, b.G, dout, x, w.W, mean, rstd)
	}
}

// TensorBytes is the memory the model's tensors take: parameters (and
// their master copies), gradients, and the buffers of the current batch
// shapes (training activations, Forward's logits, the inference forward's).
func (m *Model) TensorBytes() int {
	n := 0
	for _, p := range m.params {
		n += p.W.Bytes()
		if p.Master != nil {
			n += p.Master.Bytes()
		}
	}
	if m.grads != nil {
		n += m.grads.Bytes()
	}
	var bufs []*kdrt.Tensor
	if m.acts != nil {
		bufs = append(bufs, m.acts.all...)
	}
	if m.logits != nil {
		bufs = append(bufs, m.logits.all...)
	}
	if m.inf != nil {
		bufs = append(bufs, m.inf.all...)
	}
	for _, t := range bufs {
		n += t.Bytes()
	}
	return n
}

// blockBufs are the tensors one transformer block reads and writes. The
// training forward gives each layer its own (the backward needs them); the
// generator's decode step reuses one set, with in, mid and out the same
// residual row.
type blockBufs struct {
	in, norm1, norm1Mean, norm1Rstd  *kdrt.Tensor
	q, k, v, att                     *kdrt.Tensor
	mid, norm2, norm2Mean, norm2Rstd *kdrt.Tensor
	gate, up, act, tmp, out          *kdrt.Tensor
	pos                              *kdrt.Tensor // I32 position ids, for RoPE
	qkv                              *kdrt.Tensor // [N, W] the fused q/k/v projection (nil: three products)
	// norm1Done says norm1 (and its statistics) already hold norm1(in): the
	// previous block's fused add-and-norm wrote them (RMSNorm models).
	norm1Done bool
	// nextNorm, when set, receives RMSNorm(out)·nextW (statistics in
	// nextRstd), fused with the block's last residual add.
	nextNorm, nextRstd *kdrt.Tensor
	nextW              *Param
}

// block runs one transformer block: pre-norm attention and MLP, each added to
// the residual stream. attend fills b.att from b.q, b.k, b.v (rotated).
func (m *Model) block(l *layer, b blockBufs, eps float32, attend func()) {
	be := m.be
	if !b.norm1Done {
		m.norm(b.norm1, b.norm1Mean, b.norm1Rstd, b.in, l.norm1W, l.norm1B, eps)
	}
	if f := m.qkv[l]; b.qkv != nil {
		// The three projections as one product, then its split, bias and
		// RoPE in one pass.
		be.MatMul(b.qkv, b.norm1, f.w, false, true, 1, 0)
		be.QKVBiasRoPE(b.q, b.k, b.v, b.qkv, f.b, b.pos, m.invFreq)
	} else {
		// Without the scratch (the generator's decode step): three products.
		m.linear(b.q, b.norm1, l.q)
		m.linear(b.k, b.norm1, l.k)
		m.linear(b.v, b.norm1, l.v)
		if m.invFreq != nil {
			be.RoPE(b.q, b.pos, m.invFreq)
			be.RoPE(b.k, b.pos, m.invFreq)
		}
	}
	attend()
	m.linear(b.tmp, b.att, l.o)
	if l.norm2B == nil {
		be.AddRMSNorm(b.mid, b.norm2, b.norm2Rstd, b.in, b.tmp, l.norm2W.W, eps)
	} else {
		be.Add(b.mid, b.in, b.tmp)
		m.norm(b.norm2, b.norm2Mean, b.norm2Rstd, b.mid, l.norm2W, l.norm2B, eps)
	}
	m.linear(b.up, b.norm2, l.up)
	if m.Config.Arch == Llama {
		m.linear(b.gate, b.norm2, l.gate)
		be.SwiGLU(b.act, b.gate, b.up)
	} else {
		be.GELU(b.act, b.up)
	}
	m.linear(b.tmp, b.act, l.down)
	if b.nextNorm != nil {
		be.AddRMSNorm(b.out, b.nextNorm, b.nextRstd, b.mid, b.tmp, b.nextW.W, eps)
	} else {
		be.Add(b.out, b.mid, b.tmp)
	}
}
