package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/demo"
)

func demoAssetsCommand() *cli.Command {
	return &cli.Command{
		Name:      "demo-assets",
		Usage:     "write the built-in demo's teacher, student and data into a folder, for the example recipes",
		ArgsUsage: "DIR",
		Description: "Writes into DIR the demo's teacher (teacher/, with its tokenizer), a random-weight student\n" +
			"(student-init/) and Moby-Dick as plain text (train.jsonl, val.jsonl), chat conversations\n" +
			"(chat-*.jsonl) and preference pairs (pairs-*.jsonl). The recipes in examples/recipes/ name\n" +
			"these files as demo-assets/…, so after `kdnative demo-assets demo-assets` each runs as is.\n" +
			"Files already there with the same content are kept; one that differs is an error.",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("demo-assets takes one folder (e.g. kdnative demo-assets demo-assets)")
			}
			be, err := openBackend(c)
			if err != nil {
				return err
			}
			a, err := demo.WriteAssets(be, c.Args().First())
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "wrote the demo's assets to %s/ (%s/README.md says what each is)\n", a.Dir, a.Dir)
			return nil
		},
	}
}
