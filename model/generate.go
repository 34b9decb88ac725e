package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// GenerateParams control Generate.
type GenerateParams struct {
	// MaxTokens is how many tokens to generate at most.
	MaxTokens int
	// Temperature divides the logits before sampling; 0 picks the most
	// likely token (greedy).
	Temperature float64
	// TopK, when > 0, samples among the TopK most likely tokens only.
	TopK int
	// TopP, when in (0, 1), samples among the smallest set of tokens whose
	// probabilities sum to at least TopP (nucleus sampling).
	TopP float64
	// RepetitionPenalty, when > 0 and ≠ 1, divides the positive logits (and
	// multiplies the negative ones) of tokens already in the sequence, as
	// transformers' RepetitionPenaltyLogitsProcessor does.
	RepetitionPenalty float64
	// Seed makes sampling reproducible.
	Seed uint64
	// StopTokens end the generation when produced (they are kept in Tokens).
	StopTokens []int32
	// TopLogProbs is how many alternatives to report per token (0: none).
	TopLogProbs int
	// Stop, when set, is asked after each token whether the generation is
	// complete (stop strings: the caller decodes and looks).
	Stop func(generated []int32) bool
}

// TokenLogProb is a token and its log-probability.
type TokenLogProb struct {
	ID      int32
	LogProb float32
}

// Generation is what Generate produced.
type Generation struct {
	Tokens []int32
	// LogProbs[i] is the log-probability of Tokens[i] under the model's
	// distribution at temperature 1, before any sampling transform.
	LogProbs []float32
	// SampleLogProbs[i] is the log-probability of Tokens[i] under the
	// distribution it was drawn from (after the repetition penalty,
	// temperature, top-k and top-p): what an importance weight against the
	// sampling policy needs. 0 under greedy decoding.
	SampleLogProbs []float32
	// Top[i] are the TopLogProbs most likely tokens at step i.
	Top [][]TokenLogProb
	// Finish is "stop" (a stop token) or "length" (MaxTokens).
	Finish string
}

// Generate continues prompt with a key/value cache: the prompt runs through
// the model once, then each new token costs one position's forward pass.
// Greedy decoding gives the tokens that recomputing the whole forward at
// every step (Sample with temperature 0) gives.
func (m *Model) Generate(prompt []int32, p GenerateParams) (*Generation, error) {
	gs, err := m.GenerateBatch([][]int32{prompt}, p)
	if err != nil {
		return nil, err
	}
	return gs[0], nil
}

