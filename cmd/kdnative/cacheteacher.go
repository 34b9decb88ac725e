package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/train"
)

func cacheTeacherCommand() *cli.Command {
	return &cli.Command{
		Name:  "cache-teacher",
		Usage: "run a teacher over a dataset once and keep its top-k distribution per token (a teacher cache)",
		Description: "Writes a teacher cache: for every token of every example, the teacher's k most likely\n" +
			"next tokens and their log-probabilities at a temperature, and the remaining mass, in\n" +
			"zstd-compressed, checksummed shards with an index. Train from it with\n" +
			"objectives.kd.cache: DIR (same data, same max_len and template). Run it again to resume.\n" +
			"With --inspect DIR it prints a cache's header, size, bytes per token and a sample position.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "teacher", Usage: "teacher model folder (with its tokenizer)"},
			&cli.StringFlag{Name: "data", Usage: "JSONL data (the shapes train reads)"},
			&cli.StringFlag{Name: "output", Usage: "the cache folder"},
			&cli.IntFlag{Name: "k", Value: 32, Usage: "tokens kept per position"},
			&cli.Float64Flag{Name: "temperature", Value: 1, Usage: "the teacher's softmax temperature"},
			&cli.IntFlag{Name: "max-len", Usage: "longest sequence (default: the teacher's positions; use the student run's data.max_len)"},
			&cli.StringFlag{Name: "template", Value: "auto", Usage: "auto, chatml, qwen3 or none (as the student run's data.template)"},
			&cli.StringFlag{Name: "on-bad-line", Value: "stop", Usage: "stop or skip"},
			&cli.IntFlag{Name: "batch-size", Value: 8},
			&cli.IntFlag{Name: "examples-per-shard", Usage: "examples per shard file (default: the format's)"},
			&cli.StringFlag{Name: "inspect", Usage: "print a cache's header, size and a sample instead of writing one"},
			&cli.IntFlag{Name: "example", Usage: "with --inspect: the example to show"},
			&cli.IntFlag{Name: "position", Value: 1, Usage: "with --inspect: the token position to show"},
		},
		Action: func(c *cli.Context) error {
			if dir := c.String("inspect"); dir != "" {
				return train.InspectCache(dir, c.Int("example"), c.Int("position"), c.App.Writer)
			}
			for _, f := range []string{"teacher", "data", "output"} {
				if c.String(f) == "" {
					return fmt.Errorf("cache-teacher needs --%s", f)
				}
			}
			be, err := openBackend(c)
			if err != nil {
				return err
			}
			err = train.CacheTeacher(c.Context, be, train.CacheConfig{Teacher: c.String("teacher"), Data: c.String("data"),
				Output: c.String("output"), K: c.Int("k"), Temperature: c.Float64("temperature"), MaxLen: c.Int("max-len"),
				Template: c.String("template"), OnBadLine: c.String("on-bad-line"), BatchSize: c.Int("batch-size"),
				ExamplesPerShard: c.Int("examples-per-shard")}, c.App.Writer)
			if errors.Is(err, train.ErrInterrupted) {
				return cli.Exit(err.Error(), 130)
			}
			return err
		},
	}
}
