package main

import (
	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/demo"
)

// runDemo is `kdnative train` with no recipe: the built-in distillation demo.
func runDemo(c *cli.Context, tf trainFlags) error {
	opt := demo.Options{Output: tf.output, Sets: tf.sets, Resume: tf.resume, Overwrite: tf.overwrite, Log: c.App.Writer, Terminal: isTerminal(c)}
	// A wrong --set is a usage error: said before a device is opened.
	if _, _, err := demo.Recipe(opt); err != nil {
		return err
	}
	be, err := openBackend(c)
	if err != nil {
		return err
	}
	// An interrupted demo (train.ErrInterrupted) gets its exit in train.go.
	return demo.Run(c.Context, be, opt)
}