// GenerateBatch continues several prompts at once: they are left-padded to
// one length (attention ignores the padding, positions start at each
// prompt's first token) and decoded together, one position of every row
// per step. Row i samples with seed p.Seed + i, so each row's result is the
// one Generate gives for it alone.
func (m *Model) GenerateBatch(prompts [][]int32, p GenerateParams) ([]*Generation, error) {
	c := m.Config
	if len(prompts) == 0 {
		return nil, fmt.Errorf("model: GenerateBatch needs at least one prompt")
	}
	P := 0
	for i, pr := range prompts {
		if len(pr) == 0 {
			return nil, fmt.Errorf("model: prompt %d is empty; generation needs at least one token", i)
		}
		P = max(P, len(pr))
	}
	if p.MaxTokens <= 0 {
		return nil, fmt.Errorf("model: max tokens %d must be positive", p.MaxTokens)
	}
	if p.Temperature < 0 || math.IsNaN(p.Temperature) || p.TopK < 0 || p.TopP < 0 || p.TopP > 1 || p.RepetitionPenalty < 0 || p.TopLogProbs < 0 {
		return nil, fmt.Errorf("model: generation parameters out of range: %+v", p)
	}
	Tmax := P + p.MaxTokens
	if p.MaxTokens > c.MaxPositions || Tmax > c.MaxPositions {
		return nil, fmt.Errorf("model: prompt of %d tokens plus %d new ones is longer than the model allows (%d positions)", P, p.MaxTokens, c.MaxPositions)
	}
	B := len(prompts)
	if err := m.checkGenerateMemory(B, P, Tmax); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	g, err := m.newGenerator(B, Tmax)
	if err != nil {
		return nil, err
	}
	defer g.free()
	logits, err := g.prefill(prompts, P)
	if err != nil {
		return nil, err
	}
	V := c.Vocab
	rngs := make([]*rand.Rand, B)
	seen := make([][]int32, B)
	outs := make([]*Generation, B)
	done := make([]bool, B)
	for b := range B {
		rngs[b] = rand.New(rand.NewPCG(p.Seed+uint64(b), 0x67656e6572617465))
		seen[b] = slices.Clone(prompts[b])
		outs[b] = &Generation{Finish: "length"}
	}
	next := make([]int32, B)
	for step := range p.MaxTokens {
		left := 0
		for b := range B {
			if done[b] {
				continue // finished rows run along but their output is kept
			}
			tok, lp, slp, top := choose(logits[b*V:(b+1)*V], seen[b], p, rngs[b])
			o := outs[b]
			o.Tokens, o.LogProbs = append(o.Tokens, tok), append(o.LogProbs, lp)
			o.SampleLogProbs = append(o.SampleLogProbs, slp)
			if p.TopLogProbs > 0 {
				o.Top = append(o.Top, top)
			}
			seen[b] = append(seen[b], tok)
			next[b] = tok
			if slices.Contains(p.StopTokens, tok) || (p.Stop != nil && p.Stop(o.Tokens)) {
				o.Finish, done[b] = "stop", true
				continue
			}
			left++
		}
		if left == 0 || step+1 == p.MaxTokens {
			break
		}
		if logits, err = g.step(next, P+step); err != nil {
			return nil, err
		}
	}
	return outs, nil
}

// choose applies the sampling transforms to logits and draws a token; it
// returns the token's raw log-probability, its log-probability under the
// distribution it was drawn from, and the top alternatives.
func choose(logits []float32, seen []int32, p GenerateParams, r *rand.Rand) (int32, float32, float32, []TokenLogProb) {
	V := len(logits)
	raw := make([]float64, V)
	mx := math.Inf(-1)
	for i, v := range logits {
		raw[i] = float64(v)
		mx = math.Max(mx, raw[i])
	}
	var s float64
	for _, v := range raw {
		s += math.Exp(v - mx)
	}
	lse := mx + math.Log(s)
	var top []TokenLogProb
	if p.TopLogProbs > 0 {
		idx := make([]int, V)
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(a, b int) bool { return raw[idx[a]] > raw[idx[b]] })
		for _, i := range idx[:min(p.TopLogProbs, V)] {
			top = append(top, TokenLogProb{ID: int32(i), LogProb: float32(raw[i] - lse)})
		}
	}
	x := slices.Clone(raw)
	if p.RepetitionPenalty > 0 && p.RepetitionPenalty != 1 {
		for _, t := range seen {
			if x[t] > 0 {
				x[t] /= p.RepetitionPenalty
			} else {
				x[t] *= p.RepetitionPenalty
			}
		}
	}
	best := 0
	for i := range x {
		if x[i] > x[best] {
			best = i
		}
	}
	pick, slp := best, 0.0
	if p.Temperature > 0 {
		idx := make([]int, V)
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(a, b int) bool { return x[idx[a]] > x[idx[b]] })
		keep := V
		if p.TopK > 0 {
			keep = min(keep, p.TopK)
		}
		probs := make([]float64, keep)
		var sum float64
		for j := range keep {
			probs[j] = math.Exp((x[idx[j]] - x[idx[0]]) / p.Temperature)
			sum += probs[j]
		}
		if p.TopP > 0 && p.TopP < 1 {
			var cum float64
			for j := range keep {
				cum += probs[j] / sum
				if cum >= p.TopP {
					keep = j + 1
					break
				}
			}
			sum = 0
			for j := range keep {
				sum += probs[j]
			}
		}
		u := r.Float64() * sum
		at := keep - 1
		for j := range keep {
			u -= probs[j]
			if u <= 0 {
				at = j
				break
			}
		}
		pick, slp = idx[at], math.Log(probs[at]/sum)
	}
	return int32(pick), float32(raw[pick] - lse), float32(slp), top
}

