package cache

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// shardOpt makes 12 examples in 4 shards of 3, several blocks each.
var shardOpt = WriterOptions{ExamplesPerShard: 3, BlockBytes: 60}

func fourShards(t *testing.T) (string, Header, []Entry) {
	t.Helper()
	dir := t.TempDir()
	h := testHeader(12)
	es := entries(31, h.Examples, h.K, h.Vocab)
	writeCache(t, dir, h, shardOpt, es)
	h.Version = FormatVersion
	return dir, h, es
}

// flipBlockByte flips a byte in the middle of block b of shard n.
func flipBlockByte(t *testing.T, dir string, h Header, n, first, b int) {
	t.Helper()
	p := filepath.Join(dir, shardName(n))
	si, err := readShard(p, n, first, h)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(p)
	raw[si.Blocks[b].Off+int64(si.Blocks[b].Bytes)/2] ^= 0x10
	os.WriteFile(p, raw, 0o644)
}

// TestResumeRewritesDamagedShards: damage that Open cannot see (a data
// block) or can (header, trailer, a missing file) in shards between intact
// ones: Create checks every block of the shards it keeps, names the
// damaged ones, asks for their examples only (not the intact shards after
// them), and the finished cache is byte for byte the undamaged one.
func TestResumeRewritesDamagedShards(t *testing.T) {
	ref, h, es := fourShards(t)
	for _, c := range []struct {
		name   string
		damage func(dir string)
		todo   string
		left   []string
	}{
		{"block in shard 1", func(dir string) { flipBlockByte(t, dir, h, 1, 3, 1) },
			"[examples 3–5]", []string{"cache-00001.kdc: block 1 (examples"}},
		{"block in shard 0", func(dir string) { flipBlockByte(t, dir, h, 0, 0, 0) },
			"[examples 0–2]", []string{"cache-00000.kdc: block 0 (examples 0–"}},
		{"blocks in the last shard", func(dir string) { flipBlockByte(t, dir, h, 3, 9, 0) },
			"[examples 9–11]", []string{"cache-00003.kdc: block 0"}},
		{"shards 1 and 2", func(dir string) {
			flipBlockByte(t, dir, h, 2, 6, 0)
			os.Truncate(filepath.Join(dir, shardName(1)), 0)
		}, "[examples 3–8]", []string{"cache-00001.kdc: file: truncated: 0 bytes", "cache-00002.kdc: block 0"}},
		{"a missing shard and a damaged trailer", func(dir string) {
			os.Remove(filepath.Join(dir, shardName(0)))
			p := filepath.Join(dir, shardName(2))
			raw, _ := os.ReadFile(p)
			raw[len(raw)-10] ^= 1
			os.WriteFile(p, raw, 0o644)
		}, "[examples 0–2 examples 6–8]", []string{"cache-00000.kdc is missing", "cache-00002.kdc: trailer: "}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, ref, dir)
			c.damage(dir)
			w, err := Create(dir, h, shardOpt)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(w.Todo()); got != c.todo {
				t.Fatalf("Todo %s, want %s", got, c.todo)
			}
			left := w.LeftOut()
			if len(left) != len(c.left) {
				t.Fatalf("LeftOut %v, want %d naming %v", left, len(c.left), c.left)
			}
			for i, want := range c.left {
				if !strings.Contains(left[i].Error(), want) {
					t.Fatalf("LeftOut[%d] = %v, want it to say %q", i, left[i], want)
				}
			}
			fill(t, w, es)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			sameFiles(t, ref, dir)
		})
	}
}

