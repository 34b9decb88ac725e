package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/model/gguf/convert"
	"github.com/kdnative/kdnative/runtime/cpu"
)

func convertCommand() *cli.Command {
	return &cli.Command{
		Name:      "convert",
		Usage:     "turn a GGUF file (llama.cpp) into a Hugging Face model folder that transformers loads",
		ArgsUsage: "IN.gguf OUT",
		Description: "Reads a GGUF file of architecture llama, qwen2 or mistral (weights F32, F16, BF16, Q8_0,\n" +
			"Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K or Q6_K; a byte-level (gpt2) or SentencePiece (llama)\n" +
			"BPE tokenizer) and writes OUT:\n" +
			"config.json, model.safetensors (float32), tokenizer.json, tokenizer_config.json,\n" +
			"generation_config.json and chat_template.jinja. OUT must not exist or be empty.\n" +
			"The conversion runs on the CPU.",
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "max-shard-bytes", Usage: "split model.safetensors into shards above this many bytes (0: 5 GB, as transformers does)", DefaultText: "5 GB"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return fmt.Errorf("convert takes an input .gguf file and an output folder")
			}
			cfg := convert.Config{In: c.Args().Get(0), Out: c.Args().Get(1), MaxShardBytes: c.Int64("max-shard-bytes")}
			if err := convert.Run(cfg, cpu.New()); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "wrote %s\n", cfg.Out)
			return nil
		},
	}
}
