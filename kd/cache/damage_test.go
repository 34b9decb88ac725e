package cache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// smallCache writes a cache of 9 examples in 3 shards of 3, several blocks
// each, and returns its folder and entries.
func smallCache(t *testing.T) (string, Header, []Entry) {
	t.Helper()
	dir := t.TempDir()
	h := testHeader(9)
	es := entries(11, h.Examples, h.K, h.Vocab)
	writeCache(t, dir, h, WriterOptions{ExamplesPerShard: 3, BlockBytes: 60}, es)
	return dir, h, es
}

// TestFlippedByte flips every byte of a shard in turn: each flip must be
// found, by Open (the shard's header, index or trailer: the shard is left
// out and Incomplete names it) or by Get and Verify (a block: the error
// names the file, the block and the example), and the other shards must
// still read.
func TestFlippedByte(t *testing.T) {
	dir, h, es := smallCache(t)
	path := filepath.Join(dir, "cache-00001.kdc")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	si, err := readShard(path, 1, 3, func() Header { h := h; h.Version = FormatVersion; return h }())
	if err != nil {
		t.Fatal(err)
	}
	if len(si.Blocks) < 2 {
		t.Fatalf("want several blocks, got %d", len(si.Blocks))
	}
	blockOf := func(p int) int {
		for i, b := range si.Blocks {
			if int64(p) >= b.Off && int64(p) < b.Off+int64(b.Bytes) {
				return i
			}
		}
		return -1
	}
	parts := map[string]int{}
	for p := range orig {
		for _, x := range []byte{0x01, 0x80} {
			b := append([]byte(nil), orig...)
			b[p] ^= x
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			part := checkDamage(t, dir, "cache-00001.kdc", blockOf(p), es)
			if part == "" {
				t.Fatalf("byte %d ^ %#x of %d: not detected", p, x, len(orig))
			}
			parts[part]++
		}
	}
	os.WriteFile(path, orig, 0o644)
	t.Logf("%d bytes flipped twice each; found by %v", len(orig), parts)
	for _, want := range []string{"header", "index", "trailer", "block"} {
		if parts[want] == 0 {
			t.Errorf("no flip was found in the %s", want)
		}
	}
}

// checkDamage opens a cache with one damaged shard and says where the
// damage was found ("" when not), failing the test when the error does not
// name the file (and block) or the other shards do not read.
func checkDamage(t *testing.T, dir, file string, block int, es []Entry) string {
	t.Helper()
	r, err := Open(dir)
	if err != nil {
		// A flip in the JSON that still passes … cannot pass its checksum;
		// Open fails only for a shard of another cache.
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	if inc := r.Incomplete(); inc != nil {
		if !strings.Contains(inc.Error(), file) || !errors.Is(inc, ErrCorrupt) {
			t.Fatalf("Incomplete does not name %s as damaged: %v", file, inc)
		}
		if r.Len() != 3 {
			t.Fatalf("Len %d with shard 1 damaged, want 3", r.Len())
		}
		for i := range 3 {
			if _, err := r.Get(i); err != nil {
				t.Fatalf("shard 0 unreadable: %v", err)
			}
		}
		var ce *CorruptError
		errors.As(inc, &ce)
		return ce.Part
	}
	err = r.Verify()
	if err == nil {
		return ""
	}
	want := fmt.Sprintf("%s: block %d ", file, block)
	if !strings.Contains(err.Error(), want) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify's error does not name %q: %v", want, err)
	}
	// Get names the example too; the other shards read.
	var ce *CorruptError
	errors.As(err, &ce)
	bi := r.shards[1].Blocks[block]
	_, gerr := r.Get(bi.First)
	if gerr == nil || !strings.Contains(gerr.Error(), want) || !strings.Contains(gerr.Error(), fmt.Sprintf("reading example %d", bi.First)) {
		t.Fatalf("Get(%d): %v", bi.First, gerr)
	}
	for _, i := range []int{0, 1, 2, 6, 7, 8} {
		got, err := r.Get(i)
		if err != nil {
			t.Fatalf("Get(%d) of an intact shard: %v", i, err)
		}
		checkEntry(t, i, got, es[i], 8, DefaultQuantization)
	}
	return "block"
}

// TestTruncatedShard cuts a shard short at several lengths: the reader
// serves the shards before it and names it; Create keeps the intact shards
// on both sides, names the cut one, asks for its examples only, and the
// finished cache equals one never damaged.
func TestTruncatedShard(t *testing.T) {
	ref, h, es := smallCache(t)
	size := func(p string) int64 { st, _ := os.Stat(p); return st.Size() }
	n := size(filepath.Join(ref, "cache-00001.kdc"))
	for _, cut := range []int64{0, 5, 30, n / 2, n - trailerSize, n - 1} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, ref, dir)
			p := filepath.Join(dir, "cache-00001.kdc")
			if err := os.Truncate(p, cut); err != nil {
				t.Fatal(err)
			}
			r, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			inc := r.Incomplete()
			if r.Len() != 3 || inc == nil || !strings.Contains(inc.Error(), "cache-00001.kdc") || !strings.Contains(inc.Error(), "truncated") || !strings.Contains(inc.Error(), "holds 3 of 9 examples") {
				t.Fatalf("Len %d, Incomplete %v", r.Len(), inc)
			}
			for i := range 3 {
				got, err := r.Get(i)
				if err != nil {
					t.Fatal(err)
				}
				checkEntry(t, i, got, es[i], h.K, DefaultQuantization)
			}
			if _, err := r.Get(3); err == nil || !strings.Contains(err.Error(), "not in the cache") {
				t.Fatalf("Get(3): %v", err)
			}
			r.Close()
			w, err := Create(dir, h, WriterOptions{ExamplesPerShard: 3, BlockBytes: 60})
			if err != nil {
				t.Fatal(err)
			}
			if w.Done() != 6 || fmt.Sprint(w.Todo()) != "[examples 3–5]" {
				t.Fatalf("Done %d, Todo %v; want 6 and examples 3–5", w.Done(), w.Todo())
			}
			if left := fmt.Sprint(w.LeftOut()); !strings.Contains(left, "cache-00001.kdc") || !strings.Contains(left, "truncated") {
				t.Fatalf("LeftOut %s", left)
			}
			for i := 3; i < 6; i++ {
				if err := w.Add(i, es[i]); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			sameFiles(t, ref, dir)
		})
	}
}

// TestShardTruncatedAfterOpen: a block read past the end of a file that
// shrank after Open is named, not a panic.
func TestShardTruncatedAfterOpen(t *testing.T) {
	dir, _, _ := smallCache(t)
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	os.Truncate(filepath.Join(dir, "cache-00002.kdc"), 40)
	_, err = r.Get(8)
	if err == nil || !strings.Contains(err.Error(), "cache-00002.kdc") || !strings.Contains(err.Error(), "truncated since the cache was opened") {
		t.Fatalf("Get after truncation: %v", err)
	}
}

// TestMissingShard: a shard deleted from the middle.
func TestMissingShard(t *testing.T) {
	dir, _, _ := smallCache(t)
	os.Remove(filepath.Join(dir, "cache-00001.kdc"))
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if inc := r.Incomplete(); r.Len() != 3 || inc == nil || !strings.Contains(inc.Error(), "cache-00001.kdc is missing") {
		t.Fatalf("Len %d, Incomplete %v", r.Len(), inc)
	}
}
