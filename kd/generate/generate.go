// Package generate is `kdnative generate`: completions from a local model
// for prompts given on the command line or in a JSONL file, printed or
// written as JSONL that `kdnative train` reads ({"prompt", "response"}),
// with per-token log-probabilities on request.
//
// Completions are generated BatchSize at a time (continuous batching over
// model.Engine: a finished one's row takes the next prompt at once) and
// each is written to the output as soon as it and those before it are
// done, in prompt order, one line per write. A run that stopped (Ctrl-C, a
// kill, a full disk) resumes where the file ends: its complete lines are
// kept (they must be this run's first completions, else it is an error
// naming the line), a torn last line is dropped, and the rest is
// generated. Progress goes to Config.Progress with a rate and a time left.
package generate

import (
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

// DefaultBatchSize and DefaultKVCacheBytes are Config's defaults.
const (
	DefaultBatchSize    = 8
	DefaultKVCacheBytes = 1 << 30
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
	// Output is a JSONL file, resumed when it exists; empty prints the
	// completions.
	Output string
	// BatchSize is how many completions are generated together
	// (--batch-size; default 8).
	BatchSize int
	// KVCacheBytes bounds the key/value caches of the completions being
	// generated (--kv-cache-mb; default 1 GiB).
	KVCacheBytes int64
	// Progress, when set, receives the progress of an Output run: a line
	// redrawn in place when Terminal, else a line every few seconds.
	Progress io.Writer
	Terminal bool
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
	where    string         // "FILE:LINE" or "--prompt N", for errors
}

// Run generates the completions and returns those it generated (with
// Output, not those a resumed file already held).
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
	samples := max(c.Samples, 1)
	total := len(prompts) * samples
	start := 0
	var out *os.File
	if c.Output != "" {
		if out, start, err = openOutput(c.Output, prompts, samples); err != nil {
			return nil, err
		}
		defer out.Close()
		if start > 0 && c.Progress != nil {
			fmt.Fprintf(c.Progress, "resuming %s: %d of %d completions are there already (delete it to start afresh)\n", c.Output, start, total)
		}
	}
	if c.KVCacheBytes <= 0 {
		c.KVCacheBytes = DefaultKVCacheBytes
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	e, err := m.NewEngine(model.EngineConfig{MaxRows: c.BatchSize, KVBytes: c.KVCacheBytes})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	stops := []int32{}
	if sp := tok.Special(); sp.EOS >= 0 {
		stops = append(stops, sp.EOS)
	}
	// The chat template's end of turn (<|im_end|>, <|eot_id|>, …).
	stops = append(stops, tmpl.StopTokens()...)
	var prog *progress
	if out != nil && c.Progress != nil && start < total {
		prog = newProgress(c.Progress, c.Terminal, start, total)
		defer prog.end()
	}

	// Job i is sample i % samples of prompt i / samples.
	var ids []int32 // the current prompt's tokens
	idsOf := -1
	running := map[*model.Seq]int{}
	done := map[int]*model.Seq{}
	var recs []Record
	next, written := start, start
	for written < total {
		if err := ctx.Err(); err != nil {
			return recs, err
		}
		for next < total {
			pi, s := next/samples, next%samples
			if idsOf != pi {
				if ids, err = tmpl.GenerationPrompt(messagesOf(prompts[pi])); err != nil {
					return recs, fmt.Errorf("%s: %w", prompts[pi].where, err)
				}
				idsOf = pi
			}
			p := c.Params
			p.Seed += uint64(s)
			p.StopTokens = append(append([]int32(nil), p.StopTokens...), stops...)
			if len(c.StopStrings) > 0 {
				p.Stop = func(gen []int32) bool { return cutAtStop(tok.Decode(gen), c.StopStrings) >= 0 }
			}
			room := m.Config.MaxPositions - len(ids)
			if room < 1 {
				return recs, fmt.Errorf("%s: the prompt is %d tokens, and the model has %d positions in all (prompt and completion)", prompts[pi].where, len(ids), m.Config.MaxPositions)
			}
			p.MaxTokens = min(p.MaxTokens, room)
			seq := &model.Seq{Prompt: ids, Params: p}
			ok, err := e.Add(seq)
			var kvErr *model.KVBudgetError
			if errors.As(err, &kvErr) {
				return recs, fmt.Errorf("%s: a completion of up to %d tokens (prompt and --max-tokens) needs %s of key/value cache, more than --kv-cache-mb %d: lower --max-tokens or raise --kv-cache-mb",
					prompts[pi].where, kvErr.Tokens, mib(kvErr.Need), c.KVCacheBytes>>20)
			}
			if err != nil {
				return recs, fmt.Errorf("%s: %w", prompts[pi].where, err)
			}
			if !ok {
				break
			}
			running[seq] = next
			next++
		}
		got, err := e.Step()
		if err != nil {
			return recs, err
		}
		for _, seq := range got {
			prog.tokens(1)
			if seq.Done {
				done[running[seq]] = seq
				delete(running, seq)
			}
		}
		// Records go out in prompt order, each as soon as those before it.
		for done[written] != nil {
			seq := done[written]
			delete(done, written)
			pl := prompts[written/samples]
			rec := record(tok, pl, seq, written%samples, c)
			if out != nil {
				js, err := json.Marshal(rec)
				if err != nil {
					return recs, err
				}
				if _, err := out.Write(append(js, '\n')); err != nil {
					return recs, fmt.Errorf("generate: writing %s: %w (run again to resume)", c.Output, err)
				}
			} else {
				fmt.Fprintf(log, "%s%s\n\n", rec.Prompt, rec.Response)
			}
			recs = append(recs, rec)
			written++
			prog.done(written)
			if afterWrite != nil {
				afterWrite(written)
			}
		}
	}
	if out != nil {
		if err := out.Close(); err != nil {
			return recs, fmt.Errorf("generate: %s: %w", c.Output, err)
		}
		prog.end()
		prog = nil
		fmt.Fprintf(log, "wrote %d completions to %s (%d new)\n", total, c.Output, total-start)
	}
	return recs, nil
}

// afterWrite, when set (tests), is called after each record is out.
var afterWrite func(written int)

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// record is a finished sequence as a Record.
func record(tok *tokenizer.Tokenizer, pl promptLine, seq *model.Seq, sample int, c Config) Record {
	g := &seq.Gen
	toks := g.Tokens
	if g.Finish == "stop" && len(toks) > 0 {
		last := toks[len(toks)-1]
		for _, st := range seq.Params.StopTokens {
			if last == st {
				toks = toks[:len(toks)-1]
				break
			}
		}
	}
	text := tok.Decode(toks)
	if i := cutAtStop(text, c.StopStrings); i >= 0 {
		text = text[:i]
	}
	rec := Record{Prompt: promptText(pl), Response: text, Finish: g.Finish, Sample: sample}
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
	return rec
}

func messagesOf(pl promptLine) []data.Message {
	if pl.Messages != nil {
		return pl.Messages
	}
	return []data.Message{{Role: "user", Content: *pl.Prompt}}
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
	for i, p := range c.Prompts {
		out = append(out, promptLine{Prompt: &p, where: fmt.Sprintf("--prompt %d", i+1)})
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
		pl.where = at.String()
		out = append(out, pl)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	return out, nil
}
