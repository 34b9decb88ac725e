package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/elicit"
	"github.com/kdnative/kdnative/kd/serve"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/runtime"
)

func elicitCommand() *cli.Command {
	return &cli.Command{
		Name:  "elicit",
		Usage: "get the teacher's knowledge into training data",
		Subcommands: []*cli.Command{{
			Name:  "curate",
			Usage: "filter generated JSONL by length and script and remove exact and near duplicates",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "input", Required: true, Usage: "JSONL records to filter (elicit label's, expand's, or any with the --field fields)"},
				&cli.StringFlag{Name: "output", Required: true, Usage: "JSONL of the records kept, in their order (written whole, then renamed into place)"},
				&cli.StringFlag{Name: "dropped", Usage: "also write the dropped records here, each with its \"reason\""},
				&cli.StringSliceFlag{Name: "field", DefaultText: "prompt and response, or the messages' contents", Usage: "a record field whose text is judged (repeat for several)"},
				&cli.IntFlag{Name: "min-chars", DefaultText: "no minimum", Usage: "drop records whose judged text has fewer characters"},
				&cli.IntFlag{Name: "max-chars", DefaultText: "no maximum", Usage: "drop records whose judged text has more characters"},
				&cli.StringFlag{Name: "script", Usage: "keep records written in this Unicode script (latin, han, cyrillic, …)"},
				&cli.Float64Flag{Name: "script-fraction", Value: 0.8, Usage: "the share of letters that must be in --script"},
				nearDupFlag(0.8, "a record"),
			},
			Action: func(c *cli.Context) error {
				rep, err := elicit.Curate(elicit.CurateConfig{Input: c.String("input"), Output: c.String("output"),
					Dropped: c.String("dropped"), Fields: c.StringSlice("field"), MinChars: c.Int("min-chars"),
					MaxChars: c.Int("max-chars"), Script: c.String("script"), ScriptFraction: c.Float64("script-fraction"),
					NearDup: c.Float64("near-dup")})
				if err != nil {
					return err
				}
				fmt.Fprintln(c.App.Writer, rep)
				return nil
			},
		}, elicitLabelCommand(), elicitExpandCommand(), elicitFeedbackCommand(), elicitSelfCommand()},
	}
}

// nearDupFlag is --near-dup, one meaning in expand and curate: the
// estimated similarity at which what (a record, an instruction) is a near
// duplicate of an earlier one, 0 for exact duplicates only.
func nearDupFlag(value float64, what string) cli.Flag {
	return &cli.Float64Flag{Name: "near-dup", Value: value,
		Usage: "drop " + what + " whose word 5-gram Jaccard similarity (MinHash estimate) to an earlier one reaches this, in (0, 1]; 0: exact duplicates only (case and spacing ignored)"}
}

// teacherFlags say where the teacher is: an OpenAI-compatible endpoint, or a
// local model folder.
func teacherFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "endpoint", Usage: "OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1 (vLLM, llama.cpp's server, kdnative serve, a hosted API)"},
		&cli.StringFlag{Name: "model", Usage: "the model name the endpoint serves (required with --endpoint; with --local, the folder's name by default)"},
		&cli.StringFlag{Name: "api-key-env", Usage: "environment variable holding the API key (sent as a bearer token; never printed or written)"},
		&cli.StringFlag{Name: "local", Usage: "a local Hugging Face model folder to use instead of --endpoint (served in-process on loopback, as kdnative serve)"},
		&cli.StringFlag{Name: "template", Value: "auto", Usage: "with --local: the chat format, auto, chatml or qwen3"},
		&cli.IntFlag{Name: "concurrency", Value: 4, Usage: "requests in flight"},
		&cli.IntFlag{Name: "retries", Value: 5, Usage: "retries per request on 429, 5xx, timeouts and connection errors (exponential backoff; 0: none)"},
		&cli.DurationFlag{Name: "timeout", Value: 120 * time.Second, Usage: "time limit per attempt"},
		&cli.IntFlag{Name: "max-failures", Value: 10, Usage: "stop after this many requests in a row fail after their retries"},
		&cli.BoolFlag{Name: "quiet", Usage: "no progress line (it goes to stderr: redrawn on a terminal, a plain line every 15 s otherwise)"},
	}
}

// teacherClient makes the client the flags ask for; done stops a local
// teacher.
func teacherClient(c *cli.Context) (client *elicit.Client, done func(), err error) {
	return teacherClientOn(c, nil)
}

