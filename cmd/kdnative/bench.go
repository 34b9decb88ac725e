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
			&cli.StringFlag{Name: "teacher", Usage: "time KD steps against this online teacher (a model folder): forward KL at T=2, fused"},
			&cli.StringFlag{Name: "teacher-config", Usage: "like --teacher, with random weights of this config.json's shape"},
			&cli.StringFlag{Name: "json", Usage: "also write the result to this file as JSON"},
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
			bc := train.BenchConfig{Model: c.String("model"), Config: c.String("config"),
				Teacher: c.String("teacher"), TeacherConfig: c.String("teacher-config"),
				B: c.Int("batch"), T: c.Int("seq"), Steps: c.Int("steps"),
				Precision: c.String("precision")}
			if g, ok := be.(*cuda.Backend); ok { // MFU against this card's own GEMM ceiling too
				if ceil, err := g.MeasureCeilings(); err == nil {
					bc.GEMMTFLOPs = ceil.BF16TFLOPs
				} else {
					fmt.Fprintf(c.App.ErrWriter, "kdnative: the GEMM ceiling could not be measured: %v\n", err)
				}
			}
			res, err := train.Bench(be, bc, c.App.Writer)
			if err == nil && c.String("json") != "" {
				err = res.WriteJSON(c.String("json"))
			}
			return err
		},
	}
}
