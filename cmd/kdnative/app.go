package main

import (
	"fmt"
	"regexp"

	"github.com/urfave/cli/v2"

	// The backends register themselves with runtime; kdnative sees them only
	// through runtime.Open and runtime.Probe.
	_ "github.com/kdnative/kdnative/cuda"
	_ "github.com/kdnative/kdnative/runtime/cpu"
)

// newApp builds the command line. Commands come one per file (doctor.go,
// version.go, …) and are listed here.
func newApp() *cli.App {
	app := &cli.App{
		Name:  "kdnative",
		Usage: "distill large language models into small ones",
		Description: "kdnative gets a teacher's knowledge (elicit, cache-teacher), trains a student on it\n" +
			"(train) and checks the result (eval, generate, bench), on an NVIDIA GPU or the CPU.\n" +
			"Run `kdnative doctor` to see which devices this machine offers.",
		Version: kdnativeVersion(),
		Flags:   []cli.Flag{newDeviceFlag()},
		Before:  checkDevice,
		Commands: []*cli.Command{
			doctorCommand(),
			benchCommand(),
			forwardCommand(),
			trainCommand(),
			demoAssetsCommand(),
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
	tidyHelp(app.Commands)
	return app
}

// tidyHelp makes every flag's help line say its default once: a
// "(default: …)" written into a usage string becomes the flag's DefaultText
// (cli would otherwise add its own "(default: 0)" after it), and a boolean
// that is off by default shows no "(default: false)".
func tidyHelp(cmds []*cli.Command) {
	for _, c := range cmds {
		for _, f := range c.Flags {
			tidyFlag(f)
		}
		tidyHelp(c.Subcommands)
	}
}

// usageDefault matches a default written into a usage string: "(default:
// the model's positions)" or "(default the endpoint's)".
var usageDefault = regexp.MustCompile(`\s*\(default:? ([^()]*)\)\s*$`)

func tidyFlag(f cli.Flag) {
	split := func(usage *string, defaultText *string) {
		if m := usageDefault.FindStringSubmatchIndex(*usage); m != nil && *defaultText == "" {
			*defaultText = (*usage)[m[2]:m[3]]
			*usage = (*usage)[:m[0]]
		}
	}
	switch f := f.(type) {
	case *cli.BoolFlag:
		if !f.Value {
			f.DisableDefaultText = true
		}
	case *cli.StringFlag:
		split(&f.Usage, &f.DefaultText)
	case *cli.IntFlag:
		split(&f.Usage, &f.DefaultText)
	case *cli.Float64Flag:
		split(&f.Usage, &f.DefaultText)
	case *cli.Uint64Flag:
		split(&f.Usage, &f.DefaultText)
	case *cli.DurationFlag:
		split(&f.Usage, &f.DefaultText)
	case *cli.StringSliceFlag:
		split(&f.Usage, &f.DefaultText)
	}
}
