package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	// The backends register themselves with runtime; kdnative sees them only
	// through runtime.Open and runtime.Probe.
	_ "github.com/kdnative/kdnative/cuda"
	_ "github.com/kdnative/kdnative/runtime/cpu"
)

// newApp builds the command line. Commands come one per file (doctor.go,
// version.go, …) and are listed here.
func newApp() *cli.App {
	return &cli.App{
		Name:  "kdnative",
		Usage: "distill large language models into small ones",
		Description: "kdnative gets a teacher's knowledge (elicit, cache-teacher), trains a student on it\n" +
			"(train) and checks the result (eval, generate, bench), on an NVIDIA GPU or the CPU.\n" +
			"Run `kdnative doctor` to see which devices this machine offers.",
		Version: kdnativeVersion(),
		Flags:   []cli.Flag{deviceFlag},
		Before:  checkDevice,
		Commands: []*cli.Command{
			doctorCommand(),
			benchCommand(),
			forwardCommand(),
			trainCommand(),
			initModelCommand(),
			convertCommand(),
			evalCommand(),
			cacheTeacherCommand(),
			generateCommand(),
			serveCommand(),
			elicitCommand(),
			versionCommand(),
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("unknown command %q (see kdnative help)", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		Suggest: true,
		// Errors go back to main, which prints them in one format and exits 1;
		// cli would otherwise exit on its own for some of them.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}
