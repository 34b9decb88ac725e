package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/runtime"
)

// deviceFlagName is the global --device flag, read by every command that
// computes through openBackend.
const deviceFlagName = "device"

// newDeviceFlag makes the --device flag for one app. A new one each time:
// cli writes what it reads from KDNATIVE_DEVICE into the flag itself, which
// would otherwise carry over from one app to the next (in tests).
func newDeviceFlag() *cli.StringFlag {
	return &cli.StringFlag{
		Name:    deviceFlagName,
		Value:   "auto",
		Usage:   "where to compute: auto (CUDA when the driver and a GPU are there, else CPU), cpu or cuda; before or after the command",
		EnvVars: []string{"KDNATIVE_DEVICE"},
	}
}

// device is the --device value; empty (KDNATIVE_DEVICE set to "") is auto.
func device(c *cli.Context) string {
	if d := c.String(deviceFlagName); d != "" {
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
// short line to stderr for each backend passed over, e.g.
// "kdnative: cuda unavailable (libcuda.so.1 not found), using cpu; kdnative
// doctor says more". Commands open the backend after checking their
// arguments, so that the line never comes before a usage error.
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
		fmt.Fprintf(c.App.ErrWriter, "kdnative: %s unavailable (%s), using %s; kdnative doctor says more\n", name, shortReason(why), b.Name())
	}
	return b, nil
}

// shortReason is the gist of why a backend did not open: its first line
// without parenthesized details (search paths, library paths; doctor shows
// them), at most 70 characters.
func shortReason(why string) string {
	why, _, _ = strings.Cut(why, "\n")
	var b strings.Builder
	depth := 0
	for _, r := range why {
		switch {
		case r == '(':
			depth++
		case r == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	why = strings.Join(strings.Fields(b.String()), " ")
	why = strings.ReplaceAll(why, " :", ":")
	if r := []rune(why); len(r) > 70 {
		why = strings.TrimSpace(string(r[:69])) + "…"
	}
	return why
}

// newPrecisionFlag is the --precision flag of the commands that run a model
// without training it (bench trains one step at a time): how weights and
// activations are stored and multiplied.
func newPrecisionFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "precision", Value: "auto",
		Usage: "auto (bf16 on a GPU of compute capability 8.0+, else fp32), bf16 (bf16 weights and activations, fp32 products, logits and losses), fp32, or tf32 (fp32 with cuBLAS's TF32 products; CUDA only)"}
}

// checkPrecision rejects an unknown --precision before a device is opened.
func checkPrecision(c *cli.Context) error {
	if _, _, err := runtime.ParsePrecision(c.String("precision")); err != nil {
		return fmt.Errorf("--precision: %w", err)
	}
	return nil
}
