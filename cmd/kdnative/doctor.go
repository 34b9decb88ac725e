package main

import (
	"errors"
	"fmt"
	"io"
	goruntime "runtime"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/cuda"
	"github.com/kdnative/kdnative/runtime"
)

// doctorConfig is what doctor takes from the command line.
type doctorConfig struct {
	Device string // the --device value, to say which backend it selects
}

func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "show the backends this machine can use, and why the others cannot",
		Description: "Prints kdnative's version and platform, every registered backend (usable or\n" +
			"not, and why), and what the CUDA driver reports: its version, each GPU's\n" +
			"name, memory and compute capability, and where the CUDA libraries were found.\n" +
			"Exits 0 as long as some backend is usable.",
		Action: func(c *cli.Context) error {
			return runDoctor(c.App.Writer, doctorConfig{Device: device(c)})
		},
	}
}

// runDoctor writes the report. It fails only when no backend is usable.
func runDoctor(w io.Writer, cfg doctorConfig) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "kdnative\t%s\n", kdnativeVersion())
	fmt.Fprintf(tw, "go\t%s %s/%s\n", goruntime.Version(), goruntime.GOOS, goruntime.GOARCH)
	fmt.Fprintf(tw, "cpus\tGOMAXPROCS %d, NumCPU %d\n", goruntime.GOMAXPROCS(0), goruntime.NumCPU())

	statuses := runtime.Probe()
	fmt.Fprintf(tw, "\nbackend\tusable\tdetails\n")
	selected := ""
	for _, s := range statuses {
		if s.Usable {
			fmt.Fprintf(tw, "%s\tyes\t%s\n", s.Name, s.Describe)
			if (selected == "" && cfg.Device == "auto") || s.Name == cfg.Device {
				selected = s.Name
			}
		} else {
			fmt.Fprintf(tw, "%s\tno\t%v\n", s.Name, s.Err)
		}
	}

	fmt.Fprintln(tw)
	writeCUDA(tw)

	switch {
	case selected != "":
		fmt.Fprintf(tw, "\n--device %s\tuses %s\n", cfg.Device, selected)
	case cfg.Device != "auto":
		fmt.Fprintf(tw, "\n--device %s\tunusable here (see above)\n", cfg.Device)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range statuses {
		if s.Usable {
			return nil
		}
	}
	return errors.New("no usable backend (see the table above)")
}

// writeCUDA adds what the driver reports, when it loaded: its version, the
// GPUs, and where the toolkit libraries the backend will need were found.
// When libcuda.so.1 is missing the backend table has already said so.
func writeCUDA(w io.Writer) {
	version, devs, err := cuda.Probe()
	path := cuda.DriverPath()
	if path == "" {
		fmt.Fprintf(w, "cuda driver\tnot loaded (see the cuda backend above)\n")
		return
	}
	if version > 0 {
		fmt.Fprintf(w, "cuda driver\t%s (%s)\n", cuda.VersionString(version), path)
	} else {
		fmt.Fprintf(w, "cuda driver\t%s: %v\n", path, err)
		return
	}
	if len(devs) == 0 {
		fmt.Fprintf(w, "gpus\tnone: %v\n", err)
	}
	for _, d := range devs {
		fmt.Fprintf(w, "gpu %d\t%s\n", d.Index, d)
	}
	for _, l := range []struct {
		name string
		lib  cuda.Lib
	}{
		{"cuBLASLt", cuda.LibCUBLASLt}, // before cuBLAS, which links against it
		{"cuBLAS", cuda.LibCUBLAS},
		{"NVRTC", cuda.LibNVRTC},
	} {
		lib, err := cuda.Load(l.lib.ForDriver(version))
		if err != nil {
			fmt.Fprintf(w, "%s\t%v\n", l.name, err)
			continue
		}
		fmt.Fprintf(w, "%s\t%s (%s, from %s)\n", l.name, lib.Soname, lib.Path, lib.From)
	}
	if n, err := cuda.LoadNVRTC(version); err == nil {
		fmt.Fprintf(w, "NVRTC version\t%s\n", n.Version())
	}
	if dir := cuda.KernelCacheDir(); dir != "" {
		fmt.Fprintf(w, "kernel cache\t%s (KDNATIVE_KERNEL_CACHE)\n", dir)
	}
}
