package tasks

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
)

// genRow is one sample to draw: example ex's sample number sample.
type genRow struct {
	ex        *Example
	sample    int
	prompt    []int32
	maxTokens int
	truncated bool // the prompt lost its first tokens to fit
}

// Sample is one generated answer and how it scored.
type Sample struct {
	Output    string `json:"output"`
	Finish    string `json:"finish_reason"`
	Extracted string `json:"extracted,omitempty"`
	// Found is false when no final answer was found in the output.
	Found   bool `json:"found"`
	Correct bool `json:"correct"`
	// Score is the judge's score in [0, 1] (judged tasks), nil when unscored.
	Score     *float64 `json:"score,omitempty"`
	Judgement string   `json:"judgement,omitempty"`
	Unscored  string   `json:"unscored,omitempty"`
}

// generator draws the samples of generate examples with one model.
type generator struct {
	m     *model.Model
	tok   *tokenizer.Tokenizer
	tmpl  *data.Template
	batch int
	seed  uint64
	stops []int32 // EOS, and <|im_end|> under a chat template
	// Notes counts prompts cut and answers clamped to fit the positions.
	truncated, clamped int
}

func newGenerator(m *model.Model, tok *tokenizer.Tokenizer, template string, batch int, seed uint64) (*generator, error) {
	opt := data.Options{Template: template, MaxLen: m.Config.MaxPositions}
	if sp := tok.Special(); sp.AddBOS && sp.BOSToken != "" {
		opt.BOS = sp.BOSToken
	}
	tmpl, err := data.NewTemplate(tok, opt)
	if err != nil {
		return nil, err
	}
	g := &generator{m: m, tok: tok, tmpl: tmpl, batch: max(batch, 1), seed: seed}
	if sp := tok.Special(); sp.EOS >= 0 {
		g.stops = append(g.stops, sp.EOS)
	}
	if id, ok := tok.TokenID("<|im_end|>"); ok && tmpl.Name() != data.TemplateNone {
		g.stops = append(g.stops, id)
	}
	return g, nil
}

// prompt renders an example's prompt: a chat's generation prompt under a
// chat template, the plain text under template none.
func (g *generator) prompt(ex *Example) ([]int32, error) {
	msgs := ex.Messages
	if msgs == nil {
		msgs = []data.Message{{Role: "user", Content: *ex.Prompt}}
	}
	ids, err := g.tmpl.GenerationPrompt(msgs)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("the prompt has no tokens")
	}
	return ids, nil
}

// rows lays out every sample of the examples in file order, each example's
// samples together. A prompt and its answer must fit the model's positions:
// an answer longer than the positions is clamped to half of them, and a
// prompt that leaves too little room keeps its last tokens (as the harness
// left-truncates contexts).
func (g *generator) rows(exs []*Example) ([]genRow, error) {
	P := g.m.Config.MaxPositions
	var rows []genRow
	for _, ex := range exs {
		ids, err := g.prompt(ex)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", ex.Line, err)
		}
		maxTok := ex.MaxTokens
		if maxTok >= P {
			maxTok = P / 2
			g.clamped++
		}
		truncated := false
		if len(ids)+maxTok > P {
			ids = ids[len(ids)-(P-maxTok):]
			truncated = true
			g.truncated++
		}
		for s := range ex.N {
			rows = append(rows, genRow{ex: ex, sample: s, prompt: ids, maxTokens: maxTok, truncated: truncated})
		}
	}
	return rows, nil
}

func (g *generator) params(r genRow) model.GenerateParams {
	ex := r.ex
	p := model.GenerateParams{MaxTokens: r.maxTokens, Temperature: ex.Temperature, TopK: ex.TopK, StopTokens: g.stops}
	if ex.TopP < 1 {
		p.TopP = ex.TopP
	}
	if len(ex.Stop) > 0 {
		stops := ex.Stop
		p.Stop = func(gen []int32) bool { return cutAtStop(g.tok.Decode(gen), stops) >= 0 }
	}
	return p
}

// sameParams reports whether two rows can be decoded in one batch.
func sameParams(a, b genRow) bool {
	return a.maxTokens == b.maxTokens && a.ex.Temperature == b.ex.Temperature && a.ex.TopP == b.ex.TopP &&
		a.ex.TopK == b.ex.TopK && slices.Equal(a.ex.Stop, b.ex.Stop)
}

// generate decodes every row, in batches of consecutive rows that share
// their settings. Row i (in the order rows gives) samples with seed
// seed + i whatever the batching, as GenerateBatch seeds row j of a batch
// with the batch's seed + j: results do not depend on the batch size.
func (g *generator) generate(ctx context.Context, rows []genRow, done func(int)) ([]Sample, error) {
	out := make([]Sample, len(rows))
	for i := 0; i < len(rows); {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		j := i + 1
		for j < len(rows) && j-i < g.batch && sameParams(rows[i], rows[j]) {
			j++
		}
		p := g.params(rows[i])
		p.Seed = g.seed + uint64(i)
		prompts := make([][]int32, j-i)
		for k := range prompts {
			prompts[k] = rows[i+k].prompt
		}
		gens, err := g.m.GenerateBatch(prompts, p)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", rows[i].ex.Line, err)
		}
		for k, gen := range gens {
			toks := gen.Tokens
			if gen.Finish == "stop" && len(toks) > 0 && slices.Contains(g.stops, toks[len(toks)-1]) {
				toks = toks[:len(toks)-1]
			}
			text := g.tok.Decode(toks)
			if c := cutAtStop(text, rows[i+k].ex.Stop); c >= 0 {
				text = text[:c]
			}
			out[i+k] = Sample{Output: text, Finish: gen.Finish}
		}
		if done != nil {
			done(j - i)
		}
		i = j
	}
	return out, nil
}

// cutAtStop is the index of the first stop string in text, or −1.
func cutAtStop(text string, stops []string) int {
	best := -1
	for _, s := range stops {
		if i := strings.Index(text, s); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	return best
}
