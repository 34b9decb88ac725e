//go:build linux && (amd64 || arm64)

package cuda

import (
	"bufio"
	"os"
	"strings"

	"github.com/ebitengine/purego"
)

func unsupported() error { return nil }

func dlopen(path string) (uintptr, error) {
	return purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
}

func dlsym(handle uintptr, name string) (uintptr, error) {
	return purego.Dlsym(handle, name)
}

func registerFunc(fptr any, addr uintptr) {
	purego.RegisterFunc(fptr, addr)
}

// loadedPath finds the file behind a library that the dynamic loader opened by
// soname, from /proc/self/maps (base "libcuda" matches
// /usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15). It returns fallback when
// the maps do not say.
func loadedPath(base, fallback string) string {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return fallback
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		i := strings.IndexByte(line, '/')
		if i < 0 {
			continue
		}
		p := line[i:]
		name := p[strings.LastIndexByte(p, '/')+1:]
		if strings.HasPrefix(name, base+".so") {
			return p
		}
	}
	return fallback
}
