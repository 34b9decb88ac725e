package model

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// EngineConfig sizes an Engine. Zero fields take the defaults.
type EngineConfig struct {
	// MaxRows is how many sequences are decoded together (default 16).
	MaxRows int
	// StepTokens bounds the tokens of one forward pass: the next token of
	// every decoding sequence plus chunks of the prompts being read in
	// (default 256; at least MaxRows). It sizes the step's buffers.
	StepTokens int
	// KVBytes bounds the memory of all sequences' key/value caches
	// (default 1 GiB). A cache grows with its sequence; when the budget is
	// spent, the newest sequence gives its cache up and is recomputed
	// later, which changes nothing in its result.
	KVBytes int64
}

// DefaultKVBytes is EngineConfig.KVBytes's default.
const DefaultKVBytes = 1 << 30

// Engine generates many sequences at once with continuous batching: each
// Step is one forward pass over the next token of every sequence that is
// decoding plus chunks of the prompts of sequences that joined since
// (prefill), so a new sequence starts between two steps of the others
// without waiting for them, and a finished one frees its row at once.
// Every sequence has its own key/value cache, positions and sampling
// parameters; its tokens are those Generate gives it alone. A prompt read in
// one chunk goes through the same ops as Generate's (bit for bit on the
// CPU); the later chunks of a longer one attend through the decoding
// step's attention, which rounds differently (~1e-6).
//
// An Engine is not safe for concurrent use: one goroutine adds, steps and
// reads the sequences.
type Engine struct {
	m       *Model
	cfg     EngineConfig
	rows    []*Seq // admitted, oldest first
	kvBytes int64  // capacity held by the rows' caches
	peakKV  int64
	order   int64
	// minCache is the capacity a cache starts with (64 positions; tests
	// lower it to make caches grow).
	minCache int

	x, h, tmp, normF, sel *kdrt.Tensor // [StepTokens, C]; sel [MaxRows, C]
	mean, rstd            *kdrt.Tensor // [StepTokens]
	q, k, v, att          *kdrt.Tensor
	gate, up, act         *kdrt.Tensor // [StepTokens, F]
	logits                *kdrt.Tensor // [MaxRows, V]
	lse                   *kdrt.Tensor // [NH·StepTokens]: a whole first chunk's attention log-sum-exps
	id, pos               *kdrt.Tensor // I32 [StepTokens]
	host                  []float32
	all                   []*kdrt.Tensor
}

// Seq is one sequence of an Engine: a prompt, its parameters, and the
// generation so far.
type Seq struct {
	Prompt []int32
	Params GenerateParams
	// Gen grows by one token per Step once the prompt is in (Finish is set
	// when Done).
	Gen Generation
	// Done is set when the sequence has finished (a stop token, Params.Stop,
	// or Params.MaxTokens) or was cancelled.
	Done bool

	tokens []int32 // prompt and generated tokens
	fed    int     // tokens whose keys and values are in the cache
	kc, vc []*kdrt.Tensor
	cap    int // positions the cache holds
	rng    *rand.Rand
	order  int64
	// preempted counts the times the sequence gave its cache up.
	preempted int
}

// Preempted is how many times the sequence gave its cache up to others and
// was recomputed.
func (s *Seq) Preempted() int { return s.preempted }

