package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/train"
)

func initModelCommand() *cli.Command {
	return &cli.Command{
		Name:      "init-model",
		Usage:     "make a model folder with random weights from a config.json (a student to train from scratch)",
		ArgsUsage: "OUT",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Required: true, Usage: "a Hugging Face config.json (llama, qwen2, mistral, gpt2)"},
			&cli.StringFlag{Name: "tokenizer", Required: true, Usage: "folder holding tokenizer.json (and tokenizer_config.json)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the random weights"},
			&cli.BoolFlag{Name: "overwrite", Usage: "replace the model and tokenizer files in a folder that is not empty"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("init-model takes one output folder")
			}
			be, err := openBackend(c)
			if err != nil {
				return err
			}
			if err := train.InitModel(be, c.String("config"), c.String("tokenizer"), c.Uint64("seed"), c.Args().First(), c.Bool("overwrite")); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "wrote %s\n", c.Args().First())
			return nil
		},
	}
}
