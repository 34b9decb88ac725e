// Package generate is `kdnative generate`: completions from a local model
// for prompts given on the command line or in a JSONL file, printed or
// written as JSONL that `kdnative train` reads ({"prompt", "response"}),
// with per-token log-probabilities on request.
package generate

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// Config is what `kdnative generate` was asked to do.
type Config struct {
	Model string
	// Prompts are given directly; PromptFile is JSONL with {"prompt": "…"}
	// or {"messages": [{"role", "content"}…]} lines.
	Prompts    []string
	PromptFile string
	// Template renders prompts as a conversation's generation prompt:
	// "none" uses the text as it is; "auto", "chatml", "qwen3" as kd/data.
	Template     string
	SystemPrompt string
	// Samples per prompt (seeds Seed, Seed+1, …).
	Samples int
	Params  model.GenerateParams
	// StopStrings end a completion where they appear (cut before them).
	StopStrings []string
	// Output is a JSONL file; empty prints the completions.
	Output string
	// Precision is auto (the backend's default), bf16, fp32 or tf32: how the
	// model is stored and multiplied (runtime.UsePrecision).
	Precision string
}

// Record is one completion, as written to the JSONL output.
type Record struct {
	Prompt      string         `json:"prompt"`
	Messages    []data.Message `json:"messages,omitempty"`
	Response    string         `json:"response"`
	Finish      string         `json:"finish_reason"`
	Tokens      []int32        `json:"tokens,omitempty"`
	LogProbs    []float32      `json:"logprobs,omitempty"`
	TopLogProbs [][]TopLogProb `json:"top_logprobs,omitempty"`
	Sample      int            `json:"sample,omitempty"`
}

// TopLogProb is one alternative at a position.
type TopLogProb struct {
	ID      int32   `json:"id"`
	Token   string  `json:"token"`
	LogProb float32 `json:"logprob"`
}

type promptLine struct {
	Prompt   *string        `json:"prompt"`
	Messages []data.Message `json:"messages"`
}

// Run generates the completions.
func Run(ctx context.Context, be kdrt.Backend, c Config, log io.Writer) ([]Record, error) {
	prec, err := kdrt.UsePrecision(be, c.Precision)
	if err != nil {
		return nil, err
	}
	m, err := model.LoadDir(c.Model, be, model.ForPrecision(prec, false)...)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.LoadDir(c.Model)
	if err != nil {
		return nil, err
	}
	prompts, err := readPrompts(c)
	if err != nil {
		return nil, err
	}
	if len(prompts) == 0 {
		return nil, errors.New("generate: no prompts (give --prompt or --prompts FILE)")
	}
	tmpl, err := data.NewTemplate(tok, data.Options{Template: c.Template, SystemPrompt: c.SystemPrompt, MaxLen: m.Config.MaxPositions})
	if err != nil {
		return nil, err
	}
	var out *os.File
	var w *bufio.Writer
	if c.Output != "" {
		if out, err = os.Create(c.Output); err != nil {
			return nil, err
		}
		defer out.Close()
		w = bufio.NewWriter(out)
	}
	samples := max(c.Samples, 1)
	sp := tok.Special()
	var recs []Record
	for _, pl := range prompts {
		msgs := pl.Messages
		if msgs == nil {
			msgs = []data.Message{{Role: "user", Content: *pl.Prompt}}
		}
		ids, err := tmpl.GenerationPrompt(msgs)
		if err != nil {
			return nil, err
		}
		for s := range samples {
			if ctx.Err() != nil {
				return recs, ctx.Err()
			}
			p := c.Params
			p.Seed += uint64(s)
			if sp.EOS >= 0 {
				p.StopTokens = append(append([]int32(nil), p.StopTokens...), sp.EOS)
			}
			// The chat template's end of turn (<|im_end|>, <|eot_id|>, …).
			p.StopTokens = append(p.StopTokens, tmpl.StopTokens()...)
			if len(c.StopStrings) > 0 {
				p.Stop = func(gen []int32) bool { return cutAtStop(tok.Decode(gen), c.StopStrings) >= 0 }
			}
			if room := m.Config.MaxPositions - len(ids); p.MaxTokens > room {
				p.MaxTokens = room
			}
			g, err := m.Generate(ids, p)
			if err != nil {
				return nil, err
			}
			toks := g.Tokens
			if g.Finish == "stop" && len(toks) > 0 && (toks[len(toks)-1] == sp.EOS || isIMEnd(tok, toks[len(toks)-1])) {
				toks = toks[:len(toks)-1]
			}
			text := tok.Decode(toks)
			if i := cutAtStop(text, c.StopStrings); i >= 0 {
				text = text[:i]
			}
			rec := Record{Prompt: promptText(pl), Response: text, Finish: g.Finish, Sample: s}
			if pl.Messages != nil {
				rec.Messages = pl.Messages
			}
			if c.Params.TopLogProbs > 0 {
				rec.Tokens, rec.LogProbs = g.Tokens, g.LogProbs
				for _, alts := range g.Top {
					var row []TopLogProb
					for _, a := range alts {
						row = append(row, TopLogProb{ID: a.ID, Token: tok.Decode([]int32{a.ID}), LogProb: a.LogProb})
					}
					rec.TopLogProbs = append(rec.TopLogProbs, row)
				}
			}
			recs = append(recs, rec)
			if w != nil {
				js, _ := json.Marshal(rec)
				w.Write(append(js, '\n'))
			} else {
				fmt.Fprintf(log, "%s%s\n\n", rec.Prompt, rec.Response)
			}
		}
	}
	if w != nil {
		if err := w.Flush(); err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "wrote %d completions to %s\n", len(recs), c.Output)
	}
	return recs, nil
}

func isIMEnd(tok *tokenizer.Tokenizer, id int32) bool {
	t, ok := tok.TokenID("<|im_end|>")
	return ok && t == id
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

func promptText(p promptLine) string {
	if p.Prompt != nil {
		return *p.Prompt
	}
	var parts []string
	for _, m := range p.Messages {
		parts = append(parts, m.Content)
	}
	return strings.Join(parts, "\n")
}

// readPrompts gathers the prompts; a bad line names its file and line.
func readPrompts(c Config) ([]promptLine, error) {
	var out []promptLine
	for _, p := range c.Prompts {
		out = append(out, promptLine{Prompt: &p})
	}
	if c.PromptFile == "" {
		return out, nil
	}
	// JSONL or Parquet (data.ForEachRecord): one prompt per record.
	err := data.ForEachRecord(c.PromptFile, 64<<20, func(rec []byte, at data.LineError, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %v", at.String(), err)
		}
		var pl promptLine
		if err := json.Unmarshal(rec, &pl); err != nil {
			return fmt.Errorf("%s: not a JSON object: %v", at.String(), err)
		}
		if pl.Prompt == nil && pl.Messages == nil {
			return fmt.Errorf(`%s: want "prompt" or "messages"`, at.String())
		}
		out = append(out, pl)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	return out, nil
}
