package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/demo"
)

// runDemo is `kdnative train` with no recipe: the built-in distillation demo.
func runDemo(c *cli.Context, tf trainFlags) error {
	be, err := openBackend(c)
	if err != nil {
		return err
	}
	fi, _ := os.Stdout.Stat()
	term := fi != nil && fi.Mode()&os.ModeCharDevice != 0
	// An interrupted demo (train.ErrInterrupted) gets its exit in train.go.
	return demo.Run(c.Context, be, demo.Options{Output: tf.output, Sets: tf.sets, Resume: tf.resume, Overwrite: tf.overwrite, Log: c.App.Writer, Terminal: term})
}
