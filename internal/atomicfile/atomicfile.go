// Package atomicfile writes files so that a crash or a full disk leaves
// either the old file or the new one, never half of one: the content goes
// to a temporary file beside the target (".<name>.tmp-*"), which is synced,
// made 0644 (os.CreateTemp makes 0600; outputs are for sharing) and renamed
// over the target; then the folder is synced. On failure the temporary file
// is removed.
//
// Why the folder is synced: on Linux a rename is only in the folder's entry,
// which reaches the disk when the folder is synced (fsync(2) on the file
// covers its data, not the name pointing at it). Without it a crash soon
// after a successful write can bring back the old file — whole, but not the
// one the caller was told it wrote (a checkpoint reported as saved, a
// metrics file that a resume then trusts). Syncing the folder costs one more
// fsync a file.
package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
)

// WriteFile writes data to path atomically.
func WriteFile(path string, data []byte) error {
	return Write(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// Write writes path atomically with what fill writes. fill is given the
// temporary *os.File itself, so io.Copy into it can use the kernel's copy.
func Write(path string, fill func(io.Writer) error) error {
	f, err := Create(path)
	if err != nil {
		return err
	}
	defer f.Abort()
	if err := fill(f.f); err != nil {
		return err
	}
	return f.Commit()
}

// File is a file being written atomically, for a writer that cannot be one
// callback (several outputs written side by side): Create it, write to it,
// then Commit; Abort (deferred) discards it unless it was committed.
type File struct {
	f    *os.File
	path string
	done bool
}

// Create starts writing path atomically: a temporary file beside it.
func Create(path string) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	return &File{f: f, path: path}, nil
}

// Write writes to the temporary file.
func (f *File) Write(p []byte) (int, error) { return f.f.Write(p) }

// Commit makes the file 0644, syncs and closes it, renames it over the
// target and syncs the folder. On an error before the rename the temporary
// file is removed and the target is as it was; an error syncing the folder
// comes after the rename (the new file is in place but may not survive a
// crash).
func (f *File) Commit() error {
	if f.done {
		return errors.New("atomicfile: " + f.path + " committed or aborted already")
	}
	f.done = true
	err := f.f.Chmod(0o644)
	if err == nil {
		err = f.f.Sync()
	}
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.f.Name(), f.path)
	}
	if err != nil {
		os.Remove(f.f.Name())
		return err
	}
	return SyncDir(filepath.Dir(f.path))
}

// Abort closes and removes the temporary file, unless Commit was called.
func (f *File) Abort() {
	if !f.done {
		f.done = true
		f.f.Close()
		os.Remove(f.f.Name())
	}
}

// SyncDir makes the renames and removals in dir durable. A file system that
// cannot sync a folder (EINVAL, ENOTSUP) is not an error, nor is Windows,
// where a folder opened for reading cannot be synced.
func SyncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return err
	}
	return nil
}
