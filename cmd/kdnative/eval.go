package main

import (
	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/train"
)

func evalCommand() *cli.Command {
	return &cli.Command{
		Name:  "eval",
		Usage: "a model's validation loss and perplexity on a dataset, and its KL to a teacher",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Required: true, Usage: "Hugging Face model folder (with its tokenizer)"},
			&cli.StringFlag{Name: "data", Required: true, Usage: "JSONL data (the shapes train reads)"},
			&cli.StringFlag{Name: "teacher", Usage: "teacher model folder: also report KL(teacher‖model)"},
			&cli.StringFlag{Name: "teacher-cache", Usage: "a teacher cache made over --data: report KL to it"},
			&cli.IntFlag{Name: "max-len", Usage: "longest sequence (default: the model's positions)"},
			&cli.IntFlag{Name: "batch-size", Value: 8},
			&cli.StringFlag{Name: "template", Value: "auto", Usage: "auto (the model's own chat template), a .jinja file, chatml, qwen3 or none"},
			&cli.StringFlag{Name: "on-bad-line", Value: "stop", Usage: "stop or skip"},
			&cli.StringFlag{Name: "json", Usage: "also write the result to this JSON file"},
		},
		Action: func(c *cli.Context) error {
			be, err := openBackend(c)
			if err != nil {
				return err
			}
			_, err = train.RunEval(be, train.EvalConfig{Model: c.String("model"), Teacher: c.String("teacher"),
				Data: c.String("data"), Cache: c.String("teacher-cache"), MaxLen: c.Int("max-len"), BatchSize: c.Int("batch-size"),
				Template: c.String("template"), OnBadLine: c.String("on-bad-line"), JSON: c.String("json")}, c.App.Writer)
			return err
		},
	}
}
