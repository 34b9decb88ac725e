package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/elicit"
	"github.com/kdnative/kdnative/kd/tasks"
)

// taskFlags are eval's flags for task evaluation (kd/tasks).
var taskFlags = []cli.Flag{
	&cli.StringSliceFlag{Name: "task", Usage: "a task file (JSONL: generate, choice or perplexity examples; see examples/tasks); repeat for several"},
	&cli.StringFlag{Name: "tokenizer", Usage: "tokenizer folder for models whose folder has none"},
	&cli.StringFlag{Name: "output", Usage: "folder for results.json and per-example outputs (<task>/<model>.jsonl)"},
	&cli.IntFlag{Name: "max-examples", DefaultText: "all", Usage: "evaluate only the first N examples of each task"},
	&cli.Uint64Flag{Name: "seed", Usage: "seed for sampled answers (sample i of a task draws with seed+i) and the bootstrap intervals"},
	&cli.StringFlag{Name: "judge-endpoint", Usage: "OpenAI-compatible API root of the judge for tasks scored by a judge (kdnative serve, vLLM, a hosted API)"},
	&cli.StringFlag{Name: "judge-model", Usage: "the model name the judge endpoint serves"},
	&cli.StringFlag{Name: "judge-api-key-env", Usage: "environment variable holding the judge's API key (never printed or written)"},
	&cli.StringFlag{Name: "judge-cache", Usage: "JSONL file of judgements, continued by later runs (default: judgements.jsonl in --output)"},
	&cli.IntFlag{Name: "judge-concurrency", Value: 4, Usage: "judge requests in flight"},
}

// evalTasks is `kdnative eval --task FILE --model DIR [--model DIR2 …]`.
func evalTasks(c *cli.Context) error {
	cfg := tasks.Config{Tasks: c.StringSlice("task"), Models: c.StringSlice("model"), Tokenizer: c.String("tokenizer"),
		Output: c.String("output"), Precision: c.String("precision"), Options: tasks.Options{Template: c.String("template"), BatchSize: c.Int("batch-size"),
			MaxLen: c.Int("max-len"), MaxExamples: c.Int("max-examples"), Seed: c.Uint64("seed"), Log: c.App.ErrWriter}}
	if err := checkPrecision(c); err != nil {
		return err
	}
	fi, _ := os.Stderr.Stat()
	cfg.Terminal = fi != nil && fi.Mode()&os.ModeCharDevice != 0
	if c.IsSet("data") || c.IsSet("teacher") || c.IsSet("teacher-cache") || c.IsSet("json") || c.IsSet("on-bad-line") {
		return fmt.Errorf("eval: --task evaluates models on tasks; --data, --teacher, --teacher-cache, --json and --on-bad-line are for the loss evaluation (run it separately; --output DIR keeps the task results)")
	}
	if ep := c.String("judge-endpoint"); ep != "" {
		if c.String("judge-model") == "" {
			return fmt.Errorf("eval: --judge-model is required with --judge-endpoint")
		}
		cl := &elicit.Client{BaseURL: ep, Model: c.String("judge-model")}
		if env := c.String("judge-api-key-env"); env != "" {
			if cl.APIKey = os.Getenv(env); cl.APIKey == "" {
				return fmt.Errorf("--judge-api-key-env %s: that environment variable is empty or unset", env)
			}
		}
		cache := c.String("judge-cache")
		if cache == "" && cfg.Output != "" {
			if err := os.MkdirAll(cfg.Output, 0o755); err != nil {
				return err
			}
			cache = filepath.Join(cfg.Output, "judgements.jsonl")
		}
		cfg.Judge = &tasks.Judge{Client: cl, Cache: cache, Concurrency: c.Int("judge-concurrency")}
		defer cfg.Judge.Close()
	}
	be, err := openBackend(c)
	if err != nil {
		return err
	}
	_, err = tasks.Run(c.Context, be, cfg, c.App.Writer)
	return err
}
