package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// reorderArgs rewrites a command line so that urfave/cli reads it the way
// users write it:
//
//   - a command's flags may come after its positional arguments
//     (`kdnative init-model OUT --config c.json`): cli v2, like Go's flag
//     package, stops reading flags at the first positional argument, so the
//     flags are moved before them;
//   - the app's own flags (--device) may come after the command
//     (`kdnative train r.yaml --device cpu`): they are moved before it.
//
// Everything after a "--" stays positional, in order. A flag the command does
// not define is left among the flags, so that cli reports it as unknown. Only
// the order changes: no argument is added, dropped or edited.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	global := flagTable(app.Flags, true)
	// The app's flags before the command.
	var globals []string
	i := 1
	for i < len(args) && isFlag(args[i]) {
		n := flagSpan(global, args, i)
		globals = append(globals, args[i:i+n]...)
		i += n
	}
	if i >= len(args) || args[i] == "--" {
		return args
	}
	cmd := findCommand(app.Commands, args[i])
	if cmd == nil {
		return args // help, a typo: cli deals with it
	}
	path := []string{args[i]}
	i++
	var flags, positional []string
	dashdash := false
	for i < len(args) {
		a := args[i]
		switch {
		case dashdash:
			positional = append(positional, a)
			i++
		case a == "--":
			dashdash = true
			i++
		case isFlag(a):
			own := flagTable(cmd.Flags, false)
			name := flagName(a)
			if _, ok := own[name]; !ok {
				if _, ok := global[name]; ok {
					n := flagSpan(global, args, i)
					globals = append(globals, args[i:i+n]...)
					i += n
					continue
				}
			}
			n := flagSpan(own, args, i)
			flags = append(flags, args[i:i+n]...)
			i += n
		default:
			// The first positional argument of a command with subcommands
			// names one: what follows is that subcommand's line. Its parent's
			// flags already read stay before it.
			if sub := findCommand(cmd.Subcommands, a); sub != nil && len(positional) == 0 {
				path = append(path, flags...)
				path = append(path, a)
				flags = nil
				cmd = sub
				i++
				continue
			}
			positional = append(positional, a)
			i++
		}
	}
	out := append([]string{args[0]}, globals...)
	out = append(out, path...)
	out = append(out, flags...)
	if dashdash {
		out = append(out, "--")
	}
	return append(out, positional...)
}

// flagTable maps each name (and alias) of flags to whether it takes a value.
// The help flag (and for the app, the version flag) are added by cli itself.
func flagTable(flags []cli.Flag, app bool) map[string]bool {
	t := map[string]bool{"help": false, "h": false}
	if app {
		t["version"], t["v"] = false, false
	}
	for _, f := range flags {
		takes := true
		if d, ok := f.(cli.DocGenerationFlag); ok {
			takes = d.TakesValue()
		}
		for _, n := range f.Names() {
			t[n] = takes
		}
	}
	return t
}

// isFlag reports whether a looks like a flag ("-x", "--name", "--name=v"),
// not "-" (often standard input) or "--".
func isFlag(a string) bool { return len(a) > 1 && a[0] == '-' && a != "--" }

// flagName is a flag's name without its dashes and any "=value".
func flagName(a string) string {
	name := strings.TrimLeft(a, "-")
	name, _, _ = strings.Cut(name, "=")
	return name
}

// flagSpan is how many arguments the flag at args[i] takes up: 2 when it
// takes a value written as the next argument, else 1.
func flagSpan(table map[string]bool, args []string, i int) int {
	if strings.Contains(args[i], "=") {
		return 1
	}
	if takes, ok := table[flagName(args[i])]; ok && takes && i+1 < len(args) {
		return 2
	}
	return 1
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
