// Package kernels holds kdnative's CUDA C sources, embedded into the binary.
// The CUDA backend (package cuda) compiles them with NVRTC at first use, for
// the GPU's own architecture, and caches the result on disk.
//
// Each *.cu file is one program: common.cuh followed by the file. Sources
// include no CUDA headers (common.cuh carries the bf16 helpers), so that
// compilation needs nothing but NVRTC. Kernels are declared either as
// `extern "C" __global__ void name(` or with KD_EXPORT(name, ...), which
// exports name_f32 and name_bf16; Program.Kernels finds them by those forms.
package kernels

import (
	"embed"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
)

//go:embed common.cuh *.cu
var files embed.FS

// commonName is the shared header prepended to every program.
const commonName = "common.cuh"

// Program is one compilation unit.
type Program struct {
	// Name is the source file's name, e.g. "attention.cu"; NVRTC reports
	// errors against it.
	Name string
	// Source is common.cuh followed by the file, with a #line directive so
	// that NVRTC's messages give the file's own line numbers.
	Source string
	// Kernels lists the extern "C" kernel names the program defines.
	Kernels []string
	// Bounds maps the kernels declared with __launch_bounds__(N) (directly
	// or through KD_EXPORT_BOUNDED) to N, the most threads a block of them
	// may have.
	Bounds map[string]int
}

var (
	externRe = regexp.MustCompile(`extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\(\s*(\d+)\s*\)\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*\(`)
	exportRe = regexp.MustCompile(`(?m)^\s*KD_EXPORT(?:_BOUNDED)?\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,\s*(?:(\d+)\s*,)?`)
)

// Programs returns every kernel program, sorted by name.
func Programs() []Program {
	common, err := files.ReadFile(commonName)
	if err != nil {
		panic("kernels: " + err.Error()) // embedded: cannot happen
	}
	names, err := fs.Glob(files, "*.cu")
	if err != nil {
		panic("kernels: " + err.Error())
	}
	slices.Sort(names)
	var out []Program
	for _, n := range names {
		src, err := files.ReadFile(n)
		if err != nil {
			panic("kernels: " + err.Error())
		}
		names, bounds := kernelNames(string(src))
		out = append(out, Program{
			Name:    n,
			Source:  string(common) + "\n#line 1 \"" + n + "\"\n" + string(src),
			Kernels: names,
			Bounds:  bounds,
		})
	}
	return out
}

// kernelNames finds the kernels a source defines by their declaration forms
// (the patterns are specific enough not to match prose in comments), and
// their launch bounds.
func kernelNames(src string) ([]string, map[string]int) {
	var out []string
	bounds := map[string]int{}
	for _, m := range externRe.FindAllStringSubmatch(src, -1) {
		out = append(out, m[2])
		if n, err := strconv.Atoi(m[1]); err == nil {
			bounds[m[2]] = n
		}
	}
	for _, m := range exportRe.FindAllStringSubmatch(src, -1) {
		out = append(out, m[1]+"_f32", m[1]+"_bf16")
		if n, err := strconv.Atoi(m[2]); err == nil {
			bounds[m[1]+"_f32"], bounds[m[1]+"_bf16"] = n, n
		}
	}
	// KD_EXPORT's own definition is in common.cuh, not in src. A kernel
	// declared any other way would be missed; TestLaunchedKernelsExist
	// catches its launch site.
	slices.Sort(out)
	return slices.Compact(out), bounds
}

// Common returns the shared header's text.
func Common() string {
	b, _ := files.ReadFile(commonName)
	return string(b)
}