// NewEngine allocates an engine's step buffers (a few MB); the caches are
// allocated as sequences arrive.
func (m *Model) NewEngine(cfg EngineConfig) (*Engine, error) {
	if cfg.MaxRows <= 0 {
		cfg.MaxRows = 16
	}
	if cfg.StepTokens <= 0 {
		cfg.StepTokens = 256
	}
	cfg.StepTokens = max(cfg.StepTokens, cfg.MaxRows)
	if cfg.KVBytes <= 0 {
		cfg.KVBytes = DefaultKVBytes
	}
	c := m.Config
	e := &Engine{m: m, cfg: cfg, host: make([]float32, cfg.MaxRows*c.Vocab), minCache: 64}
	var err error
	alloc := func(name string, dt kdrt.DType, shape ...int) *kdrt.Tensor {
		if err != nil {
			return nil
		}
		var t *kdrt.Tensor
		t, err = m.be.Alloc(name, dt, shape...)
		e.all = append(e.all, t)
		return t
	}
	N, C, F := cfg.StepTokens, c.Hidden, c.Intermediate
	kv, qw := c.KVHeads*c.HeadDim, c.Heads*c.HeadDim
	e.x, e.h, e.tmp, e.normF = alloc("engine.x", m.dt, N, C), alloc("engine.h", m.dt, N, C), alloc("engine.tmp", m.dt, N, C), alloc("engine.normF", m.dt, N, C)
	e.sel = alloc("engine.sel", m.dt, cfg.MaxRows, C)
	e.mean, e.rstd = alloc("engine.mean", kdrt.F32, N), alloc("engine.rstd", kdrt.F32, N)
	e.q, e.k, e.v, e.att = alloc("engine.q", m.dt, N, qw), alloc("engine.k", m.dt, N, kv), alloc("engine.v", m.dt, N, kv), alloc("engine.att", m.dt, N, qw)
	e.gate, e.up, e.act = alloc("engine.gate", m.dt, N, F), alloc("engine.up", m.dt, N, F), alloc("engine.act", m.dt, N, F)
	e.logits = alloc("engine.logits", kdrt.F32, cfg.MaxRows, c.Vocab)
	e.lse = alloc("engine.lse", kdrt.F32, c.Heads*N)
	e.id, e.pos = alloc("engine.id", kdrt.I32, N), alloc("engine.pos", kdrt.I32, N)
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("model: engine buffers: %w", err)
	}
	return e, nil
}

// Config is the engine's configuration with the defaults filled in.
func (e *Engine) Config() EngineConfig { return e.cfg }

// KVBytesPerToken is what one position of one sequence takes in the caches
// (keys and values of every layer, in the model's storage dtype).
func (e *Engine) KVBytesPerToken() int64 {
	c := e.m.Config
	return int64(c.Layers) * int64(c.KVHeads*c.HeadDim) * 2 * int64(e.m.dt.Size())
}

// KVBytes is the memory the sequences' caches hold now; PeakKVBytes the
// most they have held.
func (e *Engine) KVBytes() int64     { return e.kvBytes }
func (e *Engine) PeakKVBytes() int64 { return e.peakKV }

// Rows is how many sequences are admitted (decoding, reading their prompt,
// or waiting for cache memory).
func (e *Engine) Rows() int { return len(e.rows) }

// Check validates a sequence as Add would, without adding it: the prompt's
// tokens, the parameters, the positions, and that its cache at full length
// fits the engine's budget.
func (e *Engine) Check(prompt []int32, p GenerateParams) error {
	c := e.m.Config
	if len(prompt) == 0 {
		return errors.New("model: the prompt is empty; generation needs at least one token")
	}
	for i, id := range prompt {
		if id < 0 || int(id) >= c.Vocab {
			return fmt.Errorf("model: prompt token %d at index %d is outside the vocabulary [0, %d)", id, i, c.Vocab)
		}
	}
	if p.MaxTokens <= 0 {
		return fmt.Errorf("model: max tokens %d must be positive", p.MaxTokens)
	}
	if p.Temperature < 0 || math.IsNaN(p.Temperature) || p.TopK < 0 || p.TopP < 0 || p.TopP > 1 || p.RepetitionPenalty < 0 || p.TopLogProbs < 0 {
		return fmt.Errorf("model: generation parameters out of range: %+v", p)
	}
	if len(prompt)+p.MaxTokens > c.MaxPositions {
		return fmt.Errorf("model: prompt of %d tokens plus %d new ones is longer than the model allows (%d positions)", len(prompt), p.MaxTokens, c.MaxPositions)
	}
	if need := int64(len(prompt)+p.MaxTokens) * e.KVBytesPerToken(); need > e.cfg.KVBytes {
		return &KVBudgetError{Need: need, Budget: e.cfg.KVBytes, Tokens: len(prompt) + p.MaxTokens}
	}
	return nil
}

// KVBudgetError says a sequence's cache at full length is larger than the
// engine's whole budget.
type KVBudgetError struct {
	Need, Budget int64
	Tokens       int
}

