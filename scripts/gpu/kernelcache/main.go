// Command kernelcache fills a kdnative kernel cache ahead of time, so that a
// GPU machine with the same NVRTC major.minor loads every kernel from disk
// instead of compiling it (scripts/gpu-check.sh ships the result in the GPU
// check's folder). It needs NVRTC, not a GPU:
//
//	go run ./scripts/gpu/kernelcache -o DIR [-cc 9.0]
//
// Each program of kernels/ is compiled by cuda.CompileProgram, the function
// the backend itself uses, with KDNATIVE_KERNEL_CACHE pointed at DIR, for the
// architecture a device of compute capability -cc reports (cuda.DeviceInfo's
// Arch: 9.0 is sm_90, the H100 and H200). The cache key holds the source, the
// options, the NVRTC version and the architecture, so the backend finds these
// cubins exactly when it would have made the same ones.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kdnative/kdnative/cuda"
	"github.com/kdnative/kdnative/kernels"
)

func main() {
	out := flag.String("o", "", "the cache directory to fill")
	cc := flag.String("cc", "9.0", "compute capability to compile for, MAJOR.MINOR")
	flag.Parse()
	if err := run(*out, *cc); err != nil {
		fmt.Fprintln(os.Stderr, "kernelcache:", err)
		os.Exit(1)
	}
}

func run(out, cc string) error {
	if out == "" {
		return fmt.Errorf("give -o DIR")
	}
	var dev cuda.DeviceInfo
	if _, err := fmt.Sscanf(cc, "%d.%d", &dev.Major, &dev.Minor); err != nil || dev.Major < 5 {
		return fmt.Errorf("-cc %q: want a compute capability such as 9.0", cc)
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return err
	}
	os.Setenv("KDNATIVE_KERNEL_CACHE", abs)
	n, err := cuda.LoadNVRTC(0)
	if err != nil {
		return err
	}
	progs := kernels.Programs()
	for _, p := range progs {
		if _, err := cuda.CompileProgram(n, p, dev.Arch()); err != nil {
			return err
		}
	}
	files, err := filepath.Glob(filepath.Join(abs, "*.cubin"))
	if err != nil {
		return err
	}
	if len(files) < len(progs) {
		return fmt.Errorf("%s holds %d cubins after compiling %d programs: the cache was not written", abs, len(files), len(progs))
	}
	fmt.Printf("%d programs compiled for %s by NVRTC %s (%s) into %s\n", len(progs), dev.Arch(), n.Version(), n.Path(), abs)
	return nil
}
