package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/train"
)

func trainCommand() *cli.Command {
	return &cli.Command{
		Name:      "train",
		Usage:     "distill a teacher into a student (or fine-tune) as a recipe says",
		ArgsUsage: "[recipe.yaml]",
		Description: "Runs a training recipe: student and teacher model folders, data (JSONL), the objective\n" +
			"terms (sft, kd, dpo, feature) and their weights, the optimizer, the schedule. Any recipe key\n" +
			"can be set or overridden with --set key=value (e.g. --set optim.lr=1e-4 --set\n" +
			"objectives.kd.temperature=2). Without a recipe it runs the built-in demo.\n\n" +
			"Keys: " + strings.Join(train.Keys(), ", "),
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "set", Usage: "override a recipe key: key=value (repeatable)"},
			&cli.BoolFlag{Name: "resume", Usage: "continue from the newest checkpoint in the output folder"},
			&cli.StringFlag{Name: "output", Usage: "the run's folder (same as --set output=…)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return runDemo(c, trainFlags{sets: c.StringSlice("set"), resume: c.Bool("resume"), output: c.String("output")})
			}
			tf, err := parseTrainFlags(c)
			if err != nil {
				return err
			}
			r, err := train.LoadRecipe(c.Args().First())
			if err != nil {
				return err
			}
			return runRecipe(c, r, tf)
		},
	}
}

// trainFlags are train's own flags, wherever they stood on the line.
type trainFlags struct {
	sets   []string
	resume bool
	output string
}

// parseTrainFlags reads train's flags both before the recipe (urfave/cli
// parsed those) and after it (cli stops at the first argument; users write
// `kdnative train recipe.yaml --set optim.lr=1e-4`).
func parseTrainFlags(c *cli.Context) (trainFlags, error) {
	tf := trainFlags{sets: c.StringSlice("set"), resume: c.Bool("resume"), output: c.String("output")}
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var sets stringList
	fs.Var(&sets, "set", "")
	resume := fs.Bool("resume", tf.resume, "")
	output := fs.String("output", tf.output, "")
	tail := c.Args().Tail()
	if err := fs.Parse(tail); err != nil {
		return tf, fmt.Errorf("train: %v", err)
	}
	if fs.NArg() > 0 {
		return tf, fmt.Errorf("train takes one recipe file; unexpected argument %q", fs.Arg(0))
	}
	tf.sets = append(tf.sets, sets...)
	tf.resume, tf.output = *resume, *output
	return tf, nil
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// runRecipe applies the command line to a recipe and trains.
func runRecipe(c *cli.Context, r train.Recipe, tf trainFlags) error {
	for _, kv := range tf.sets {
		if err := r.Set(kv); err != nil {
			return err
		}
	}
	if tf.output != "" {
		r.Output = tf.output
	}
	if c.IsSet(deviceFlag.Name) || os.Getenv("KDNATIVE_DEVICE") != "" {
		r.Device = device(c)
	}
	be, err := openBackendNamed(c, r.Device)
	if err != nil {
		return err
	}
	fi, _ := os.Stdout.Stat()
	term := fi != nil && fi.Mode()&os.ModeCharDevice != 0
	sum, err := train.Run(c.Context, be, r, train.Options{Resume: tf.resume, Log: c.App.Writer, Terminal: term})
	if errors.Is(err, train.ErrInterrupted) {
		return cli.Exit("training interrupted; resume with --resume", 130)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "done: %d steps; the student is in %s\n", sum.Steps, sum.FinalDir)
	return nil
}
