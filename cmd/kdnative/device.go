package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/runtime"
)

// deviceFlag is the global --device flag, read by every command that computes
// through openBackend.
var deviceFlag = &cli.StringFlag{
	Name:    "device",
	Value:   "auto",
	Usage:   "where to compute: auto (CUDA when the driver and a GPU are there, else CPU), cpu or cuda",
	EnvVars: []string{"KDNATIVE_DEVICE"},
}

// device is the --device value; empty (KDNATIVE_DEVICE set to "") is auto.
func device(c *cli.Context) string {
	if d := c.String(deviceFlag.Name); d != "" {
		return d
	}
	return "auto"
}

// checkDevice rejects an unknown --device before any command runs.
func checkDevice(c *cli.Context) error {
	d := device(c)
	names := runtime.Names()
	if d == "auto" || slices.Contains(names, d) {
		return nil
	}
	return fmt.Errorf("unknown --device %q (want auto or one of: %s)", d, strings.Join(names, ", "))
}

// openBackend opens the backend that --device names. Under auto it prints one
// line to stderr for each backend passed over and why, e.g.
// "kdnative: cuda unavailable (libcuda.so.1 not found …), using cpu".
func openBackend(c *cli.Context) (runtime.Backend, error) {
	return openBackendNamed(c, device(c))
}

// openBackendNamed is openBackend for a device chosen elsewhere (a recipe).
func openBackendNamed(c *cli.Context, dev string) (runtime.Backend, error) {
	b, notes, err := runtime.Open(dev)
	if err != nil {
		if len(notes) > 0 {
			return nil, fmt.Errorf("%w: %s", err, strings.Join(notes, "; "))
		}
		return nil, err
	}
	for _, n := range notes {
		name, why, _ := strings.Cut(n, ": ")
		if first, _, multi := strings.Cut(why, "\n"); multi {
			// A compile log or the like: one line here, all of it in doctor.
			why = first + " … (kdnative doctor shows all of it)"
		}
		fmt.Fprintf(c.App.ErrWriter, "kdnative: %s unavailable (%s), using %s\n", name, why, b.Name())
	}
	return b, nil
}
