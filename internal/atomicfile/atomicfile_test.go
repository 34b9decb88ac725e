package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWrite: a written file has its content and mode 0644 and no
// temporary file is left; a failed fill leaves the old file as it was and
// no temporary file either.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.json")
	if err := WriteFile(p, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "new" {
		t.Fatalf("content %q", b)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	boom := errors.New("boom")
	err := Write(p, func(w io.Writer) error {
		w.Write([]byte("half"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the fill's error", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "new" {
		t.Fatalf("a failed write changed the file to %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
}

// TestWriteTempName: while fill runs, the content sits in one file named
// ".<name>.tmp-*" beside the target (the pattern kd/train's cleanup of a
// killed run looks for), and fill is handed the *os.File itself, so io.Copy
// into it can use the kernel's copy.
func TestWriteTempName(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "model.safetensors")
	err := Write(p, func(w io.Writer) error {
		if _, ok := w.(*os.File); !ok {
			t.Errorf("fill got a %T, want the *os.File", w)
		}
		ents, _ := os.ReadDir(dir)
		if len(ents) != 1 || !strings.HasPrefix(ents[0].Name(), ".model.safetensors.tmp-") {
			t.Errorf("while writing the folder holds %v, want one .model.safetensors.tmp-*", ents)
		}
		_, err := w.Write([]byte("x"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWriteRenameFails: when the rename cannot be made (the target is a
// folder that is not empty), the error says so, the folder and what it
// holds are untouched, and no temporary file stays.
func TestWriteRenameFails(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "keep"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new")); err == nil {
		t.Fatal("writing over a folder that is not empty succeeded")
	}
	if b, _ := os.ReadFile(filepath.Join(p, "keep")); string(b) != "kept" {
		t.Fatalf("the folder's file now holds %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
}

// TestCreateCommitAbort: two files written side by side through Create are
// invisible at their targets until Commit; Abort after a partial write
// leaves the old file and no temporary one; Abort after Commit keeps the
// committed file; a second Commit is an error.
func TestCreateCommitAbort(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.jsonl"), filepath.Join(dir, "b.jsonl")
	if err := os.WriteFile(a, []byte("old a"), 0o600); err != nil {
		t.Fatal(err)
	}
	fa, err := Create(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := Create(b)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(fa, "new ")
	io.WriteString(fb, "half of b")
	io.WriteString(fa, "a")
	if got, _ := os.ReadFile(a); string(got) != "old a" {
		t.Fatalf("before Commit a holds %q", got)
	}
	fb.Abort()
	if _, err := os.Stat(b); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an aborted file reached its target: %v", err)
	}
	if err := fa.Commit(); err != nil {
		t.Fatal(err)
	}
	fa.Abort()
	if got, _ := os.ReadFile(a); string(got) != "new a" {
		t.Fatalf("after Commit a holds %q", got)
	}
	if st, _ := os.Stat(a); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v after Commit, want 0644", st.Mode().Perm())
	}
	if err := fa.Commit(); err == nil {
		t.Fatal("a second Commit succeeded")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
}

// TestSyncDir: syncing a real folder succeeds; a missing one is an error
// naming it, not silence.
func TestSyncDir(t *testing.T) {
	dir := t.TempDir()
	if err := SyncDir(dir); err != nil {
		t.Fatalf("syncing %s: %v", dir, err)
	}
	missing := filepath.Join(dir, "missing")
	if err := SyncDir(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("syncing a missing folder: got %v", err)
	}
}