func (e *KVBudgetError) Error() string {
	return fmt.Sprintf("model: a sequence of %d tokens needs %s of key/value cache, more than the budget of %s",
		e.Tokens, mib(e.Need), mib(e.Budget))
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// Add admits a sequence into a free row if there is one and its prompt's
// cache fits the memory left; false means try again after a Step. Invalid
// sequences are errors (see Check).
func (e *Engine) Add(s *Seq) (bool, error) {
	if err := e.Check(s.Prompt, s.Params); err != nil {
		return false, err
	}
	if len(e.rows) >= e.cfg.MaxRows {
		return false, nil
	}
	if len(e.rows) > 0 && e.kvBytes+int64(e.growTo(s, len(s.Prompt)))*e.KVBytesPerToken() > e.cfg.KVBytes {
		return false, nil
	}
	s.tokens = slices.Clone(s.Prompt)
	s.fed, s.cap, s.kc, s.vc, s.Done = 0, 0, nil, nil, false
	s.Gen = Generation{}
	s.rng = rand.New(rand.NewPCG(s.Params.Seed, 0x67656e6572617465))
	e.order++
	s.order = e.order
	e.rows = append(e.rows, s)
	return true, nil
}

// Cancel takes a sequence out (its cache is freed); it is marked Done with
// Gen.Finish unchanged.
func (e *Engine) Cancel(s *Seq) {
	if i := slices.Index(e.rows, s); i >= 0 {
		e.remove(i)
		s.Done = true
	}
}

func (e *Engine) remove(i int) {
	s := e.rows[i]
	e.freeCache(s)
	e.rows = slices.Delete(e.rows, i, i+1)
}

// Close frees the buffers and every sequence's cache.
func (e *Engine) Close() {
	for _, s := range e.rows {
		e.freeCache(s)
	}
	e.rows = nil
	for _, t := range e.all {
		if t != nil {
			e.m.be.Free(t)
		}
	}
	e.all = nil
}

func (e *Engine) freeCache(s *Seq) {
	for i := range s.kc {
		e.m.be.Free(s.kc[i])
		e.m.be.Free(s.vc[i])
	}
	e.kvBytes -= int64(s.cap) * e.KVBytesPerToken()
	s.kc, s.vc, s.cap, s.fed = nil, nil, 0, 0
}

// growTo is the capacity a cache grows to when it must hold need positions:
// doubling (from minCache) so that a growing sequence copies its cache rarely,
// never past its full length.
func (e *Engine) growTo(s *Seq, need int) int {
	full := len(s.Prompt) + s.Params.MaxTokens
	return min(max(need, 2*s.cap, e.minCache), full)
}

// grow makes s's cache hold need positions, copying what it has; false when
// the budget does not allow it.
func (e *Engine) grow(s *Seq, need int) (bool, error) {
	if need <= s.cap {
		return true, nil
	}
	newCap := e.growTo(s, need)
	extra := int64(newCap-s.cap) * e.KVBytesPerToken()
	if e.kvBytes+extra > e.cfg.KVBytes {
		return false, nil
	}
	c := e.m.Config
	be := e.m.be
	kv := c.KVHeads * c.HeadDim
	kc, vc := make([]*kdrt.Tensor, c.Layers), make([]*kdrt.Tensor, c.Layers)
	for i := range c.Layers {
		var err error
		if kc[i], err = be.Alloc("kv.k", e.m.dt, newCap, kv); err == nil {
			vc[i], err = be.Alloc("kv.v", e.m.dt, newCap, kv)
		}
		if err != nil {
			for _, t := range append(kc, vc...) {
				if t != nil {
					be.Free(t)
				}
			}
			return false, fmt.Errorf("model: key/value cache of %d positions: %w", newCap, err)
		}
		if s.fed > 0 {
			be.Copy(be.Slice(kc[i], 0, s.fed), be.Slice(s.kc[i], 0, s.fed))
			be.Copy(be.Slice(vc[i], 0, s.fed), be.Slice(s.vc[i], 0, s.fed))
		}
	}
	fed := s.fed
	e.freeCache(s)
	s.kc, s.vc, s.cap, s.fed = kc, vc, newCap, fed
	e.kvBytes += int64(newCap) * e.KVBytesPerToken()
	e.peakKV = max(e.peakKV, e.kvBytes)
	return true, nil
}

// preempt frees s's cache; s reads its prompt and generated tokens in again
// later.
func (e *Engine) preempt(s *Seq) {
	e.freeCache(s)
	s.preempted++
}

// entry is one token of one sequence in a step.
type entry struct {
	s   *Seq
	at  int // first index in the step's batch
	n   int // tokens
	out bool
}

// plan picks this step's tokens: one for every decoding sequence (oldest
// first, preempting the newest when the caches must grow past the budget),
// then prompt chunks, oldest first, in what is left of StepTokens and of the
// budget.
func (e *Engine) plan() ([]entry, int, error) {
	var plan []entry
	budget := e.cfg.StepTokens
	planned := map[*Seq]bool{}
	for i := 0; i < len(e.rows); i++ {
		s := e.rows[i]
		if s.cap == 0 || len(s.tokens)-s.fed != 1 {
			continue
		}
		for {
			ok, err := e.grow(s, s.fed+1)
			if err != nil {
				return nil, 0, err
			}
			if ok {
				break
			}
			// The newest sequence holding a cache gives it up (s itself
			// when s is the newest).
			var victim *Seq
			for _, r := range e.rows {
				if r.cap > 0 && !planned[r] && (victim == nil || r.order > victim.order) {
					victim = r
				}
			}
			if victim == nil {
				return nil, 0, fmt.Errorf("model: the key/value cache budget (%s) is too small for one sequence", mib(e.cfg.KVBytes))
			}
			e.preempt(victim)
			if victim == s {
				break
			}
		}
		if s.cap == 0 {
			continue
		}
		planned[s] = true
		plan = append(plan, entry{s: s, n: 1})
		budget--
	}
	for _, s := range e.rows {
		left := len(s.tokens) - s.fed
		if budget == 0 {
			break
		}
		if planned[s] || left == 0 {
			continue
		}
		n := min(left, budget)
		for {
			ok, err := e.grow(s, s.fed+n)
			if err != nil {
				return nil, 0, err
			}
			if ok {
				break
			}
			// A newer sequence that is not in this step gives its cache up,
			// so that the oldest ones always advance; with none, s reads
			// what fits in the cache it has.
			var victim *Seq
			for _, r := range e.rows {
				if r.cap > 0 && !planned[r] && r.order > s.order && (victim == nil || r.order > victim.order) {
					victim = r
				}
			}
			if victim == nil {
				n = s.cap - s.fed
				break
			}
			e.preempt(victim)
		}
		if n <= 0 {
			continue
		}
		planned[s] = true
		plan = append(plan, entry{s: s, n: n})
		budget -= n
	}
	at := 0
	for i := range plan {
		plan[i].at = at
		plan[i].out = plan[i].s.fed+plan[i].n == len(plan[i].s.tokens)
		at += plan[i].n
	}
	return plan, at, nil
}

// Step runs one forward pass and gives every sequence whose prompt is in
// its next token. It returns the sequences that got a token (those that
// finished are Done and out of the engine). A step with nothing to do
// returns nothing.
func (e *Engine) Step() ([]*Seq, error) {
	plan, N, err := e.plan()
	if err != nil || N == 0 {
		return nil, err
	}
	m, be, c := e.m, e.m.be, e.m.Config
	ids, positions := make([]int32, N), make([]int32, N)
	for _, en := range plan {
		copy(ids[en.at:en.at+en.n], en.s.tokens[en.s.fed:en.s.fed+en.n])
		for j := range en.n {
			positions[en.at+j] = int32(en.s.fed + j)
		}
	}
	// A step of decoding sequences only makes the same calls as the last
	// one while the sequences and their caches stay (the positions are
	// uploaded), so a backend with step graphs records it once and
	// replays it; a step that reads prompts in is rarely repeated and runs
	// as usual.
	end := func() {}
	if N == len(plan) && !slices.ContainsFunc(plan, func(en entry) bool { return en.s.fed == 0 }) {
		end = m.beginGraph(fmt.Sprintf("engine decode %d", N))
	}
	defer end()
	view := func(t *kdrt.Tensor) *kdrt.Tensor { return be.Slice(t, 0, N) }
	x, h, tmp, normF := view(e.x), view(e.h), view(e.tmp), view(e.normF)
	mean, rstd := view(e.mean), view(e.rstd)
	q, k, v, att := view(e.q), view(e.k), view(e.v), view(e.att)
	gate, up, act := view(e.gate), view(e.up), view(e.act)
	id, pos := view(e.id), view(e.pos)
	if err := be.UploadInt32(id, ids); err != nil {
		return nil, err
	}
	if err := be.UploadInt32(pos, positions); err != nil {
		return nil, err
	}
	be.Embedding(x, id, m.embed.W)
	if m.pos != nil {
		be.Embedding(tmp, pos, m.pos.W)
		be.Add(x, x, tmp)
	}
	eps := float32(c.NormEps)
	scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
	for i := range m.layers {
		l := &m.layers[i]
		b := blockBufs{in: x, norm1: h, norm1Mean: mean, norm1Rstd: rstd, q: q, k: k, v: v, att: att,
			mid: x, norm2: h, norm2Mean: mean, norm2Rstd: rstd, gate: gate, up: up, act: act, tmp: tmp,
			out: x, pos: pos}
		m.block(l, b, eps, func() {
			p := kdrt.AttentionParams{B: 1, T: 1, NH: c.Heads, NKV: c.KVHeads, HD: c.HeadDim, Scale: scale, Window: l.window}
			for _, en := range plan {
				s := en.s
				at, n := en.at, en.n
				// The chunk's first position (s.fed) is on the device already:
				// the calls are the same from one decode step to the next.
				first := be.Slice(pos, at, at+1)
				be.KVAppend(s.kc[i], be.Slice(k, at, at+n), first)
				be.KVAppend(s.vc[i], be.Slice(v, at, at+n), first)
				if s.fed == 0 && n > 1 {
					// A sequence's first chunk sees only itself: the training
					// forward's attention (what Generate's prefill runs) does
					// it in matrix products.
					pc := p
					pc.T = n
					be.Attention(be.Slice(att, at, at+n), be.Slice(e.lse, 0, c.Heads*n), be.Slice(q, at, at+n), be.Slice(k, at, at+n), be.Slice(v, at, at+n), pc)
					continue
				}
				for j := range n {
					r := en.at + j
					be.AttentionDecode(be.Slice(att, r, r+1), be.Slice(q, r, r+1), s.kc[i], s.vc[i], be.Slice(pos, r, r+1), p)
				}
			}
		})
	}
	m.norm(normF, mean, rstd, x, m.normFW, m.normFB, eps)
	M := 0
	for _, en := range plan {
		if en.out {
			r := en.at + en.n - 1
			be.Copy(be.Slice(e.sel, M, M+1), be.Slice(normF, r, r+1))
			M++
		}
	}
	if M > 0 {
		logits := be.Slice(e.logits, 0, M)
		be.MatMul(logits, be.Slice(e.sel, 0, M), m.head.W, false, true, 1, 0)
		end()
		if err := be.Download(logits, e.host[:M*c.Vocab]); err != nil {
			return nil, err
		}
	} else {
		end()
		if err := be.Sync(); err != nil {
			return nil, err
		}
	}
	V := c.Vocab
	var got []*Seq
	row := 0
	for _, en := range plan {
		s := en.s
		s.fed += en.n
		if !en.out {
			continue
		}
		p := s.Params
		tok, lp, slp, top := choose(e.host[row*V:(row+1)*V], s.tokens, p, s.rng)
		row++
		o := &s.Gen
		o.Tokens, o.LogProbs = append(o.Tokens, tok), append(o.LogProbs, lp)
		o.SampleLogProbs = append(o.SampleLogProbs, slp)
		if p.TopLogProbs > 0 {
			o.Top = append(o.Top, top)
		}
		s.tokens = append(s.tokens, tok)
		got = append(got, s)
		switch {
		case slices.Contains(p.StopTokens, tok) || (p.Stop != nil && p.Stop(o.Tokens)):
			o.Finish = "stop"
		case len(o.Tokens) == p.MaxTokens:
			o.Finish = "length"
		default:
			continue
		}
		s.Done = true
		e.remove(slices.Index(e.rows, s))
	}
	return got, nil
}
