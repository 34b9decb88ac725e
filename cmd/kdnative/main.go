package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	app := newApp()
	err := app.RunContext(ctx, reorderArgs(app, os.Args))
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "kdnative: %v\n", err)
		code := 1
		var ec cli.ExitCoder
		if errors.As(err, &ec) && ec.ExitCode() != 0 {
			code = ec.ExitCode() // 130 for a run stopped by Ctrl-C
		}
		os.Exit(code)
	}
}
