package elicit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode"
)

// ExpandConfig says how the teacher writes new instructions from seeds
// (Self-Instruct style).
type ExpandConfig struct {
	Client *Client
	// Seeds is a JSONL file of {"prompt": text} lines ({"messages"} lines
	// give their last user turn). Output receives {"id": "x<n>", "prompt":
	// text} lines; an existing output is continued.
	Seeds, Output string
	// Count is how many new instructions Output should hold in all.
	Count int
	// Shown is how many examples each request shows (default 4): drawn
	// from the seeds, with up to a quarter from instructions made earlier.
	Shown int
	// PerRequest is how many instructions each request asks for (default 8).
	PerRequest int
	// Temperature is sent when not nil (default 1); MaxTokens when > 0
	// (default 512).
	Temperature *float64
	MaxTokens   int
	// NearDup in (0, 1] also drops instructions whose word 5-gram Jaccard
	// similarity to a seed or earlier instruction is estimated at NearDup or
	// more (MinHash, as Curate, with the same meaning); 0 drops exact
	// duplicates (case, spacing and punctuation ignored) only. kdnative
	// elicit expand's default is 0.7.
	NearDup float64
	// MinWords and MaxChars bound an instruction (default 3 and 1000).
	MinWords, MaxChars int
	// Prompt, when set, replaces the request text: "{examples}" in it
	// becomes the numbered examples and "{n}" PerRequest.
	Prompt string
	// RandSeed seeds the choice of examples.
	RandSeed uint64
	// Concurrency, MaxFailures, Progress and Log are as in LabelConfig.
	Concurrency, MaxFailures int
	Progress, Log            io.Writer
}

var listMarker = regexp.MustCompile(`^\s*(?:\(?\d{1,3}[.):]|[-*•]|#+)\s*`)

// parseInstructions splits a teacher's answer into instructions: one a
// line, list numbers and bullets removed, preambles ("Here are …:") and
// lines outside the bounds dropped.
func parseInstructions(text string, minWords, maxChars int) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(listMarker.ReplaceAllString(line, ""))
		line = strings.Trim(line, `"`)
		line = strings.TrimPrefix(strings.TrimPrefix(line, "Instruction:"), "instruction:")
		line = strings.TrimSpace(line)
		low := strings.ToLower(line)
		if line == "" || strings.HasSuffix(line, ":") || strings.HasPrefix(low, "here are") || strings.HasPrefix(low, "sure") {
			continue
		}
		if len(strings.Fields(line)) < minWords || len([]rune(line)) > maxChars {
			continue
		}
		out = append(out, line)
	}
	return out
}

const defaultExpandPrompt = "You are asked to come up with new, diverse task instructions for an AI assistant. Here are some examples:\n\n{examples}\nWrite {n} new instructions that differ from the examples and from each other in topic and in the kind of task. Write each on its own line, numbered, with nothing else."

func expandPrompt(tmpl string, examples []string, n int) string {
	if tmpl == "" {
		tmpl = defaultExpandPrompt
	}
	var b strings.Builder
	for i, e := range examples {
		fmt.Fprintf(&b, "%d. %s\n", i+1, strings.ReplaceAll(e, "\n", " "))
	}
	return strings.NewReplacer("{examples}", b.String(), "{n}", fmt.Sprint(n)).Replace(tmpl)
}

// dedupKey is an instruction's exact-duplicate key: its letters and digits,
// lower-cased, words separated by single spaces.
func dedupKey(s string) uint64 {
	return textHash(strings.Join(strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	}), " "))
}

