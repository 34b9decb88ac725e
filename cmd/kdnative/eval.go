package main

import (
	"fmt"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/data"

	"github.com/kdnative/kdnative/kd/train"
)

func evalCommand() *cli.Command {
	return &cli.Command{
		Name:  "eval",
		Usage: "a model's validation loss and perplexity on a dataset, and its KL to a teacher; or, with --task, how models do on tasks",
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{Name: "model", Required: true, Usage: "Hugging Face model folder (with its tokenizer); with --task, repeat it to compare models"},
			&cli.StringFlag{Name: "data", Usage: "JSONL data (the shapes train reads)"},
			&cli.StringFlag{Name: "teacher", Usage: "teacher model folder: also report KL(teacher‖model)"},
			&cli.StringFlag{Name: "teacher-cache", Usage: "a teacher cache made over --data: report KL to it"},
			&cli.IntFlag{Name: "max-len", Usage: "longest sequence in tokens; longer ones are cut", DefaultText: "the model's positions"},
			&cli.IntFlag{Name: "batch-size", Value: 8, Usage: "sequences per forward pass (more is faster and takes more memory)"},
			&cli.StringFlag{Name: "template", Value: "auto", Usage: "chat format of {\"messages\"} lines: auto (the model's own chat template), a .jinja file, chatml, qwen3 or none"},
			&cli.StringFlag{Name: "on-bad-line", Value: "stop", Usage: "a malformed data line: stop (the error names it) or skip (counted and reported)"},
			&cli.StringFlag{Name: "json", Usage: "also write the result to this JSON file"},
			newPrecisionFlag(),
		}, taskFlags...),
		Action: func(c *cli.Context) error {
			if c.IsSet("task") {
				return evalTasks(c)
			}
			if len(c.StringSlice("model")) != 1 || c.String("data") == "" {
				return fmt.Errorf("eval: give one --model and --data (or --task FILE to evaluate on tasks)")
			}
			if err := checkEvalFlags(c); err != nil {
				return err
			}
			be, err := openBackend(c)
			if err != nil {
				return err
			}
			_, err = train.RunEval(be, train.EvalConfig{Model: c.StringSlice("model")[0], Teacher: c.String("teacher"),
				Data: c.String("data"), Cache: c.String("teacher-cache"), MaxLen: c.Int("max-len"), BatchSize: c.Int("batch-size"),
				Template: c.String("template"), OnBadLine: c.String("on-bad-line"), JSON: c.String("json"), Terminal: isTerminal(c),
				Precision: c.String("precision")}, c.App.Writer)
			return err
		},
	}
}

// checkEvalFlags rejects flag values eval cannot use, before a device is
// opened.
func checkEvalFlags(c *cli.Context) error {
	switch {
	case c.Int("batch-size") <= 0:
		return fmt.Errorf("eval: --batch-size %d must be positive", c.Int("batch-size"))
	case c.Int("max-len") < 0:
		return fmt.Errorf("eval: --max-len %d must be positive (or 0: the model's positions)", c.Int("max-len"))
	case !slices.Contains([]string{"stop", "skip"}, c.String("on-bad-line")):
		return fmt.Errorf("eval: --on-bad-line %q is not one of stop, skip", c.String("on-bad-line"))
	case data.CheckTemplate(c.String("template")) != nil:
		return fmt.Errorf("eval: --template: %v", data.CheckTemplate(c.String("template")))
	case c.String("teacher") != "" && c.String("teacher-cache") != "":
		return fmt.Errorf("eval: give --teacher or --teacher-cache, not both")
	}
	return checkPrecision(c)
}
