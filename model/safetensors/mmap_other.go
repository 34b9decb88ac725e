//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly || solaris)

package safetensors

import (
	"io"
	"os"
)

// mapFile reads the first size bytes of f into memory: this platform has no
// syscall.Mmap, so the file is read whole.
func mapFile(f *os.File, size int) ([]byte, func() error, error) {
	b := make([]byte, size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, nil, err
	}
	return b, func() error { return nil }, nil
}