// generator holds the key/value caches of B rows and one position's buffers.
type generator struct {
	m                *Model
	B, Tmax          int
	pad              []int          // left padding of each row
	kc, vc           []*kdrt.Tensor // per layer [B·Tmax, NKV·HD]
	x, h, tmp, normF *kdrt.Tensor   // [B, C]
	mean, rstd       *kdrt.Tensor   // [B]
	q, k, v, att     *kdrt.Tensor
	gate, up, act    *kdrt.Tensor // [B, F]
	logits           *kdrt.Tensor // [B, V]
	id, pos          *kdrt.Tensor // I32 [B]
	at               *kdrt.Tensor // I32 [B]: each row's cache position
	host             []float32
	all              []*kdrt.Tensor
}

func (m *Model) newGenerator(B, Tmax int) (*generator, error) {
	c := m.Config
	g := &generator{m: m, B: B, Tmax: Tmax, host: make([]float32, B*c.Vocab)}
	var err error
	alloc := func(name string, dt kdrt.DType, shape ...int) *kdrt.Tensor {
		if err != nil {
			return nil
		}
		var t *kdrt.Tensor
		t, err = m.be.Alloc(name, dt, shape...)
		g.all = append(g.all, t)
		return t
	}
	kv := c.KVHeads * c.HeadDim
	dt := m.dt // the cache and activations in the model's storage; logits F32
	for range c.Layers {
		g.kc = append(g.kc, alloc("kv.k", dt, B*Tmax, kv))
		g.vc = append(g.vc, alloc("kv.v", dt, B*Tmax, kv))
	}
	C, F := c.Hidden, c.Intermediate
	g.x, g.h, g.tmp, g.normF = alloc("x", dt, B, C), alloc("h", dt, B, C), alloc("tmp", dt, B, C), alloc("normF", dt, B, C)
	g.mean, g.rstd = alloc("mean", kdrt.F32, B), alloc("rstd", kdrt.F32, B)
	g.q, g.k, g.v, g.att = alloc("q", dt, B, c.Heads*c.HeadDim), alloc("k", dt, B, kv), alloc("v", dt, B, kv), alloc("att", dt, B, c.Heads*c.HeadDim)
	g.gate, g.up, g.act = alloc("gate", dt, B, F), alloc("up", dt, B, F), alloc("act", dt, B, F)
	g.logits = alloc("logits", kdrt.F32, B, c.Vocab)
	g.id, g.pos, g.at = alloc("id", kdrt.I32, B), alloc("pos", kdrt.I32, B), alloc("at", kdrt.I32, B)
	if err != nil {
		g.free()
		return nil, err
	}
	return g, nil
}

func (g *generator) free() {
	for _, t := range g.all {
		if t != nil {
			g.m.be.Free(t)
		}
	}
}

