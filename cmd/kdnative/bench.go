package main

import (
	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/train"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "time training steps of a model (or of a config.json with random weights) on this device",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "Hugging Face model folder"},
			&cli.StringFlag{Name: "config", Usage: "a config.json: random weights of that shape"},
			&cli.IntFlag{Name: "batch", Value: 4},
			&cli.IntFlag{Name: "seq", Value: 64},
			&cli.IntFlag{Name: "steps", Value: 3},
		},
		Action: func(c *cli.Context) error {
			be, err := openBackend(c)
			if err != nil {
				return err
			}
			_, err = train.Bench(be, train.BenchConfig{Model: c.String("model"), Config: c.String("config"),
				B: c.Int("batch"), T: c.Int("seq"), Steps: c.Int("steps")}, c.App.Writer)
			return err
		},
	}
}