// teacherClientOn is teacherClient with a local teacher on be (nil: the
// backend --device opens).
func teacherClientOn(c *cli.Context, be runtime.Backend) (client *elicit.Client, done func(), err error) {
	client = &elicit.Client{Model: c.String("model"), Timeout: c.Duration("timeout"), MaxRetries: c.Int("retries")}
	if c.Int("retries") == 0 {
		client.MaxRetries = -1
	}
	if env := c.String("api-key-env"); env != "" {
		client.APIKey = os.Getenv(env)
		if client.APIKey == "" {
			return nil, nil, fmt.Errorf("--api-key-env %s: that environment variable is empty or unset", env)
		}
	}
	switch {
	case c.String("local") != "" && c.String("endpoint") != "":
		return nil, nil, fmt.Errorf("give --endpoint or --local, not both")
	case c.String("endpoint") != "":
		if client.Model == "" {
			return nil, nil, fmt.Errorf("--model is required with --endpoint")
		}
		client.BaseURL = c.String("endpoint")
		return client, func() {}, nil
	case c.String("local") != "":
		if be == nil {
			if be, err = openBackend(c); err != nil {
				return nil, nil, err
			}
		}
		dir := c.String("local")
		if client.Model == "" {
			client.Model = filepath.Base(filepath.Clean(dir))
		}
		s, err := serve.New(be, serve.Config{Model: dir, ModelName: client.Model, Template: c.String("template"), MaxQueue: 1 << 20})
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			s.Close()
			return nil, nil, err
		}
		hs := &http.Server{Handler: s}
		go hs.Serve(ln)
		client.BaseURL = "http://" + ln.Addr().String() + "/v1"
		client.APIKey = ""
		return client, func() { hs.Close(); s.Close() }, nil
	}
	return nil, nil, fmt.Errorf("give --endpoint URL --model NAME, or --local MODEL_DIR")
}

func elicitLabelCommand() *cli.Command {
	return &cli.Command{
		Name:  "label",
		Usage: "have the teacher answer a prompt file: JSONL {id, prompt, response[, messages, teacher_tokens, teacher_top_logprobs]} for kdnative train; resumable",
		Flags: append(teacherFlags(),
			&cli.StringFlag{Name: "prompts", Required: true, Usage: `JSONL of {"prompt": text} or {"messages": [...]} lines`},
			&cli.StringFlag{Name: "output", Required: true, Usage: "JSONL written; an existing one is continued (records already there are kept and not redone)"},
			&cli.IntFlag{Name: "n", Value: 1, Usage: "answers per prompt"},
			&cli.StringFlag{Name: "system", Usage: "system prompt sent before each prompt"},
			&cli.Float64Flag{Name: "temperature", Value: -1, DefaultText: "the endpoint's", Usage: "sampling temperature"},
			&cli.IntFlag{Name: "max-tokens", DefaultText: "the endpoint's", Usage: "answer length limit in tokens (an answer cut there has finish_reason \"length\")"},
			&cli.Int64Flag{Name: "seed", DefaultText: "none: the endpoint samples anew", Usage: "random seed: each request gets one made from it and the record's id, so an endpoint that honours seeds (vLLM, kdnative serve) answers alike in every run"},
			&cli.IntFlag{Name: "top-logprobs", DefaultText: "0: none", Usage: "keep each token's top-k alternatives (0 to 20)"},
			&cli.StringFlag{Name: "missing-logprobs", Value: "error", Usage: "an answer without the logprobs asked for: error (stop), skip (count, no record; a later run asks again) or keep (record without them)"},
			&cli.StringFlag{Name: "student-tokenizer", Usage: "tokenizer folder to map the top tokens to ids (when teacher and student share a tokenizer)"},
			&cli.BoolFlag{Name: "strict", Usage: "stop at a bad prompt line instead of counting and skipping it"},
		),
		Action: func(c *cli.Context) error {
			client, done, err := teacherClient(c)
			if err != nil {
				return err
			}
			defer done()
			cfg := elicit.LabelConfig{Client: client, Prompts: c.String("prompts"), Output: c.String("output"), N: c.Int("n"),
				System: c.String("system"), MaxTokens: c.Int("max-tokens"), TopLogprobs: c.Int("top-logprobs"),
				MissingLogprobs: c.String("missing-logprobs"), StudentTokenizer: c.String("student-tokenizer"),
				StrictInput: c.Bool("strict"), Concurrency: c.Int("concurrency"), MaxFailures: c.Int("max-failures"), Log: c.App.ErrWriter}
			if t := c.Float64("temperature"); t >= 0 {
				cfg.Temperature = &t
			}
			if c.IsSet("seed") {
				seed := c.Int64("seed")
				cfg.Seed = &seed
			}
			if !c.Bool("quiet") {
				cfg.Progress = c.App.ErrWriter
			}
			sum, err := elicit.Label(c.Context, cfg)
			fmt.Fprintln(c.App.Writer, sum)
			return err
		},
	}
}

