// Command kdnative distills large language models into small ones: it gets a
// teacher's knowledge (elicit, cache-teacher), trains a student on it (train)
// and checks the result (eval, generate, bench), on an NVIDIA GPU through the
// CUDA backend or on the CPU.
//
//	kdnative doctor                 # which devices this machine offers, and why not
//	kdnative --device cpu train …   # KDNATIVE_DEVICE=cpu does the same
//
// The command layer stays thin. Each command has its own file (doctor.go,
// version.go, train.go, …) holding a func that returns its *cli.Command; its
// Action turns the flags into a plain config struct and calls Run in the
// package that owns the work. A command that computes gets its backend from
// openBackend, which honours the global --device flag:
//
//	func trainCommand() *cli.Command {
//		return &cli.Command{
//			Name:  "train",
//			Flags: []cli.Flag{ /* … */ },
//			Action: func(c *cli.Context) error {
//				b, err := openBackend(c)
//				if err != nil {
//					return err
//				}
//				cfg := kd.TrainConfig{Student: c.String("student") /* … */}
//				return kd.Train(c.Context, b, cfg)
//			},
//		}
//	}
//
// and one line in newApp's command list (app.go). Errors come back to main,
// which prints them as "kdnative: <error>" and exits 1. The context is
// cancelled on SIGINT and SIGTERM, so long runs can checkpoint and stop.
package main