// TestResumeUnfinishedAfterGap: a missing middle shard and an unfinished
// end: the gap's shard keeps its number and examples, the end goes on in
// shards of ExamplesPerShard; interrupted inside the gap, the unfinished
// gap shard is dropped (its number must hold all its examples) and a later
// run writes it.
func TestResumeUnfinishedAfterGap(t *testing.T) {
	ref, h, es := fourShards(t)
	dir := t.TempDir()
	copyDir(t, ref, dir)
	os.Remove(filepath.Join(dir, shardName(1)))
	os.Remove(filepath.Join(dir, shardName(3)))
	w, err := Create(dir, h, shardOpt)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(w.Todo()); got != "[examples 3–5 examples 9–11]" || w.Done() != 6 || len(w.LeftOut()) != 1 {
		t.Fatalf("Todo %s, Done %d, LeftOut %v", got, w.Done(), w.LeftOut())
	}
	if err := w.Add(4, es[4]); err == nil || !strings.Contains(err.Error(), "expected 3") {
		t.Fatalf("Add out of order: %v", err)
	}
	// Interrupted after two of the gap's three examples.
	for i := 3; i < 5; i++ {
		if err := w.Add(i, es[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, shardName(1))); err == nil {
		t.Fatal("an unfinished gap shard was written")
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(tmps) != 0 {
		t.Fatalf("left %v", tmps)
	}
	w, err = Create(dir, h, shardOpt)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(w.Todo()); got != "[examples 3–5 examples 9–11]" {
		t.Fatalf("Todo %s", got)
	}
	fill(t, w, es)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, ref, dir)
	if err := w.Add(0, es[0]); err == nil {
		t.Fatal("Add after the cache is complete")
	}
}

// TestVerifyDir: an intact cache is ok; each kind of damage is named per
// shard with its part, the examples lost are listed, and OK is false.
func TestVerifyDir(t *testing.T) {
	ref, h, _ := fourShards(t)
	rep, err := VerifyDir(ref)
	if err != nil || !rep.OK() || len(rep.Shards) != 4 || rep.Intact != 12 {
		t.Fatalf("intact cache: %v\n%s", err, rep)
	}
	if s := rep.String(); !strings.Contains(s, "cache-00002.kdc  ok         examples 6–8") || !strings.HasSuffix(s, "ok: 4 shards, every block intact, all 12 examples") {
		t.Fatalf("report:\n%s", s)
	}
	for _, c := range []struct {
		name   string
		damage func(dir string)
		want   []string // the report's lines, in part
	}{
		{"data block", func(dir string) { flipBlockByte(t, dir, h, 1, 3, 1) },
			[]string{"cache-00001.kdc  damaged    block 1 (examples ", "checksum mismatch", "examples 3–5: in no intact shard", "DAMAGED: 1 of 4 shards unusable; 9 of 12 examples intact"}},
		{"header", func(dir string) {
			p := filepath.Join(dir, shardName(2))
			raw, _ := os.ReadFile(p)
			raw[20] ^= 1
			os.WriteFile(p, raw, 0o644)
		}, []string{"cache-00002.kdc  damaged    header: checksum mismatch", "examples 6–8: in no intact shard"}},
		{"index", func(dir string) {
			p := filepath.Join(dir, shardName(0))
			raw, _ := os.ReadFile(p)
			raw[len(raw)-trailerSize-3] ^= 1
			os.WriteFile(p, raw, 0o644)
		}, []string{"cache-00000.kdc  damaged    index: checksum mismatch", "examples 0–2: in no intact shard", "cache-00001.kdc  ok"}},
		{"trailer", func(dir string) {
			p := filepath.Join(dir, shardName(3))
			raw, _ := os.ReadFile(p)
			raw[len(raw)-1] ^= 1
			os.WriteFile(p, raw, 0o644)
		}, []string{"cache-00003.kdc  damaged    trailer: checksum mismatch", "examples 9–11: in no intact shard"}},
		{"truncated", func(dir string) {
			p := filepath.Join(dir, shardName(1))
			st, _ := os.Stat(p)
			os.Truncate(p, st.Size()/2)
		}, []string{"cache-00001.kdc  damaged    trailer: no end marker: truncated"}},
		{"empty", func(dir string) { os.Truncate(filepath.Join(dir, shardName(1)), 0) },
			[]string{"cache-00001.kdc  damaged    file: truncated: 0 bytes"}},
		{"missing", func(dir string) { os.Remove(filepath.Join(dir, shardName(1))) },
			[]string{"cache-00001.kdc  missing", "examples 3–5: in no intact shard", "DAMAGED"}},
		{"stray", func(dir string) { os.WriteFile(filepath.Join(dir, "cache-2147483647.kdc"), []byte("x"), 0o644) },
			[]string{"cache-2147483647.kdc  (numbered beyond any shard of this cache: never read)", "ok: 4 shards"}},
		{"unfinished", func(dir string) { os.Remove(filepath.Join(dir, shardName(3))) },
			[]string{"examples 9–11: in no intact shard", "INCOMPLETE: 9 of 12 examples (an unfinished cache-teacher run"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, ref, dir)
			c.damage(dir)
			rep, err := VerifyDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			s := rep.String()
			if rep.OK() != (c.name == "stray") {
				t.Fatalf("OK %v after damage:\n%s", rep.OK(), s)
			}
			for _, want := range c.want {
				if !strings.Contains(s, want) {
					t.Fatalf("report lacks %q:\n%s", want, s)
				}
			}
		})
	}
}

// TestVerifyFindsEveryFlip flips every byte of a middle shard in turn:
// VerifyDir calls that shard damaged (naming a part) and the others ok, and
// Create leaves it out, asking for its examples only.
func TestVerifyFindsEveryFlip(t *testing.T) {
	dir, h, _ := fourShards(t)
	path := filepath.Join(dir, shardName(1))
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile(path, orig, 0o644)
	statuses := map[string]int{}
	for p := range orig {
		b := append([]byte(nil), orig...)
		b[p] ^= 0x04
		os.WriteFile(path, b, 0o644)
		rep, err := VerifyDir(dir)
		if err != nil {
			t.Fatalf("byte %d: %v", p, err)
		}
		var got []string
		for _, s := range rep.Shards {
			got = append(got, s.Status())
		}
		if fmt.Sprint(got) != "[ok damaged ok ok]" && fmt.Sprint(got) != "[ok misplaced ok ok]" {
			t.Fatalf("byte %d flipped: %v\n%s", p, got, rep)
		}
		statuses[rep.Shards[1].Status()+" "+strings.SplitN(rep.Shards[1].Reason(), " ", 2)[0]]++
		if p%9 == 0 {
			w, err := Create(dir, h, shardOpt)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(w.Todo()) != "[examples 3–5]" {
				t.Fatalf("byte %d flipped: Todo %v", p, w.Todo())
			}
			w.Close()
		}
	}
	t.Logf("%d bytes flipped: %v", len(orig), statuses)
}
