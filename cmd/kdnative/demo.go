package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// runDemo is `kdnative train` with no recipe: the built-in distillation demo.
func runDemo(c *cli.Context) error {
	return fmt.Errorf("the built-in demo is not ready yet: give a recipe (kdnative train recipe.yaml)")
}
