package elicit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/model/tokenizer"
)

// LabelConfig says how the teacher answers a prompt file.
type LabelConfig struct {
	Client *Client
	// Prompts is a JSONL file of {"prompt": text} or {"messages": [...]}
	// lines (a "messages" list ending in a user turn; any other fields are
	// ignored). Output is where the records go; an existing output is
	// continued (see Label).
	Prompts, Output string
	// N is how many answers each prompt gets (default 1); each is its own
	// request (n=1), so a resumed run redoes only the missing ones.
	N int
	// System, when set, is sent as the system message before each prompt.
	System string
	// Temperature is sent when not nil; MaxTokens when > 0.
	Temperature *float64
	MaxTokens   int
	// Seed, when not nil, makes each request carry its own seed, derived
	// from Seed and the record's id: an endpoint that honours seeds (vLLM,
	// kdnative serve) then answers the same way in every run, resumed or
	// not, whatever the concurrency.
	Seed *int64
	// TopLogprobs > 0 asks for each token's top alternatives (logprobs,
	// top_logprobs), kept in the records as "teacher_tokens" and
	// "teacher_top_logprobs".
	TopLogprobs int
	// MissingLogprobs is what an answer without the logprobs asked for
	// does: "error" (default: stop the run; what is written stays), "skip"
	// (count it and write nothing: a later run retries it) or "keep"
	// (write the record without them, counted).
	MissingLogprobs string
	// StudentTokenizer, when set, is a tokenizer folder whose ids the top
	// tokens are mapped to ("id"; -1 where a token's text is not exactly
	// one student token). Meaningful when teacher and student share a
	// tokenizer.
	StudentTokenizer string
	// StrictInput stops at the first bad prompt line; by default bad lines
	// are counted, reported on Log and skipped.
	StrictInput bool
	// Concurrency is how many requests are in flight (default 4).
	Concurrency int
	// MaxFailures stops the run after this many requests in a row failed
	// after their retries (default 10).
	MaxFailures int
	// Progress receives a progress bar; Log receives notes on skipped
	// lines. Either may be nil.
	Progress, Log io.Writer
}

type promptLine struct {
	line     int
	prompt   string
	messages []Message
}

// readPrompts reads a prompt file: its usable lines and the bad ones' count.
func readPrompts(path string, strict bool, log io.Writer, key string) ([]promptLine, int, error) {
	var out []promptLine
	bad := 0
	// JSONL or Parquet: data.ForEachRecord reads both.
	err := data.ForEachRecord(path, 256<<20, func(rec []byte, at data.LineError, err error) error {
		var p promptLine
		if err == nil {
			p, err = parsePrompt(string(rec), key)
		}
		if err != nil {
			if err := skipRecord(log, at, err, strict); err != nil {
				return err
			}
			bad++
			return nil
		}
		p.line = at.Line
		out = append(out, p)
		return nil
	})
	if err != nil {
		return nil, bad, err
	}
	return out, bad, nil
}

func parsePrompt(text, key string) (promptLine, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(text), &obj); err != nil {
		return promptLine{}, fmt.Errorf("not a JSON object: %v", err)
	}
	if raw, ok := obj["messages"]; ok && key == "prompt" {
		var msgs []Message
		if err := json.Unmarshal(raw, &msgs); err != nil {
			return promptLine{}, fmt.Errorf(`"messages" is not a list of {role, content}: %v`, err)
		}
		if len(msgs) == 0 || msgs[len(msgs)-1].Role != "user" {
			return promptLine{}, errors.New(`"messages" must end with a user turn`)
		}
		for i, m := range msgs {
			switch m.Role {
			case "system", "user", "assistant":
			default:
				return promptLine{}, fmt.Errorf("messages[%d].role %q: want system, user or assistant", i, m.Role)
			}
		}
		return promptLine{prompt: msgs[len(msgs)-1].Content, messages: msgs}, nil
	}
	raw, ok := obj[key]
	if !ok {
		if key == "prompt" {
			return promptLine{}, errors.New(`has neither "prompt" nor "messages"`)
		}
		return promptLine{}, fmt.Errorf("has no %q", key)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || strings.TrimSpace(s) == "" {
		return promptLine{}, fmt.Errorf("%q is not a non-empty string", key)
	}
	return promptLine{prompt: s}, nil
}

