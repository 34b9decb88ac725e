package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

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
			&cli.BoolFlag{Name: "resume", Usage: "continue from the newest intact checkpoint in the output folder (the recipe may change only in " + strings.Join(train.ResumableKeys, ", ") + ")"},
			&cli.BoolFlag{Name: "overwrite", Usage: "replace the earlier run in the output folder (without it, or --resume, a folder that is not empty is refused)"},
			&cli.StringFlag{Name: "output", Usage: "the run's folder (same as --set output=…)"},
		},
		Action: func(c *cli.Context) error {
			caught, release := catchStopSignals(c)
			defer release()
			demo := c.NArg() == 0
			var err error
			if demo {
				err = runDemo(c, trainFlags{sets: c.StringSlice("set"), resume: c.Bool("resume"), overwrite: c.Bool("overwrite"), output: c.String("output")})
			} else {
				err = runRecipeFile(c)
			}
			if errors.Is(err, train.ErrInterrupted) {
				return interruptedExit(demo, caught())
			}
			return err
		},
	}
}

func runRecipeFile(c *cli.Context) error {
	tf, err := parseTrainFlags(c)
	if err != nil {
		return err
	}
	r, err := train.LoadRecipe(c.Args().First())
	if err != nil {
		return err
	}
	return runRecipe(c, r, tf)
}

// catchStopSignals makes SIGTERM (kill, a job scheduler) and SIGPIPE (the
// reader of the output went away: `kdnative train | head`) stop a run the
// way Ctrl-C does — a checkpoint, then exit — by cancelling c.Context.
// caught waits for the signal that stopped the run (briefly: main's own
// handler may have cancelled first).
func catchStopSignals(c *cli.Context) (caught func() os.Signal, release func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGPIPE)
	ctx, cancel := context.WithCancel(c.Context)
	c.Context = ctx
	got, done := make(chan os.Signal, 1), make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			got <- s
			cancel()
		case <-done:
		}
	}()
	var sig os.Signal
	caught = func() os.Signal {
		select {
		case sig = <-got:
		case <-time.After(2 * time.Second):
			sig = os.Interrupt
		}
		return sig
	}
	release = func() {
		close(done)
		signal.Stop(sigs)
		cancel()
		if sig == syscall.SIGPIPE {
			// Output is gone: later writes (main's error line) fail
			// quietly instead of killing the process before its exit code.
			signal.Ignore(syscall.SIGPIPE)
		}
	}
	return caught, release
}

// interruptedExit is the exit of a run stopped by a signal, after its
// checkpoint: 128 + the signal's number, as a shell reports a process the
// signal killed (Ctrl-C 130, SIGTERM 143, SIGPIPE 141).
func interruptedExit(demo bool, sig os.Signal) error {
	code, name := 130, "Ctrl-C"
	switch sig {
	case syscall.SIGTERM:
		code, name = 128+int(syscall.SIGTERM), "SIGTERM"
	case syscall.SIGPIPE:
		code, name = 128+int(syscall.SIGPIPE), "SIGPIPE: the output was closed"
	}
	if demo {
		return cli.Exit(fmt.Sprintf("demo interrupted (%s); resume with kdnative train --resume", name), code)
	}
	return cli.Exit(fmt.Sprintf("training interrupted (%s); resume with --resume", name), code)
}

// trainFlags are train's own flags, wherever they stood on the line.
type trainFlags struct {
	sets      []string
	resume    bool
	overwrite bool
	output    string
}

// parseTrainFlags reads train's flags both before the recipe (urfave/cli
// parsed those) and after it (cli stops at the first argument; users write
// `kdnative train recipe.yaml --set optim.lr=1e-4`).
func parseTrainFlags(c *cli.Context) (trainFlags, error) {
	tf := trainFlags{sets: c.StringSlice("set"), resume: c.Bool("resume"), overwrite: c.Bool("overwrite"), output: c.String("output")}
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var sets stringList
	fs.Var(&sets, "set", "")
	resume := fs.Bool("resume", tf.resume, "")
	overwrite := fs.Bool("overwrite", tf.overwrite, "")
	output := fs.String("output", tf.output, "")
	tail := c.Args().Tail()
	if err := fs.Parse(tail); err != nil {
		return tf, fmt.Errorf("train: %v", err)
	}
	if fs.NArg() > 0 {
		return tf, fmt.Errorf("train takes one recipe file; unexpected argument %q", fs.Arg(0))
	}
	tf.sets = append(tf.sets, sets...)
	tf.resume, tf.overwrite, tf.output = *resume, *overwrite, *output
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
	sum, err := train.Run(c.Context, be, r, train.Options{Resume: tf.resume, Overwrite: tf.overwrite, Log: c.App.Writer, Terminal: term})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "done: %d steps; the student is in %s\n", sum.Steps, sum.FinalDir)
	return nil
}
