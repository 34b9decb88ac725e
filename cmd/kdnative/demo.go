package main

import (
	"errors"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/demo"
	"github.com/kdnative/kdnative/kd/train"
)

// runDemo is `kdnative train` with no recipe: the built-in distillation demo.
func runDemo(c *cli.Context, tf trainFlags) error {
	be, err := openBackend(c)
	if err != nil {
		return err
	}
	fi, _ := os.Stdout.Stat()
	term := fi != nil && fi.Mode()&os.ModeCharDevice != 0
	err = demo.Run(c.Context, be, demo.Options{Output: tf.output, Sets: tf.sets, Resume: tf.resume, Log: c.App.Writer, Terminal: term})
	if errors.Is(err, train.ErrInterrupted) {
		return cli.Exit("demo interrupted; resume with kdnative train --resume", 130)
	}
	return err
}