// task is one record to make: id is its key in the output.
type task struct {
	id string
	do func(ctx context.Context) (rec any, u Usage, err error)
}

// group is a task's records when it makes several, written together.
type group struct {
	ids  []string
	recs []any
}

// skipError is a counted answer that makes no record (a later run retries).
type skipError struct {
	count *int
	err   error
}

func (e *skipError) Error() string { return e.err.Error() }

// stopError is an answer that stops the run.
type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }
func (e *stopError) Unwrap() error { return e.err }

// runTasks runs the tasks not yet in out, up to conc at a time, writing each
// record as it comes, and shows their progress on prog, counted in unit. It stops at a fatal error (refused key, …), a write
// error, ctx's end, or maxFail failures in a row.
func runTasks(ctx context.Context, tasks []task, out *resumable, conc, maxFail int, prog io.Writer, unit string, mu *sync.Mutex, sum *Summary, client *Client) error {
	if conc <= 0 {
		conc = 4
	}
	if maxFail <= 0 {
		maxFail = 10
	}
	var todo []task
	for _, t := range tasks {
		if out.done(t.id) {
			sum.Resumed++
		} else {
			todo = append(todo, t)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stopErr, lastErr error
	inARow := 0
	if client != nil {
		prev := client.OnRetry
		client.OnRetry = func(err error) {
			mu.Lock()
			sum.Retries++
			mu.Unlock()
			if prev != nil {
				prev(err)
			}
		}
		defer func() { client.OnRetry = prev }()
	}
	bar := newProgress(prog, unit, len(tasks), sum.Resumed)
	bar.perRequest = true
	defer bar.end()
	ch := make(chan task)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range ch {
				rec, u, err := t.do(ctx)
				mu.Lock()
				if err == nil {
					var wrote bool
					if g, ok := rec.(group); ok {
						wrote, err = out.writeGroup(t.id, g.ids, g.recs)
					} else {
						wrote, err = out.write(t.id, rec)
					}
					switch {
					case err != nil:
						if stopErr == nil {
							stopErr = fmt.Errorf("writing the output: %w", err)
						}
						cancel()
					case wrote:
						if g, ok := rec.(group); ok {
							sum.Records += len(g.recs)
						} else {
							sum.Records++
							if t, ok := rec.(tallier); ok {
								t.tally(sum)
							}
						}
						sum.PromptTokens += u.PromptTokens
						sum.CompletionTokens += u.CompletionTokens
						bar.add(unitWritten)
					}
					inARow = 0
					mu.Unlock()
					continue
				}
				var skip *skipError
				switch {
				case ctx.Err() != nil:
				case errors.As(err, &skip):
					*skip.count++
					inARow = 0
					bar.add(unitSkipped)
				case Fatal(err) || errors.As(err, new(*stopError)):
					if stopErr == nil {
						stopErr = err
					}
					cancel()
				default:
					sum.Failures++
					bar.add(unitFailed)
					lastErr = fmt.Errorf("%s: %w", t.id, err)
					inARow++
					if inARow >= maxFail && stopErr == nil {
						stopErr = fmt.Errorf("%d requests in a row failed; last: %w", inARow, lastErr)
						cancel()
					}
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, t := range todo {
		select {
		case ch <- t:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	if stopErr != nil {
		return stopErr
	}
	if ctx.Err() != nil {
		return ctx.Err() // the caller's context ended
	}
	if sum.Failures > 0 {
		return fmt.Errorf("%d requests failed after their retries (last: %v); run again with the same output to retry them", sum.Failures, lastErr)
	}
	return nil
}

// labelRecord is one teacher answer. Every record carries the endpoint's
// finish_reason ("stop": the answer ended; "length": cut at max_tokens;
// null when the endpoint gave none), as the OpenAI API spells it, so that
// training can tell a finished answer from a cut one. An empty answer is
// written like any other (it is what the teacher said) and counted in the
// Summary; kdnative train skips it.
type labelRecord struct {
	ID                 string         `json:"id"`
	Prompt             string         `json:"prompt"`
	Response           string         `json:"response"`
	Messages           []Message      `json:"messages,omitempty"`
	Finish             *string        `json:"finish_reason"`
	TeacherTokens      []TopLogprob   `json:"teacher_tokens,omitempty"`
	TeacherTopLogprobs [][]TopLogprob `json:"teacher_top_logprobs,omitempty"`
}

// tally counts the record's kind once it is written.
func (r labelRecord) tally(s *Summary) {
	if strings.TrimSpace(r.Response) == "" {
		s.EmptyAnswers++
	}
	if r.Finish != nil && *r.Finish == "length" {
		s.LengthLimited++
	}
}

// tallier is a record that counts itself in the Summary when written.
type tallier interface{ tally(*Summary) }

// requestSeed is the seed of record id's request: a hash of the run's seed
// and the id, so it does not depend on the order requests are made in. It
// is non-negative (some endpoints refuse negative seeds).
func requestSeed(seed int64, id string) int64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s", seed, id)
	return int64(h.Sum64() >> 1)
}

// Label has the teacher answer every prompt N times, writing one
// {"id", "prompt", "response"} record per answer ("messages" too, with the
// answer as the last turn, when the prompt had a system prompt or was a
// message list: kdnative train then trains on the whole chat). The id is
// "p<line>.s<sample>", the prompt's line number in the prompt file: an
// interrupted run, started again with the same files, keeps every record
// already written (a torn last line is cut off), makes only the missing
// ones, and never writes a key twice. Records come in the order they are
// made, not the prompts' order.
func Label(ctx context.Context, cfg LabelConfig) (Summary, error) {
	start := time.Now()
	var sum Summary
	if cfg.Client == nil {
		return sum, errors.New("label: no client")
	}
	if cfg.N <= 0 {
		cfg.N = 1
	}
	switch cfg.MissingLogprobs {
	case "":
		cfg.MissingLogprobs = "error"
	case "error", "skip", "keep":
	default:
		return sum, fmt.Errorf("label: missing-logprobs %q: want error, skip or keep", cfg.MissingLogprobs)
	}
	if cfg.TopLogprobs < 0 || cfg.TopLogprobs > 20 {
		return sum, fmt.Errorf("label: top-logprobs %d: want 0 to 20 (the OpenAI API's range)", cfg.TopLogprobs)
	}
	var tok *tokenizer.Tokenizer
	if cfg.StudentTokenizer != "" {
		var err error
		if tok, err = tokenizer.LoadDir(cfg.StudentTokenizer); err != nil {
			return sum, fmt.Errorf("label: student tokenizer: %w", err)
		}
	}
	prompts, bad, err := readPrompts(cfg.Prompts, cfg.StrictInput, cfg.Log, "prompt")
	sum.BadLines = bad
	if err != nil {
		return sum, err
	}
	out, err := openResumable(cfg.Output)
	if err != nil {
		return sum, err
	}
	var mu sync.Mutex
	tasks := make([]task, 0, len(prompts)*cfg.N)
	for _, p := range prompts {
		msgs := p.messages
		if msgs == nil {
			msgs = []Message{{Role: "user", Content: p.prompt}}
		}
		if cfg.System != "" && msgs[0].Role != "system" {
			msgs = append([]Message{{Role: "system", Content: cfg.System}}, msgs...)
		}
		for s := range cfg.N {
			id := fmt.Sprintf("p%d.s%d", p.line, s)
			tasks = append(tasks, task{id: id, do: func(ctx context.Context) (any, Usage, error) {
				req := ChatRequest{Messages: msgs, MaxTokens: cfg.MaxTokens, Temperature: cfg.Temperature}
				if cfg.Seed != nil {
					s := requestSeed(*cfg.Seed, id)
					req.Seed = &s
				}
				if cfg.TopLogprobs > 0 {
					k := cfg.TopLogprobs
					req.Logprobs, req.TopLogprobs = true, &k
				}
				resp, err := cfg.Client.Chat(ctx, req)
				if err != nil {
					return nil, Usage{}, err
				}
				ch := resp.Choices[0]
				rec := labelRecord{ID: id, Prompt: p.prompt, Response: ch.Message.Content}
				if ch.FinishReason != "" {
					rec.Finish = &ch.FinishReason
				}
				if p.messages != nil || cfg.System != "" {
					rec.Messages = append(append([]Message(nil), msgs...), Message{Role: "assistant", Content: ch.Message.Content})
				}
				if cfg.TopLogprobs > 0 {
					// An empty answer has no tokens to have logprobs for.
					if ch.Message.Content != "" && (ch.Logprobs == nil || len(ch.Logprobs.Content) == 0) {
						e := fmt.Errorf("%s: the endpoint's answer has no logprobs though top_logprobs %d was asked for (does the endpoint support logprobs?)", id, cfg.TopLogprobs)
						switch cfg.MissingLogprobs {
						case "error":
							return nil, Usage{}, &stopError{fmt.Errorf("%w; use --missing-logprobs skip or keep to go on without them", e)}
						case "skip":
							return nil, Usage{}, &skipError{&sum.MissingLogprobs, e}
						}
						mu.Lock()
						sum.MissingLogprobs++
						mu.Unlock()
					} else if ch.Logprobs != nil {
						rec.TeacherTokens = make([]TopLogprob, len(ch.Logprobs.Content))
						rec.TeacherTopLogprobs = make([][]TopLogprob, len(ch.Logprobs.Content))
						unmapped := 0
						for i, t := range ch.Logprobs.Content {
							rec.TeacherTokens[i] = TopLogprob{Token: t.Token, Logprob: t.Logprob, Bytes: t.Bytes}
							rec.TeacherTopLogprobs[i] = t.TopLogprobs
							if tok != nil {
								unmapped += mapID(tok, &rec.TeacherTokens[i])
								for j := range rec.TeacherTopLogprobs[i] {
									unmapped += mapID(tok, &rec.TeacherTopLogprobs[i][j])
								}
							}
						}
						if unmapped > 0 {
							mu.Lock()
							sum.Unmapped += unmapped
							mu.Unlock()
						}
					}
				}
				return rec, resp.Usage, nil
			}})
		}
	}
	err = runTasks(ctx, tasks, out, cfg.Concurrency, cfg.MaxFailures, cfg.Progress, "answers", &mu, &sum, cfg.Client)
	if cerr := out.close(); err == nil {
		err = cerr
	}
	sum.Elapsed = time.Since(start)
	return sum, err
}

// mapID sets t.ID to the student's id for t's text: the token's bytes (or
// text) must encode to exactly one token, or be a vocabulary or added token
// as written. It returns 1 when there is none (ID -1).
func mapID(tok *tokenizer.Tokenizer, t *TopLogprob) int {
	text := t.Token
	if len(t.Bytes) > 0 {
		b := make([]byte, len(t.Bytes))
		for i, v := range t.Bytes {
			b[i] = byte(v)
		}
		text = string(b)
	}
	id := int32(-1)
	if ids := tok.EncodeOrdinary(text); len(ids) == 1 {
		id = ids[0]
	} else if v, ok := tok.TokenID(t.Token); ok {
		id = v
	}
	t.ID = &id
	if id < 0 {
		return 1
	}
	return 0
}

// skipLine handles a bad input line: under strict it is the run's error;
// otherwise it is named on the log and skipped (the caller counts it).
// skipRecord is skipLine at a record's position: a JSONL line, or a Parquet
// row (its row group and row).
func skipRecord(log io.Writer, at data.LineError, err error, strict bool) error {
	if !at.Parquet {
		return skipLine(log, at.File, at.Line, err, strict)
	}
	if strict {
		return fmt.Errorf("%s: %v", at.String(), err)
	}
	if log != nil {
		fmt.Fprintf(log, "%s skipped: %v\n", at.String(), err)
	}
	return nil
}

func skipLine(log io.Writer, path string, n int, err error, strict bool) error {
	if strict {
		return fmt.Errorf("%s line %d: %v", path, n, err)
	}
	if log != nil {
		fmt.Fprintf(log, "%s line %d skipped: %v\n", path, n, err)
	}
	return nil
}
