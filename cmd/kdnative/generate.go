package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/generate"
	"github.com/kdnative/kdnative/model"
)

func generateCommand() *cli.Command {
	return &cli.Command{
		Name:  "generate",
		Usage: "complete prompts with a local model (printed, or JSONL that train reads)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Required: true, Usage: "Hugging Face model folder (with its tokenizer)"},
			&cli.StringSliceFlag{Name: "prompt", Usage: "a prompt (repeatable)"},
			&cli.StringFlag{Name: "prompts", Usage: `JSONL file of {"prompt": …} or {"messages": […]} lines`},
			&cli.StringFlag{Name: "template", Value: "auto", Usage: "auto (the model's chat template), a .jinja file, chatml, qwen3, or none (the text as is)"},
			&cli.StringFlag{Name: "system-prompt", Usage: "system message for chat templates"},
			&cli.IntFlag{Name: "max-tokens", Value: 256, Usage: "longest completion in tokens"},
			&cli.Float64Flag{Name: "temperature", Value: 0.7, Usage: "0 is greedy"},
			&cli.IntFlag{Name: "top-k", Usage: "sample among the k most likely tokens (0: all)"},
			&cli.Float64Flag{Name: "top-p", Value: 1, Usage: "nucleus sampling"},
			&cli.Float64Flag{Name: "repetition-penalty", Value: 1, Usage: "make tokens already in the text this much less likely, as transformers does (1: off)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "random seed of the sampling (the same seed gives the same completions)"},
			&cli.IntFlag{Name: "n", Value: 1, Usage: "samples per prompt"},
			&cli.StringSliceFlag{Name: "stop", Usage: "stop string (repeatable)"},
			&cli.IntFlag{Name: "logprobs", Usage: "report the log-probability of each token and this many alternatives"},
			&cli.StringFlag{Name: "output", Usage: "write JSONL here instead of printing, each completion as it is done; an existing file is resumed"},
			&cli.IntFlag{Name: "batch-size", Value: generate.DefaultBatchSize, Usage: "completions generated together"},
			&cli.IntFlag{Name: "kv-cache-mb", Value: generate.DefaultKVCacheBytes >> 20, Usage: "memory for the key/value caches of the completions being generated, in MiB"},
			newPrecisionFlag(),
		},
		Action: func(c *cli.Context) error {
			if err := checkPrecision(c); err != nil {
				return err
			}
			be, err := openBackend(c)
			if err != nil {
				return err
			}
			_, err = generate.Run(c.Context, be, generate.Config{
				Model: c.String("model"), Prompts: c.StringSlice("prompt"), PromptFile: c.String("prompts"),
				Template: c.String("template"), SystemPrompt: c.String("system-prompt"), Samples: c.Int("n"),
				StopStrings: c.StringSlice("stop"), Output: c.String("output"), BatchSize: c.Int("batch-size"),
				KVCacheBytes: int64(c.Int("kv-cache-mb")) << 20, Progress: c.App.ErrWriter, Terminal: stderrTerminal(),
				Precision: c.String("precision"),
				Params: model.GenerateParams{MaxTokens: c.Int("max-tokens"), Temperature: c.Float64("temperature"),
					TopK: c.Int("top-k"), TopP: c.Float64("top-p"), RepetitionPenalty: c.Float64("repetition-penalty"),
					Seed: c.Uint64("seed"), TopLogProbs: c.Int("logprobs")},
			}, c.App.Writer)
			return err
		},
	}
}

// stderrTerminal reports whether standard error is a terminal (progress is
// redrawn in place there, and written as plain lines elsewhere).
func stderrTerminal() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
