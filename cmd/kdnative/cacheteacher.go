package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/cache"
	"github.com/kdnative/kdnative/kd/train"
)

func cacheTeacherCommand() *cli.Command {
	return &cli.Command{
		Name:  "cache-teacher",
		Usage: "run a teacher over a dataset once and keep its top-k distribution per token (a teacher cache)",
		Description: "Writes a teacher cache: for every token of every example, the teacher's k most likely\n" +
			"next tokens and their log-probabilities at a temperature, and the remaining mass, in\n" +
			"zstd-compressed, checksummed shards with an index. Train from it with\n" +
			"objectives.kd.cache: DIR (same data, same max_len and template). Run it again to resume:\n" +
			"the shards already written are checked block by block, damaged or missing ones written again.\n" +
			"With --inspect DIR it prints a cache's header, size, bytes per token and a sample position;\n" +
			"with --verify DIR it checks every block of every shard and exits 1 on damage.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "teacher", Usage: "teacher model folder (config.json, weights and its tokenizer)"},
			&cli.StringFlag{Name: "data", Usage: "JSONL data, in the shapes train reads (prompt/response, messages, text, input_ids)"},
			&cli.StringFlag{Name: "output", Usage: "the cache folder (an existing cache of the same teacher, data and options is resumed)"},
			&cli.IntFlag{Name: "k", Value: 32, Usage: "top tokens kept per position (32 keeps the KD loss within 0.2% of the online teacher's: docs/teacher-cache.md)"},
			&cli.Float64Flag{Name: "temperature", Value: 1, Usage: "the teacher's softmax temperature (training must use the same objectives.kd.temperature)"},
			&cli.IntFlag{Name: "max-len", DefaultText: "the teacher's max_position_embeddings", Usage: "longest sequence in tokens: give the student run's data.max_len (a cache is refused for other data)"},
			&cli.StringFlag{Name: "template", Value: "auto", Usage: "chat template: auto (the model's own), jinja, a .jinja file, chatml, qwen3 or none (as the student run's data.template)"},
			&cli.StringFlag{Name: "on-bad-line", Value: "stop", Usage: "a bad data line: stop (an error naming the line) or skip (counted and listed)"},
			&cli.IntFlag{Name: "batch-size", Value: 8, Usage: "examples run through the teacher at once (more is faster and takes more memory)"},
			&cli.IntFlag{Name: "examples-per-shard", DefaultText: "1024", Usage: "examples per shard file: the unit a crash loses and a resume writes again"},
			&cli.BoolFlag{Name: "quiet", Usage: "no progress line"},
			newPrecisionFlag(),
			&cli.StringFlag{Name: "inspect", Usage: "print the cache DIR's header, size and one position's distribution (see --example, --position) instead of writing a cache"},
			&cli.IntFlag{Name: "example", Usage: "with --inspect: the example to show (0 is the data's first)"},
			&cli.IntFlag{Name: "position", Value: 1, Usage: "with --inspect: the token position to show (position 0 has no teacher entry)"},
			&cli.StringFlag{Name: "verify", Usage: "check every shard and block of the cache DIR: prints ok or what is damaged per shard, exits 1 on damage or missing examples"},
		},
		Action: func(c *cli.Context) error {
			if dir := c.String("inspect"); dir != "" {
				return train.InspectCache(dir, c.Int("example"), c.Int("position"), c.App.Writer)
			}
			if dir := c.String("verify"); dir != "" {
				rep, err := cache.VerifyDir(dir)
				if err != nil {
					return err
				}
				fmt.Fprintln(c.App.Writer, rep)
				if !rep.OK() {
					return fmt.Errorf("the teacher cache %s is damaged or incomplete (%d of %d examples intact)", dir, rep.Intact, rep.Header.Examples)
				}
				return nil
			}
			for _, f := range []string{"teacher", "data", "output"} {
				if c.String(f) == "" {
					return fmt.Errorf("cache-teacher needs --%s", f)
				}
			}
			for _, f := range []string{"k", "batch-size"} {
				if v := c.Int(f); v < 1 {
					return fmt.Errorf("--%s %d: must be at least 1", f, v)
				}
			}
			for _, f := range []string{"max-len", "examples-per-shard"} {
				if v := c.Int(f); c.IsSet(f) && v < 1 {
					return fmt.Errorf("--%s %d: must be at least 1 (leave it out for the default)", f, v)
				}
			}
			if err := checkPrecision(c); err != nil {
				return err
			}
			be, err := openBackend(c)
			if err != nil {
				return err
			}
			cfg := train.CacheConfig{Precision: c.String("precision"), Teacher: c.String("teacher"), Data: c.String("data"),
				Output: c.String("output"), K: c.Int("k"), Temperature: c.Float64("temperature"), MaxLen: c.Int("max-len"),
				Template: c.String("template"), OnBadLine: c.String("on-bad-line"), BatchSize: c.Int("batch-size"),
				ExamplesPerShard: c.Int("examples-per-shard")}
			if !c.Bool("quiet") {
				cfg.Progress = c.App.ErrWriter
			}
			err = train.CacheTeacher(c.Context, be, cfg, c.App.Writer)
			if errors.Is(err, train.ErrInterrupted) {
				return cli.Exit(err.Error(), 130)
			}
			return err
		},
	}
}
