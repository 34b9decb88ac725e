package elicit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kdnative/kdnative/kd/data"
)

// FeedbackConfig says how the teacher judges candidate responses.
type FeedbackConfig struct {
	Client *Client
	// Input is JSONL (or Parquet) of {"prompt", "responses": [a, b, …]} lines, or of
	// {"prompt", "response"} lines (what kdnative generate writes with
	// several samples a prompt), grouped by prompt text. Output receives
	// {"id", "prompt", "chosen", "rejected"} lines that kdnative train's DPO
	// reads; an existing output is continued.
	Input, Output string
	// Criteria, when set, replaces "helpfulness, correctness and clarity"
	// in the judging prompt.
	Criteria string
	// Prompt, when set, replaces the judging prompt: {criteria}, {prompt},
	// {responses} (numbered "Response i:" blocks) and {k} are filled in.
	Prompt string
	// MaxTokens bounds the judgement (default 16); Temperature is sent when
	// not nil (default 0).
	MaxTokens   int
	Temperature *float64
	// RandSeed seeds the order the candidates are shown in (shuffled
	// against position bias).
	RandSeed uint64
	// StrictInput, Concurrency, MaxFailures, Progress and Log are as in
	// LabelConfig.
	StrictInput              bool
	Concurrency, MaxFailures int
	Progress, Log            io.Writer
}

type candidates struct {
	line      int
	prompt    string
	responses []string
}

func readCandidates(path string, strict bool, log io.Writer) ([]candidates, int, error) {
	var out []candidates
	byPrompt := map[string]int{} // prompt → index in out, for response lines
	bad := 0
	// JSONL or Parquet: data.ForEachRecord reads both.
	err := data.ForEachRecord(path, 256<<20, func(text []byte, at data.LineError, err error) error {
		var rec struct {
			Prompt    *string  `json:"prompt"`
			Responses []string `json:"responses"`
			Response  *string  `json:"response"`
		}
		if err == nil {
			err = json.Unmarshal(text, &rec)
			switch {
			case err != nil:
				err = fmt.Errorf("not a JSON object with a string prompt and responses: %v", err)
			case rec.Prompt == nil || *rec.Prompt == "":
				err = errors.New(`no "prompt"`)
			case rec.Responses == nil && rec.Response == nil:
				err = errors.New(`neither "responses" nor "response"`)
			case rec.Responses != nil && len(rec.Responses) < 2:
				err = errors.New(`"responses" needs two or more candidates`)
			}
		}
		if err != nil {
			if err := skipRecord(log, at, err, strict); err != nil {
				return err
			}
			bad++
			return nil
		}
		n := at.Line
		if rec.Responses != nil {
			out = append(out, candidates{line: n, prompt: *rec.Prompt, responses: rec.Responses})
			return nil
		}
		if i, ok := byPrompt[*rec.Prompt]; ok {
			out[i].responses = append(out[i].responses, *rec.Response)
			return nil
		}
		byPrompt[*rec.Prompt] = len(out)
		out = append(out, candidates{line: n, prompt: *rec.Prompt, responses: []string{*rec.Response}})
		return nil
	})
	if err != nil {
		return nil, bad, err
	}
	kept := out[:0]
	for _, c := range out {
		if len(c.responses) < 2 {
			bad++
			if log != nil {
				fmt.Fprintf(log, "%s line %d skipped: its prompt has one response; judging needs two or more\n", path, c.line)
			}
			continue
		}
		kept = append(kept, c)
	}
	return kept, bad, nil
}

const defaultJudgePrompt = "You are judging responses to a prompt by {criteria}.\n\nPrompt:\n{prompt}\n\n{responses}Which response is best? Answer with its number (1 to {k}) only."

func judgePrompt(tmpl, criteria, prompt string, shown []string) string {
	if tmpl == "" {
		tmpl = defaultJudgePrompt
	}
	var b strings.Builder
	for i, r := range shown {
		fmt.Fprintf(&b, "Response %d:\n%s\n\n", i+1, r)
	}
	return strings.NewReplacer("{criteria}", criteria, "{prompt}", prompt, "{responses}", b.String(), "{k}", strconv.Itoa(len(shown))).Replace(tmpl)
}

