package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/cuda"
	"github.com/kdnative/kdnative/kd/train"
	"github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/plan"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "time training steps of a model (or of a config.json with random weights) on this device",
		Description: "With --kernels (CUDA only) it instead times each GPU op at a Qwen2.5-0.5B-shaped size and prints\n" +
			"its GB/s or TFLOP/s against this machine's measured ceilings (a 1 GiB device copy, an 8192³ bf16 GEMM).\n" +
			"With --plan it runs nothing: it prints the device memory the step holds at its peak, by category, found by\n" +
			"running the step's own allocations through a planner sized as the CUDA allocator sizes them (exact bytes\n" +
			"with --device cpu), at --precision (auto: the device's default, bf16 when no --device is given); with\n" +
			"--device, it also says whether the plan fits that device and the largest batch that does. A timed run\n" +
			"checks the same plan first and refuses a step that cannot fit.",
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
			&cli.BoolFlag{Name: "plan", Usage: "print the step's memory plan (peak and breakdown) instead of running it"},
		},
		Action: func(c *cli.Context) error {
			if err := checkPrecision(c); err != nil {
				return err
			}
			if c.Bool("plan") && c.Bool("kernels") {
				return fmt.Errorf("bench: --plan and --kernels do not go together")
			}
			if !c.Bool("kernels") {
				if (c.String("model") == "") == (c.String("config") == "") {
					return fmt.Errorf("bench: give --model DIR or --config config.json (one of them)")
				}
				if c.Int("batch") <= 0 || c.Int("seq") <= 0 || c.Int("steps") <= 0 {
					return fmt.Errorf("bench: --batch %d, --seq %d and --steps %d must be positive", c.Int("batch"), c.Int("seq"), c.Int("steps"))
				}
			}
			bc := train.BenchConfig{Model: c.String("model"), Config: c.String("config"),
				Teacher: c.String("teacher"), TeacherConfig: c.String("teacher-config"),
				B: c.Int("batch"), T: c.Int("seq"), Steps: c.Int("steps"), Precision: c.String("precision")}
			if c.Bool("plan") {
				return benchPlan(c, bc)
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

// benchPlan prints the step's memory plan. It opens a backend only when
// --device is given, to compare the plan with that device's free memory
// and to resolve --precision on it; the plan is sized as the CUDA allocator
// sizes blocks unless the device is the CPU. Without --device the plan is
// a GPU's, where --precision auto is bf16.
func benchPlan(c *cli.Context, bc train.BenchConfig) error {
	opt := plan.Options{}
	var be runtime.Backend
	if c.IsSet("device") {
		var err error
		if be, err = openBackend(c); err != nil {
			return err
		}
		opt.Exact = be.Name() != "cuda"
	}
	prec, err := train.PlanPrecision(be, bc.Precision)
	if err != nil {
		return fmt.Errorf("--precision: %w", err)
	}
	p, err := train.PlanBench(bc, prec, opt)
	if err != nil {
		return err
	}
	if be != nil {
		if err := train.ComparePlan(be, bc, prec, &p); err != nil {
			return err
		}
	}
	if err := p.WriteText(c.App.Writer); err != nil {
		return err
	}
	if path := c.String("json"); path != "" {
		return p.WriteJSON(path)
	}
	return nil
}
