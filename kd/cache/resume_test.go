package cache

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

var resumeOpt = WriterOptions{ExamplesPerShard: 4, BlockBytes: 100}

// TestResumeAfterCrash: a writer dropped mid-shard (its temporary file half
// written, never closed) loses only that shard; Create resumes at the last
// complete shard and the finished cache is byte for byte the one an
// uninterrupted run writes.
func TestResumeAfterCrash(t *testing.T) {
	h := testHeader(10)
	es := entries(21, h.Examples, h.K, h.Vocab)
	ref := t.TempDir()
	writeCache(t, ref, h, resumeOpt, es)

	dir := t.TempDir()
	w, err := Create(dir, h, resumeOpt)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		if err := w.Add(i, es[i]); err != nil {
			t.Fatal(err)
		}
	}
	if w.Done() != 4 {
		t.Fatalf("Done %d after 7 examples in shards of 4", w.Done())
	}
	// The crash: the writer is dropped with shard 1 half written.
	tmp := filepath.Join(dir, "cache-00001.kdc.tmp")
	if st, err := os.Stat(tmp); err != nil || st.Size() == 0 {
		t.Fatalf("no partial temporary file: %v", err)
	}
	w.f.Close() // what the process's death does

	// Readers see the complete shard only.
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() != 4 {
		t.Fatalf("Len %d, want 4", r.Len())
	}
	r.Close()

	w, err = Create(dir, h, resumeOpt)
	if err != nil {
		t.Fatal(err)
	}
	if w.Done() != 4 {
		t.Fatalf("resumed Done %d, want 4", w.Done())
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the partial temporary file is still there: %v", err)
	}
	if err := w.Add(7, es[7]); err == nil || !strings.Contains(err.Error(), "example 7 arrives, expected 4") {
		t.Fatalf("Add out of order: %v", err)
	}
	for i := w.Done(); i < len(es); i++ {
		if err := w.Add(i, es[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, ref, dir)
}

// TestResumeAfterClose: Close writes a short shard; a later run goes on
// after it with new shards.
func TestResumeAfterClose(t *testing.T) {
	h := testHeader(10)
	es := entries(22, h.Examples, h.K, h.Vocab)
	dir := t.TempDir()
	w, err := Create(dir, h, resumeOpt)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if err := w.Add(i, es[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Add(6, es[6]); err == nil {
		t.Fatal("Add after Close")
	}
	w, err = Create(dir, h, resumeOpt)
	if err != nil {
		t.Fatal(err)
	}
	if w.Done() != 6 {
		t.Fatalf("Done %d, want 6", w.Done())
	}
	for i := 6; i < len(es); i++ {
		if err := w.Add(i, es[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(shardFiles(t, dir)); n != 3 {
		t.Fatalf("%d shards, want 4+2 then 4", n)
	}
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Len() != 10 || r.Incomplete() != nil {
		t.Fatalf("Len %d, %v", r.Len(), r.Incomplete())
	}
	for i, e := range es {
		got, err := r.Get(i)
		if err != nil {
			t.Fatal(err)
		}
		checkEntry(t, i, got, e, h.K, DefaultQuantization)
	}
	// A complete cache: Create resumes at the end, Close removes nothing.
	w, err = Create(dir, h, resumeOpt)
	if err != nil || w.Done() != 10 {
		t.Fatalf("Create on a complete cache: Done %d, %v", w.Done(), err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(shardFiles(t, dir)); n != 3 {
		t.Fatalf("%d shards after a no-op Create/Close", n)
	}
}

// faultFS is the real file system with faults: a disk of budget bytes
// (ENOSPC past it; -1: no limit), Sync or Rename failing for names that
// contain a string.
type faultFS struct {
	osFS
	budget     int64
	failSync   string
	failRename string
}

type faultFile struct {
	*os.File
	fs   *faultFS
	name string
}

func (f *faultFS) Create(name string) (wfile, error) {
	w, err := f.osFS.Create(name)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: w.(*os.File), fs: f, name: name}, nil
}

func (f *faultFS) Rename(from, to string) error {
	if f.failRename != "" && strings.Contains(from, f.failRename) {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: syscall.EIO}
	}
	return f.osFS.Rename(from, to)
}

func (f *faultFile) Write(b []byte) (int, error) {
	if f.fs.budget >= 0 && int64(len(b)) > f.fs.budget {
		n, _ := f.File.Write(b[:f.fs.budget])
		f.fs.budget = 0
		return n, &os.PathError{Op: "write", Path: f.name, Err: syscall.ENOSPC}
	}
	if f.fs.budget >= 0 {
		f.fs.budget -= int64(len(b))
	}
	return f.File.Write(b)
}

func (f *faultFile) Sync() error {
	if f.fs.failSync != "" && strings.Contains(f.name, f.fs.failSync) {
		return &os.PathError{Op: "sync", Path: f.name, Err: syscall.EIO}
	}
	return f.File.Sync()
}

// TestFullDisk: the disk fills while shard 2 is written. Add's error names
// the file and wraps ENOSPC; the temporary file is removed; shards 0 and 1
// are intact and read; the writer refuses to go on; a later Create (space
// freed) resumes at example 8 and finishes the same cache as an
// uninterrupted run.
func TestFullDisk(t *testing.T) {
	h := testHeader(10)
	es := entries(23, h.Examples, h.K, h.Vocab)
	ref := t.TempDir()
	writeCache(t, ref, h, resumeOpt, es)
	size := func(name string) int64 { st, _ := os.Stat(filepath.Join(ref, name)); return st.Size() }
	budget := size(cacheJSON) + size("cache-00000.kdc") + size("cache-00001.kdc") + 50

	dir := t.TempDir()
	w, err := create(dir, h, resumeOpt, &faultFS{budget: budget})
	if err != nil {
		t.Fatal(err)
	}
	var failed error
	at := -1
	for i := range es {
		if err := w.Add(i, es[i]); err != nil {
			failed, at = err, i
			break
		}
	}
	if failed == nil {
		t.Fatal("the disk never filled")
	}
	if !errors.Is(failed, syscall.ENOSPC) || !strings.Contains(failed.Error(), "cache-00002.kdc.tmp") {
		t.Fatalf("error at example %d does not name the file or ENOSPC: %v", at, failed)
	}
	t.Logf("example %d: %v", at, failed)
	if w.Done() != 8 {
		t.Fatalf("Done %d, want 8", w.Done())
	}
	if _, err := os.Stat(filepath.Join(dir, "cache-00002.kdc.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the temporary file was left: %v", err)
	}
	if err := w.Add(at+1, es[(at+1)%len(es)]); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("the writer went on after a full disk: %v", err)
	}
	if err := w.Close(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Close after a full disk: %v", err)
	}
	for _, name := range []string{"cache-00000.kdc", "cache-00001.kdc"} {
		a, _ := os.ReadFile(filepath.Join(ref, name))
		b, _ := os.ReadFile(filepath.Join(dir, name))
		if string(a) != string(b) {
			t.Fatalf("%s changed", name)
		}
	}
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() != 8 || r.Incomplete() == nil || !strings.Contains(r.Incomplete().Error(), "cache-00002.kdc is missing") {
		t.Fatalf("Len %d, %v", r.Len(), r.Incomplete())
	}
	for i := range 8 {
		got, err := r.Get(i)
		if err != nil {
			t.Fatal(err)
		}
		checkEntry(t, i, got, es[i], h.K, DefaultQuantization)
	}
	r.Close()

	w, err = Create(dir, h, resumeOpt)
	if err != nil {
		t.Fatal(err)
	}
	if w.Done() != 8 {
		t.Fatalf("resumed at %d, want 8", w.Done())
	}
	for i := 8; i < len(es); i++ {
		if err := w.Add(i, es[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, ref, dir)
}

// TestFullDiskAtCreate: no room even for cache.json.
func TestFullDiskAtCreate(t *testing.T) {
	dir := t.TempDir()
	_, err := create(dir, testHeader(3), WriterOptions{}, &faultFS{budget: 10})
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "cache.json") {
		t.Fatalf("%v", err)
	}
	if es, _ := os.ReadDir(dir); len(es) != 0 {
		t.Fatalf("left %v", es)
	}
}

// TestSyncAndRenameFail: the other I/O errors of finishing a shard.
func TestSyncAndRenameFail(t *testing.T) {
	h := testHeader(10)
	es := entries(24, h.Examples, h.K, h.Vocab)
	for _, c := range []struct {
		fs   *faultFS
		want string
	}{
		{&faultFS{budget: -1, failSync: "cache-00001"}, "syncing "},
		{&faultFS{budget: -1, failRename: "cache-00001"}, "renaming "},
	} {
		dir := t.TempDir()
		w, err := create(dir, h, resumeOpt, c.fs)
		if err != nil {
			t.Fatal(err)
		}
		var failed error
		for i := range es {
			if failed = w.Add(i, es[i]); failed != nil {
				break
			}
		}
		if failed == nil || !strings.Contains(failed.Error(), c.want) || !strings.Contains(failed.Error(), "cache-00001.kdc.tmp") || !errors.Is(failed, syscall.EIO) {
			t.Fatalf("%v, want %q naming the file", failed, c.want)
		}
		if w.Done() != 4 {
			t.Fatalf("Done %d", w.Done())
		}
		w.Close()
		names, _ := filepath.Glob(filepath.Join(dir, "*"))
		if len(names) != 2 {
			t.Fatalf("left %v, want cache.json and shard 0", names)
		}
		r, err := Open(dir)
		if err != nil || r.Len() != 4 {
			t.Fatalf("Open: %v", err)
		}
		r.Close()
	}
}