func elicitExpandCommand() *cli.Command {
	return &cli.Command{
		Name:  "expand",
		Usage: "have the teacher write new instructions from seed examples (Self-Instruct), deduplicated: JSONL {id, prompt}; resumable",
		Flags: append(teacherFlags(),
			&cli.StringFlag{Name: "seeds", Required: true, Usage: `JSONL of {"prompt": text} seed instructions`},
			&cli.StringFlag{Name: "output", Required: true, Usage: "JSONL written; an existing one is continued"},
			&cli.IntFlag{Name: "count", Required: true, Usage: "how many new instructions the output should hold"},
			&cli.IntFlag{Name: "shown", Value: 4, Usage: "examples shown per request"},
			&cli.IntFlag{Name: "per-request", Value: 8, Usage: "instructions asked for per request"},
			&cli.Float64Flag{Name: "temperature", Value: 1, Usage: "sampling temperature (high: more varied instructions)"},
			&cli.IntFlag{Name: "max-tokens", Value: 512, Usage: "answer length limit in tokens, per request"},
			nearDupFlag(0.7, "an instruction"),
			&cli.IntFlag{Name: "min-words", Value: 3, Usage: "drop instructions of fewer words"},
			&cli.IntFlag{Name: "max-chars", Value: 1000, Usage: "drop instructions of more characters"},
			&cli.StringFlag{Name: "prompt", Usage: "request text replacing the built-in one; {examples} and {n} are filled in"},
			&cli.Uint64Flag{Name: "seed", Usage: "random seed for the choice of examples shown (the same seed chooses alike in every run)"},
		),
		Action: func(c *cli.Context) error {
			client, done, err := teacherClient(c)
			if err != nil {
				return err
			}
			defer done()
			t := c.Float64("temperature")
			cfg := elicit.ExpandConfig{Client: client, Seeds: c.String("seeds"), Output: c.String("output"), Count: c.Int("count"),
				Shown: c.Int("shown"), PerRequest: c.Int("per-request"), Temperature: &t, MaxTokens: c.Int("max-tokens"),
				NearDup: c.Float64("near-dup"), MinWords: c.Int("min-words"), MaxChars: c.Int("max-chars"), Prompt: c.String("prompt"), RandSeed: c.Uint64("seed"),
				Concurrency: c.Int("concurrency"), MaxFailures: c.Int("max-failures"), Log: c.App.ErrWriter}
			if !c.Bool("quiet") {
				cfg.Progress = c.App.ErrWriter
			}
			sum, err := elicit.Expand(c.Context, cfg)
			fmt.Fprintln(c.App.Writer, sum)
			return err
		},
	}
}

func elicitFeedbackCommand() *cli.Command {
	return &cli.Command{
		Name:  "feedback",
		Usage: "have the teacher pick the best of each prompt's candidate responses: JSONL {id, prompt, chosen, rejected} (best vs each other) for DPO; resumable",
		Flags: append(teacherFlags(),
			&cli.StringFlag{Name: "input", Required: true, Usage: `JSONL of {"prompt", "responses": [...]} lines, or {"prompt", "response"} lines (kdnative generate's) grouped by prompt`},
			&cli.StringFlag{Name: "output", Required: true, Usage: "JSONL written; an existing one is continued"},
			&cli.StringFlag{Name: "criteria", DefaultText: "helpfulness, correctness and clarity", Usage: "what the judge looks for"},
			&cli.StringFlag{Name: "prompt", Usage: "judging prompt replacing the built-in one; {criteria}, {prompt}, {responses} and {k} are filled in"},
			&cli.IntFlag{Name: "max-tokens", Value: 16, Usage: "judgement length limit"},
			&cli.Uint64Flag{Name: "seed", Usage: "random seed for the order candidates are shown in (the same seed shows them alike in every run)"},
			&cli.BoolFlag{Name: "strict", Usage: "stop at a bad input line instead of counting and skipping it"},
		),
		Action: func(c *cli.Context) error {
			client, done, err := teacherClient(c)
			if err != nil {
				return err
			}
			defer done()
			cfg := elicit.FeedbackConfig{Client: client, Input: c.String("input"), Output: c.String("output"), Criteria: c.String("criteria"),
				Prompt: c.String("prompt"), MaxTokens: c.Int("max-tokens"), RandSeed: c.Uint64("seed"), StrictInput: c.Bool("strict"),
				Concurrency: c.Int("concurrency"), MaxFailures: c.Int("max-failures"), Log: c.App.ErrWriter}
			if !c.Bool("quiet") {
				cfg.Progress = c.App.ErrWriter
			}
			sum, err := elicit.Feedback(c.Context, cfg)
			fmt.Fprintln(c.App.Writer, sum)
			return err
		},
	}
}