// Expand has the teacher write instructions until Output holds Count. Each
// request shows a few random examples and asks for more; each answer is
// split into lines, and a line is kept when it is not an exact or near
// duplicate of a seed or of an instruction kept before (in this run or an
// earlier one). Records are written whole, one at a time, so a killed run
// continues where it stopped (a torn last line is cut off).
func Expand(ctx context.Context, cfg ExpandConfig) (Summary, error) {
	start := time.Now()
	var sum Summary
	if cfg.Client == nil {
		return sum, errors.New("expand: no client")
	}
	if cfg.Count <= 0 {
		return sum, errors.New("expand: count must be > 0")
	}
	if cfg.Shown <= 0 {
		cfg.Shown = 4
	}
	if cfg.PerRequest <= 0 {
		cfg.PerRequest = 8
	}
	if cfg.MaxTokens <= 0 {
		cfg.MaxTokens = 512
	}
	if cfg.Temperature == nil {
		t := 1.0
		cfg.Temperature = &t
	}
	if !(cfg.NearDup >= 0 && cfg.NearDup <= 1) {
		return sum, fmt.Errorf("expand: near-duplicate threshold %g must be in [0, 1] (0: exact duplicates only)", cfg.NearDup)
	}
	if cfg.MinWords <= 0 {
		cfg.MinWords = 3
	}
	if cfg.MaxChars <= 0 {
		cfg.MaxChars = 1000
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 10
	}
	seedLines, bad, err := readPrompts(cfg.Seeds, false, cfg.Log, "prompt")
	sum.BadLines = bad
	if err != nil {
		return sum, err
	}
	if len(seedLines) == 0 {
		return sum, fmt.Errorf("expand: %s has no seed instructions", cfg.Seeds)
	}
	out, err := openResumable(cfg.Output)
	if err != nil {
		return sum, err
	}
	defer out.close()

	exact := map[uint64]bool{}
	var near *lsh
	if cfg.NearDup > 0 {
		near = newLSH(cfg.NearDup)
	}
	seen := func(s string) bool {
		if exact[dedupKey(s)] {
			return true
		}
		return near != nil && near.nearDuplicate(s)
	}
	remember := func(s string) {
		exact[dedupKey(s)] = true
		if near != nil {
			near.add(s)
		}
	}
	var seeds, made []string
	for _, p := range seedLines {
		seeds = append(seeds, p.prompt)
		remember(p.prompt)
	}
	for _, rec := range out.recs {
		if p, ok := rec["prompt"].(string); ok {
			made = append(made, p)
			remember(p)
		}
	}
	sum.Resumed = len(out.recs)
	if len(made) >= cfg.Count {
		sum.Elapsed = time.Since(start)
		return sum, nil
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(cfg.RandSeed, uint64(len(made))))
	var stopErr, lastErr error
	failsInARow, emptyInARow := 0, 0
	prev := cfg.Client.OnRetry
	cfg.Client.OnRetry = func(err error) {
		mu.Lock()
		sum.Retries++
		mu.Unlock()
		if prev != nil {
			prev(err)
		}
	}
	defer func() { cfg.Client.OnRetry = prev }()
	bar := newProgress(cfg.Progress, "instructions", cfg.Count, len(made))
	defer bar.end()
	stop := func(err error) {
		if stopErr == nil {
			stopErr = err
		}
		cancel()
	}
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				mu.Lock()
				if len(made) >= cfg.Count {
					mu.Unlock()
					cancel()
					return
				}
				var ex []string
				fromMade := min(len(made), cfg.Shown/4)
				for _, i := range rng.Perm(len(made))[:fromMade] {
					ex = append(ex, made[i])
				}
				for _, i := range rng.Perm(len(seeds))[:min(len(seeds), cfg.Shown-fromMade)] {
					ex = append(ex, seeds[i])
				}
				rng.Shuffle(len(ex), func(i, j int) { ex[i], ex[j] = ex[j], ex[i] })
				mu.Unlock()

				resp, err := cfg.Client.Chat(ctx, ChatRequest{Messages: []Message{{Role: "user", Content: expandPrompt(cfg.Prompt, ex, cfg.PerRequest)}},
					MaxTokens: cfg.MaxTokens, Temperature: cfg.Temperature})
				mu.Lock()
				switch {
				case ctx.Err() != nil:
				case err != nil && Fatal(err):
					stop(err)
				case err != nil:
					sum.Failures++
					bar.add(unitFailed)
					lastErr = err
					failsInARow++
					if failsInARow >= cfg.MaxFailures {
						stop(fmt.Errorf("%d requests in a row failed; last: %w", failsInARow, lastErr))
					}
				default:
					failsInARow = 0
					sum.PromptTokens += resp.Usage.PromptTokens
					sum.CompletionTokens += resp.Usage.CompletionTokens
					kept := 0
					for _, ins := range parseInstructions(resp.Choices[0].Message.Content, cfg.MinWords, cfg.MaxChars) {
						if len(made) >= cfg.Count {
							break
						}
						if seen(ins) {
							continue
						}
						id := fmt.Sprintf("x%d", len(made)+1)
						if _, err := out.write(id, map[string]string{"id": id, "prompt": ins}); err != nil {
							stop(fmt.Errorf("writing the output: %w", err))
							break
						}
						remember(ins)
						made = append(made, ins)
						sum.Records++
						kept++
						bar.add(unitWritten)
					}
					if kept == 0 {
						sum.Unparsed++
						emptyInARow++
						if emptyInARow >= 5*cfg.MaxFailures {
							stop(fmt.Errorf("%d answers in a row gave no new instruction (all duplicates or unparseable); %d of %d made", emptyInARow, len(made), cfg.Count))
						}
					} else {
						emptyInARow = 0
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sum.Elapsed = time.Since(start)
	if stopErr != nil {
		return sum, stopErr
	}
	if len(made) < cfg.Count {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
	}
	return sum, nil
}
