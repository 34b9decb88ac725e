//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly || solaris

package safetensors

import (
	"os"
	"syscall"
)

// mapFile maps the first size bytes of f read-only and returns the mapping
// and the function that releases it.
func mapFile(f *os.File, size int) ([]byte, func() error, error) {
	b, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return b, func() error { return syscall.Munmap(b) }, nil
}
