package cache

import (
	"io"
	"os"

	"github.com/kdnative/kdnative/internal/atomicfile"
)

// fsys is the file system the writer changes; tests put a failing one in
// its place (a full disk, a rename that fails).
type fsys interface {
	Create(name string) (wfile, error)
	Rename(from, to string) error
	Remove(name string) error
	SyncDir(dir string) error
}

type wfile interface {
	io.Writer
	Sync() error
	Close() error
}

type osFS struct{}

func (osFS) Create(name string) (wfile, error) {
	return os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
}

func (osFS) Rename(from, to string) error { return os.Rename(from, to) }

func (osFS) Remove(name string) error { return os.Remove(name) }

// SyncDir makes renames in dir durable; file systems that cannot sync a
// directory are not an error.
func (osFS) SyncDir(dir string) error { return atomicfile.SyncDir(dir) }
