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
			&cli.IntFlag{Name: "max-batch", Value: serve.DefaultMaxBatch, Usage: "sequences decoded together (continuous batching); more gives more throughput and memory"},
			&cli.IntFlag{Name: "max-queue", Value: serve.DefaultMaxQueue, Usage: "requests that may wait for a free batch row; beyond that they get 429"},
			&cli.IntFlag{Name: "kv-cache-mb", Value: serve.DefaultKVCacheBytes >> 20, Usage: "memory for the key/value caches of all running sequences, in MiB"},
			&cli.IntFlag{Name: "max-tokens-cap", Usage: "upper bound on max_tokens (0: the model's positions)"},
			&cli.IntFlag{Name: "max-body-mb", Value: serve.DefaultMaxBodyBytes >> 20, Usage: "largest request body in MiB; larger ones get 413"},
			&cli.IntFlag{Name: "body-memory-mb", Value: serve.DefaultBodyMemoryBytes >> 20, Usage: "memory in MiB for the request bodies being read at once (at least 3 × --max-body-mb); further bodies wait"},
			&cli.IntFlag{Name: "max-connections", Value: serve.DefaultMaxConnections, Usage: "open connections at most; further clients wait to be accepted"},
			&cli.DurationFlag{Name: "read-timeout", Value: serve.DefaultReadTimeout, Usage: "time to receive a request, headers and body; slower ones get 408"},
			&cli.StringFlag{Name: "template", Value: "auto", Usage: "chat format: auto (the model's chat template), chatml or qwen3"},
			&cli.IntFlag{Name: "score-tokens", Value: serve.DefaultScoreTokens, Usage: "tokens of one forward pass when scoring prompts (echo, prompt_logprobs); more is faster and takes more memory"},
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
				MaxBatch: c.Int("max-batch"), MaxQueue: c.Int("max-queue"), KVCacheBytes: int64(c.Int("kv-cache-mb")) << 20,
				MaxTokensCap: c.Int("max-tokens-cap"), MaxBodyBytes: int64(c.Int("max-body-mb")) << 20,
				BodyMemoryBytes: int64(c.Int("body-memory-mb")) << 20, MaxConnections: c.Int("max-connections"),
				ReadTimeout: c.Duration("read-timeout"), Template: c.String("template"),
				ScoreTokens: c.Int("score-tokens"), Log: c.App.ErrWriter,
				Precision: c.String("precision"),
			})
			if err != nil {
				return err
			}
			return s.Run(c.Context)
		},
	}
}