func elicitSelfCommand() *cli.Command {
	return &cli.Command{
		Name: "self",
		Usage: "the student answers each prompt --n times, a rule or the teacher keeps the good answers, and they become SFT data (STaR, self-rewarding): " +
			"JSONL {id, prompt, response[, messages], finish_reason, score, sample}; resumable",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "student", Required: true, Usage: "the student: a Hugging Face model folder or a .gguf file, with its tokenizer"},
			&cli.StringFlag{Name: "student-template", Value: "auto", Usage: "how prompts are put to the student: auto (its chat template), a .jinja file, chatml, qwen3 or none (the text as is)"},
			&cli.StringFlag{Name: "prompts", Required: true, Usage: `JSONL or Parquet of {"prompt": text} or {"messages": [...]} records, with the reference answer beside them for a rule`},
			&cli.StringFlag{Name: "prompt-field", Value: "prompt", Usage: `the field holding the prompt text (e.g. GSM8K's "question"; "messages" is read only under "prompt")`},
			&cli.StringFlag{Name: "output", Required: true, Usage: "JSONL of the kept answers, in the prompts' order; an existing one is continued"},
			&cli.StringFlag{Name: "journal", DefaultText: "the output's name with .samples.jsonl", Usage: "JSONL of every answer and judgement as made (what a resumed run does not redo; what the student wrote and the judge said)"},
			&cli.IntFlag{Name: "n", Value: 4, Usage: "answers per prompt"},
			&cli.StringFlag{Name: "system", Usage: "system prompt put before each prompt"},
			&cli.IntFlag{Name: "max-tokens", Value: 256, Usage: "answer length limit in tokens (an answer cut there has finish_reason \"length\")"},
			&cli.Float64Flag{Name: "temperature", Value: 0.8, Usage: "sampling temperature (0: greedy, the same answer every time)"},
			&cli.IntFlag{Name: "top-k", Usage: "sample among the k most likely tokens (0: all)"},
			&cli.Float64Flag{Name: "top-p", Value: 1, Usage: "nucleus sampling"},
			&cli.Float64Flag{Name: "repetition-penalty", Value: 1, Usage: "make tokens already in the text this much less likely, as transformers does (1: off)"},
			&cli.StringSliceFlag{Name: "stop", Usage: "stop string (repeatable): an answer ends before it"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "random seed: each answer is sampled with a seed made from it and the answer's id, so a run gives the same answers at any batch size and after a resume"},
			&cli.IntFlag{Name: "batch-size", Value: 8, Usage: "answers the student decodes together"},
			&cli.IntFlag{Name: "kv-cache-mb", Value: 1024, Usage: "memory for the key/value caches of the answers being decoded, in MiB"},
			// The rule.
			&cli.StringFlag{Name: "answer-field", Usage: "rule: the prompt record's field with the reference answer (a string, number or list); an answer is kept when its extracted final answer matches"},
			&cli.StringFlag{Name: "reference-extract", Usage: "rule: extract the reference from the field as --extract does (a field holding a whole solution, GSM8K's \"… #### 72\")"},
			&cli.StringFlag{Name: "extract", Usage: "rule: how the final answer is found in the student's answer: boxed, gsm8k, last_number, first_number or a regular expression (its one group); default the whole answer (last_number under --match numeric)"},
			&cli.BoolFlag{Name: "extract-last", Usage: "rule: take the last match of an --extract regular expression, not the first"},
			&cli.StringFlag{Name: "match", Value: "exact", Usage: "rule: exact (after --normalize), numeric (within --tolerance) or contains"},
			&cli.StringFlag{Name: "normalize", Value: "text", Usage: "rule: text (SQuAD: case, punctuation, articles), math (Minerva) or none"},
			&cli.Float64Flag{Name: "tolerance", Value: 1e-6, Usage: "rule: absolute tolerance of --match numeric"},
			&cli.Float64Flag{Name: "rel-tolerance", Usage: "rule: tolerance of --match numeric relative to the larger magnitude"},
			&cli.StringFlag{Name: "must-match", Usage: "rule: a regular expression the (extracted) answer must match"},
			// The teacher as judge (with --endpoint or --local).
			&cli.StringFlag{Name: "criteria", DefaultText: "helpfulness, correctness and clarity", Usage: "teacher judge: what it looks for"},
			&cli.StringFlag{Name: "judge-prompt", Usage: "teacher judge: prompt replacing the built-in one; {criteria}, {prompt}, {response}, {reference} and {max} are filled in"},
			&cli.StringFlag{Name: "reference-field", Usage: "teacher judge: a prompt record field shown to the judge as the reference answer"},
			&cli.IntFlag{Name: "max-score", Value: 10, Usage: "teacher judge: the top of the scale it scores on (0 to this)"},
			&cli.Float64Flag{Name: "min-score", Value: 7, Usage: "teacher judge: the score an answer needs to be kept"},
			&cli.IntFlag{Name: "judge-max-tokens", Value: 16, Usage: "teacher judge: judgement length limit"},
			// What is kept.
			&cli.StringFlag{Name: "keep", Value: "all", Usage: "all (every passing answer, best first, up to --max-per-prompt) or best (the best-scored passing answer only); the same text is kept once"},
			&cli.IntFlag{Name: "max-per-prompt", DefaultText: "no bound", Usage: "with --keep all: at most this many answers per prompt"},
			&cli.BoolFlag{Name: "strict", Usage: "stop at a bad prompt record instead of counting and skipping it"},
			// The teacher as judge: where it is (and --concurrency: answers judged at once).
		}, teacherFlags()...),
		Action: func(c *cli.Context) error {
			rule := &elicit.RuleJudge{AnswerField: c.String("answer-field"), ReferenceExtract: c.String("reference-extract"),
				Extract: c.String("extract"), ExtractLast: c.Bool("extract-last"), MustMatch: c.String("must-match")}
			rule.Match, rule.Normalize = c.String("match"), c.String("normalize")
			rule.Tolerance, rule.RelTolerance = c.Float64("tolerance"), c.Float64("rel-tolerance")
			teacher := c.String("endpoint") != "" || c.String("local") != ""
			hasRule := rule.AnswerField != "" || rule.MustMatch != ""
			switch {
			case teacher && hasRule:
				return fmt.Errorf("give one judge: a rule (--answer-field, --must-match) or the teacher (--endpoint or --local), not both")
			case !teacher && !hasRule:
				return fmt.Errorf("give a judge: a rule (--answer-field with the reference's field, or --must-match REGEX) or the teacher (--endpoint URL --model NAME, or --local DIR)")
			}
			if !teacher {
				if err := rule.Check(); err != nil {
					return err
				}
			}
			be, err := openBackend(c)
			if err != nil {
				return err
			}
			student, err := elicit.OpenStudent(be, c.String("student"), c.String("student-template"))
			if err != nil {
				return err
			}
			student.Params = model.GenerateParams{MaxTokens: c.Int("max-tokens"), Temperature: c.Float64("temperature"), TopK: c.Int("top-k"),
				TopP: c.Float64("top-p"), RepetitionPenalty: c.Float64("repetition-penalty")}
			student.Stop, student.BatchSize, student.KVBytes = c.StringSlice("stop"), c.Int("batch-size"), int64(c.Int("kv-cache-mb"))<<20
			cfg := elicit.SelfConfig{Sampler: student, Judge: rule, Prompts: c.String("prompts"), PromptField: c.String("prompt-field"),
				Output: c.String("output"), Journal: c.String("journal"), N: c.Int("n"), System: c.String("system"), Seed: c.Uint64("seed"),
				Keep: c.String("keep"), MaxPerPrompt: c.Int("max-per-prompt"), Concurrency: c.Int("concurrency"),
				MaxFailures: c.Int("max-failures"), StrictInput: c.Bool("strict"), Log: c.App.ErrWriter}
			if teacher {
				client, done, err := teacherClientOn(c, be)
				if err != nil {
					return err
				}
				defer done()
				cfg.Judge = &elicit.TeacherJudge{Client: client, Criteria: c.String("criteria"), Prompt: c.String("judge-prompt"),
					ReferenceField: c.String("reference-field"), MaxScore: c.Int("max-score"), MinScore: c.Float64("min-score"), MaxTokens: c.Int("judge-max-tokens")}
			}
			if !c.Bool("quiet") {
				cfg.Progress = c.App.ErrWriter
			}
			sum, err := elicit.Self(c.Context, cfg)
			fmt.Fprintln(c.App.Writer, sum)
			return err
		},
	}
}
