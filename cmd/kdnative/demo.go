package main

import (
	"errors"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/demo"
	"github.com/kdnative/kdnative/kd/train"
)

// runDemo is `kdnative train` with no recipe: the built-in distillation demo.
func runDemo(c *cli.Context, tf trainFlags) error {
	opt := demo.Options{Output: tf.output, Sets: tf.sets, Resume: tf.resume, Log: c.App.Writer, Terminal: isTerminal(c)}
	// A wrong --set is a usage error: said before a device is opened.
	if _, _, err := demo.Recipe(opt); err != nil {
		return err
	}
	be, err := openBackend(c)
	if err != nil {
		return err
	}
	err = demo.Run(c.Context, be, opt)
	if errors.Is(err, train.ErrInterrupted) {
		return cli.Exit("demo interrupted; resume with kdnative train --resume", 130)
	}
	return err
}