// prefill runs the left-padded prompts through the model, fills the caches
// with their keys and values, and returns each row's last-position logits
// [B·V].
func (g *generator) prefill(prompts [][]int32, P int) ([]float32, error) {
	m, be := g.m, g.m.be
	B := g.B
	batch := Batch{B: B, T: P, IDs: make([]int32, B*P), Positions: make([]int32, B*P)}
	g.pad = make([]int, B)
	for b, pr := range prompts {
		pad := P - len(pr)
		g.pad[b] = pad
		copy(batch.IDs[b*P+pad:(b+1)*P], pr)
		for t := pad; t < P; t++ {
			batch.Positions[b*P+t] = int32(t - pad)
		}
	}
	if P > 0 && slices.ContainsFunc(g.pad, func(x int) bool { return x > 0 }) {
		batch.KeyStart = g.pad
	}
	// The prompts' inference forward, its keys and values copied into the
	// caches layer by layer.
	h, err := m.infer(batch, nil, func(i int, k, v *kdrt.Tensor) {
		for b := range B {
			be.Copy(be.Slice(g.kc[i], b*g.Tmax, b*g.Tmax+P), be.Slice(k, b*P, (b+1)*P))
			be.Copy(be.Slice(g.vc[i], b*g.Tmax, b*g.Tmax+P), be.Slice(v, b*P, (b+1)*P))
		}
	})
	if err != nil {
		return nil, err
	}
	for b := range B {
		be.Copy(be.Slice(g.normF, b, b+1), be.Slice(h, b*P+P-1, b*P+P))
	}
	return g.head(func() {})
}

// step runs one token per row at index pos (the row's position is pos minus
// its padding) through the model, adding its keys and values to the caches,
// and returns the logits for the next position [B·V].
func (g *generator) step(toks []int32, pos int) ([]float32, error) {
	m, be, c := g.m, g.m.be, g.m.Config
	positions, at := make([]int32, g.B), make([]int32, g.B)
	for b := range g.B {
		positions[b], at[b] = int32(pos-g.pad[b]), int32(pos)
	}
	// Every step makes the same calls (what changes is uploaded), so a
	// backend with step graphs records one and replays it.
	end := m.beginGraph(fmt.Sprintf("decode %d×%d", g.B, g.Tmax))
	defer end()
	if err := be.UploadInt32(g.id, toks); err != nil {
		return nil, err
	}
	if err := be.UploadInt32(g.pos, positions); err != nil {
		return nil, err
	}
	if err := be.UploadInt32(g.at, at); err != nil {
		return nil, err
	}
	be.Embedding(g.x, g.id, m.embed.W)
	if m.pos != nil {
		be.Embedding(g.tmp, g.pos, m.pos.W)
		be.Add(g.x, g.x, g.tmp)
	}
	eps := float32(c.NormEps)
	var keyStart []int
	if slices.ContainsFunc(g.pad, func(x int) bool { return x > 0 }) {
		keyStart = g.pad
	}
	for i := range m.layers {
		l := &m.layers[i]
		b := blockBufs{in: g.x, norm1: g.h, norm1Mean: g.mean, norm1Rstd: g.rstd, q: g.q, k: g.k, v: g.v, att: g.att,
			mid: g.x, norm2: g.h, norm2Mean: g.mean, norm2Rstd: g.rstd, gate: g.gate, up: g.up, act: g.act, tmp: g.tmp,
			out: g.x, pos: g.pos}
		m.block(l, b, eps, func() {
			be.KVAppend(g.kc[i], g.k, g.at)
			be.KVAppend(g.vc[i], g.v, g.at)
			p := kdrt.AttentionParams{B: g.B, T: 1, NH: c.Heads, NKV: c.KVHeads, HD: c.HeadDim,
				Scale: float32(1 / math.Sqrt(float64(c.HeadDim))), Window: l.window, KeyStart: keyStart}
			be.AttentionDecode(g.att, g.q, g.kc[i], g.vc[i], g.at, p)
		})
	}
	m.norm(g.normF, g.mean, g.rstd, g.x, m.normFW, m.normFB, eps)
	return g.head(end)
}

// head computes every row's logits from g.normF, ends the step's work
// (end, from beginGraph) and downloads them.
func (g *generator) head(end func()) ([]float32, error) {
	g.m.be.MatMul(g.logits, g.normF, g.m.head.W, false, true, 1, 0)
	end()
	if err := g.m.be.Download(g.logits, g.host); err != nil {
		return nil, err
	}
	return g.host, nil
}
