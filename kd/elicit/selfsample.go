package elicit

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// ModelSampler writes answers with a local model through model.Engine:
// BatchSize answers decode together with their own key/value caches and
// seeds, and a finished answer's row takes the next job at once
// (continuous batching). An answer's tokens do not depend on what else is
// in the batch, so a run samples the same answers at any BatchSize.
type ModelSampler struct {
	Model    *model.Model
	Tok      *tokenizer.Tokenizer
	Template *data.Template
	// Params are the sampling parameters (MaxTokens, Temperature, TopK,
	// TopP, RepetitionPenalty); Seed and the stop tokens are set per
	// answer (the tokenizer's EOS and the chat template's end of turn).
	Params model.GenerateParams
	// Stop are stop strings: an answer ends before the first.
	Stop []string
	// BatchSize is how many answers decode together (default 8); KVBytes
	// bounds their caches (default model.DefaultKVBytes).
	BatchSize int
	KVBytes   int64
}

// OpenStudent loads a model folder or GGUF file and its tokenizer, with the
// chat template named as kd/data names them ("auto": the model's own).
func OpenStudent(be kdrt.Backend, path, template string) (*ModelSampler, error) {
	if err := data.CheckTemplate(template); err != nil {
		return nil, err
	}
	m, err := model.LoadDir(path, be)
	if err != nil {
		return nil, fmt.Errorf("student: %w", err)
	}
	tok, err := tokenizer.LoadDir(path)
	if err != nil {
		return nil, fmt.Errorf("student: %w", err)
	}
	tmpl, err := data.NewTemplate(tok, data.Options{Template: template, MaxLen: m.Config.MaxPositions})
	if err != nil {
		return nil, fmt.Errorf("student: %w", err)
	}
	return &ModelSampler{Model: m, Tok: tok, Template: tmpl}, nil
}

// Sample implements Sampler.
func (s *ModelSampler) Sample(ctx context.Context, jobs []SampleJob, done func(SampleJob, Sampled, error) error) error {
	batch := s.BatchSize
	if batch <= 0 {
		batch = 8
	}
	if s.Params.MaxTokens <= 0 {
		return errors.New("student: max tokens must be positive")
	}
	e, err := s.Model.NewEngine(model.EngineConfig{MaxRows: batch, KVBytes: s.KVBytes})
	if err != nil {
		return err
	}
	defer e.Close()
	stops := []int32{}
	if sp := s.Tok.Special(); sp.EOS >= 0 {
		stops = append(stops, sp.EOS)
	}
	stops = append(stops, s.Template.StopTokens()...)
	positions := s.Model.Config.MaxPositions

	var ids []int32 // the current prompt's tokens
	idsOf, idsErr := -1, error(nil)
	running := map[*model.Seq]SampleJob{}
	next := 0
	for next < len(jobs) || len(running) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		for next < len(jobs) {
			job := jobs[next]
			if job.Prompt != idsOf {
				idsOf = job.Prompt
				ids, idsErr = s.Template.GenerationPrompt(dataMessages(job.Messages))
				if idsErr == nil && len(ids) >= positions {
					idsErr = fmt.Errorf("the prompt is %d tokens, and the student has %d positions in all (prompt and answer)", len(ids), positions)
				}
			}
			if idsErr != nil {
				next++
				if err := done(job, Sampled{}, idsErr); err != nil {
					return err
				}
				continue
			}
			p := s.Params
			p.Seed = job.Seed
			p.StopTokens = append(append([]int32(nil), p.StopTokens...), stops...)
			p.TopLogProbs = 0
			if len(s.Stop) > 0 {
				p.Stop = func(gen []int32) bool { return cutAtStop(s.Tok.Decode(gen), s.Stop) >= 0 }
			}
			p.MaxTokens = min(p.MaxTokens, positions-len(ids))
			seq := &model.Seq{Prompt: ids, Params: p}
			ok, err := e.Add(seq)
			var kvErr *model.KVBudgetError
			if errors.As(err, &kvErr) {
				return fmt.Errorf("student: an answer of up to %d tokens (prompt and max tokens) needs %.1f MiB of key/value cache, more than the %.1f MiB allowed: lower the max tokens or raise the cache",
					kvErr.Tokens, float64(kvErr.Need)/(1<<20), float64(kvErr.Budget)/(1<<20))
			}
			if err != nil {
				return fmt.Errorf("student: %s: %w", job.ID, err)
			}
			if !ok {
				break
			}
			running[seq] = job
			next++
		}
		if len(running) == 0 {
			continue
		}
		got, err := e.Step()
		if err != nil {
			return err
		}
		for _, seq := range got {
			if !seq.Done {
				continue
			}
			job := running[seq]
			delete(running, seq)
			if err := done(job, s.answer(seq), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// answer is a finished sequence's text: without its stop token, cut before
// a stop string.
func (s *ModelSampler) answer(seq *model.Seq) Sampled {
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
	text := s.Tok.Decode(toks)
	finish := g.Finish
	if i := cutAtStop(text, s.Stop); i >= 0 {
		text, finish = text[:i], "stop"
	}
	return Sampled{Response: text, Finish: finish, Tokens: len(g.Tokens)}
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

func dataMessages(msgs []Message) []data.Message {
	out := make([]data.Message, len(msgs))
	for i, m := range msgs {
		out[i] = data.Message{Role: m.Role, Content: m.Content}
	}
	return out
}
