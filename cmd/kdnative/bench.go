package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/cuda"
	"github.com/kdnative/kdnative/kd/train"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "time training steps of a model (or of a config.json with random weights) on this device",
		Description: "With --kernels (CUDA only) it instead times each GPU op at a Qwen2.5-0.5B-shaped size and prints\n" +
			"its GB/s or TFLOP/s against this machine's measured ceilings (a 1 GiB device copy, an 8192³ bf16 GEMM).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "Hugging Face model folder"},
			&cli.StringFlag{Name: "config", Usage: "a config.json: random weights of that shape"},
			&cli.IntFlag{Name: "batch", Value: 4, Usage: "sequences per training step"},
			&cli.IntFlag{Name: "seq", Value: 64, Usage: "tokens per sequence"},
			&cli.IntFlag{Name: "steps", Value: 3, Usage: "training steps timed (after one untimed warm-up step)"},
			&cli.BoolFlag{Name: "kernels", Usage: "time each GPU kernel against the machine's ceilings (needs --device cuda)"},
			newPrecisionFlag(),
		},
		Action: func(c *cli.Context) error {
			if err := checkPrecision(c); err != nil {
				return err
			}
			if !c.Bool("kernels") {
				if (c.String("model") == "") == (c.String("config") == "") {
					return fmt.Errorf("bench: give --model DIR or --config config.json (one of them)")
				}
				if c.Int("batch") <= 0 || c.Int("seq") <= 0 || c.Int("steps") <= 0 {
					return fmt.Errorf("bench: --batch %d, --seq %d and --steps %d must be positive", c.Int("batch"), c.Int("seq"), c.Int("steps"))
				}
			}
			be, err := openBackend(c)
			if err != nil {
				return err
			}
			if c.Bool("kernels") {
				g, ok := be.(*cuda.Backend)
				if !ok {
					return cli.Exit(fmt.Sprintf("bench --kernels measures GPU kernels; the %s backend has none (use --device cuda)", be.Name()), 2)
				}
				ceil, err := g.MeasureCeilings()
				if err != nil {
					return err
				}
				rows, err := g.BenchKernels(cuda.Qwen05B, ceil)
				if werr := cuda.WriteKernelTable(c.App.Writer, g.Device(), ceil, rows); werr != nil {
					return werr
				}
				return err
			}
			_, err = train.Bench(be, train.BenchConfig{Model: c.String("model"), Config: c.String("config"),
				B: c.Int("batch"), T: c.Int("seq"), Steps: c.Int("steps"), Precision: c.String("precision")}, c.App.Writer)
			return err
		},
	}
}
