package main

import (
	"context"
	"errors"
	"fmt"
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
			"objectives.kd.temperature=2); flags may come before or after the recipe.\n\n" +
			"Without a recipe it runs the built-in demo (--set changes the demo's recipe). Without a\n" +
			"recipe but with --set keys that name your own models or data (" + strings.Join(ownInputKeys, ", ") + "),\n" +
			"the recipe is built from the defaults and the --set keys alone, and must then be complete.\n\n" +
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
			tf := trainFlags{sets: c.StringSlice("set"), resume: c.Bool("resume"), overwrite: c.Bool("overwrite"), output: c.String("output")}
			demo := false
			var err error
			switch {
			case c.NArg() > 1:
				return fmt.Errorf("train takes one recipe file; unexpected argument %q", c.Args().Get(1))
			case c.NArg() == 1:
				r, lerr := train.LoadRecipe(c.Args().First())
				if lerr != nil {
					return lerr
				}
				err = runRecipe(c, r, tf)
			default:
				if keys := namesOwnInputs(tf.sets); len(keys) > 0 {
					fmt.Fprintf(c.App.Writer, "train: no recipe file, and --set names %s: the recipe is the defaults and the --set keys (not the demo)\n",
						strings.Join(keys, ", "))
					err = runRecipe(c, train.DefaultRecipe(), tf, "a run without a recipe file is made of the defaults and the --set keys, and these are missing or wrong; give a recipe (examples/recipes/) or set them")
				} else {
					demo = true
					err = runDemo(c, tf)
				}
			}
			if errors.Is(err, train.ErrInterrupted) {
				return interruptedExit(demo, caught())
			}
			return err
		},
	}
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

// ownInputKeys are the recipe keys that name a run's own models and data.
// The demo fills these in with its built-in files, so a --set of one of them
// means a run of the user's own, not the demo.
var ownInputKeys = []string{"student", "teacher", "tokenizer", "data.train", "data.val", "objectives.kd.cache", "objectives.dpo.reference"}

// namesOwnInputs returns the ownInputKeys among --set key=value overrides.
func namesOwnInputs(sets []string) []string {
	var out []string
	for _, kv := range sets {
		key, _, _ := strings.Cut(kv, "=")
		for _, k := range ownInputKeys {
			if strings.TrimSpace(key) == k {
				out = append(out, k)
			}
		}
	}
	return out
}

// trainFlags are train's own flags.
type trainFlags struct {
	sets      []string
	resume    bool
	overwrite bool
	output    string
}

// runRecipe applies the command line to a recipe, checks it, and trains.
// The recipe is checked before the device is opened, so that a usage error
// comes alone; hint, when given, is added to a failed check.
func runRecipe(c *cli.Context, r train.Recipe, tf trainFlags, hint ...string) error {
	for _, kv := range tf.sets {
		if err := r.Set(kv); err != nil {
			return err
		}
	}
	if tf.output != "" {
		r.Output = tf.output
	}
	if c.IsSet(deviceFlagName) || os.Getenv("KDNATIVE_DEVICE") != "" {
		r.Device = device(c)
	}
	if err := r.Validate(); err != nil {
		if len(hint) > 0 {
			return fmt.Errorf("recipe: %w\n(%s)", err, hint[0])
		}
		return fmt.Errorf("recipe: %w", err)
	}
	be, err := openBackendNamed(c, r.Device)
	if err != nil {
		return err
	}
	sum, err := train.Run(c.Context, be, r, train.Options{Resume: tf.resume, Overwrite: tf.overwrite, Log: c.App.Writer, Terminal: isTerminal(c)})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "done: %d steps; the student is in %s\n", sum.Steps, sum.FinalDir)
	return nil
}

// isTerminal reports whether the app writes to a terminal (progress is then
// a redrawn line). In tests the writer is a buffer: not a terminal.
func isTerminal(c *cli.Context) bool {
	f, ok := c.App.Writer.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