var firstNumber = regexp.MustCompile(`\d+`)

// parseJudgement is the number (1..k) a judgement names first, or 0.
func parseJudgement(text string, k int) int {
	m := firstNumber.FindString(text)
	if m == "" {
		return 0
	}
	v, err := strconv.Atoi(m)
	if err != nil || v < 1 || v > k {
		return 0
	}
	return v
}

// Feedback has the teacher pick the best of each prompt's candidates and
// writes the best against each other candidate as a preference pair:
// {"id": "f<line>.r<j>", "prompt", "chosen", "rejected"} (j the rejected
// candidate's index), so k candidates give k−1 pairs. Candidates are shown
// in a shuffled order; a judgement that names no candidate is counted
// (Unparsed) and writes nothing, so a later run asks again. A judgement's
// pairs are written in one write; a resumed run skips every prompt with
// pairs already in the output.
func Feedback(ctx context.Context, cfg FeedbackConfig) (Summary, error) {
	start := time.Now()
	var sum Summary
	if cfg.Client == nil {
		return sum, errors.New("feedback: no client")
	}
	if cfg.Criteria == "" {
		cfg.Criteria = "helpfulness, correctness and clarity"
	}
	if cfg.MaxTokens <= 0 {
		cfg.MaxTokens = 16
	}
	if cfg.Temperature == nil {
		t := 0.0
		cfg.Temperature = &t
	}
	cands, bad, err := readCandidates(cfg.Input, cfg.StrictInput, cfg.Log)
	sum.BadLines = bad
	if err != nil {
		return sum, err
	}
	out, err := openResumable(cfg.Output)
	if err != nil {
		return sum, err
	}
	for _, rec := range out.recs {
		if id, _ := rec["id"].(string); strings.Contains(id, ".r") {
			out.have[id[:strings.LastIndex(id, ".r")]] = true
		}
	}
	var mu sync.Mutex
	tasks := make([]task, 0, len(cands))
	for _, c := range cands {
		gid := fmt.Sprintf("f%d", c.line)
		rng := rand.New(rand.NewPCG(cfg.RandSeed, uint64(c.line)))
		order := rng.Perm(len(c.responses)) // shown[i] = responses[order[i]]
		shown := make([]string, len(order))
		for i, j := range order {
			shown[i] = c.responses[j]
		}
		tasks = append(tasks, task{id: gid, do: func(ctx context.Context) (any, Usage, error) {
			resp, err := cfg.Client.Chat(ctx, ChatRequest{Messages: []Message{{Role: "user", Content: judgePrompt(cfg.Prompt, cfg.Criteria, c.prompt, shown)}},
				MaxTokens: cfg.MaxTokens, Temperature: cfg.Temperature})
			if err != nil {
				return nil, Usage{}, err
			}
			pick := parseJudgement(resp.Choices[0].Message.Content, len(shown))
			if pick == 0 {
				mu.Lock()
				sum.PromptTokens += resp.Usage.PromptTokens
				sum.CompletionTokens += resp.Usage.CompletionTokens
				mu.Unlock()
				return nil, Usage{}, &skipError{&sum.Unparsed, fmt.Errorf("%s: the judgement %q names no candidate", gid, resp.Choices[0].Message.Content)}
			}
			best := order[pick-1]
			var g group
			for j, r := range c.responses {
				if j == best || r == c.responses[best] {
					continue
				}
				id := fmt.Sprintf("%s.r%d", gid, j)
				g.ids = append(g.ids, id)
				g.recs = append(g.recs, map[string]any{"id": id, "prompt": c.prompt, "chosen": c.responses[best], "rejected": r})
			}
			if len(g.recs) == 0 {
				return nil, Usage{}, &skipError{&sum.Unparsed, fmt.Errorf("%s: all candidates are the same", gid)}
			}
			return g, resp.Usage, nil
		}})
	}
	err = runTasks(ctx, tasks, out, cfg.Concurrency, cfg.MaxFailures, cfg.Progress, "prompts", &mu, &sum, cfg.Client)
	if cerr := out.close(); err == nil {
		err = cerr
	}
	sum.Elapsed = time.Since(start)
	return sum, err
}
