package main

import (
	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/serve"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "serve a local model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Required: true, Usage: "Hugging Face model folder (with its tokenizer)"},
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8000", Usage: "host:port to listen on (localhost only by default)"},
			&cli.StringFlag{Name: "model-name", Usage: "the model's id in the API (default: the folder's name)"},
			&cli.IntFlag{Name: "max-queue", Value: 16, Usage: "requests that may wait for the model; beyond that they get 429"},
			&cli.IntFlag{Name: "max-tokens-cap", Usage: "upper bound on max_tokens (0: the model's positions)"},
			&cli.StringFlag{Name: "template", Value: "auto", Usage: "chat format: auto (the model's chat template), chatml or qwen3"},
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
			s, err := serve.New(be, serve.Config{
				Model: c.String("model"), Addr: c.String("addr"), ModelName: c.String("model-name"),
				MaxQueue: c.Int("max-queue"), MaxTokensCap: c.Int("max-tokens-cap"), Template: c.String("template"),
				Log: c.App.ErrWriter, Precision: c.String("precision"),
			})
			if err != nil {
				return err
			}
			return s.Run(c.Context)
		},
	}
}
