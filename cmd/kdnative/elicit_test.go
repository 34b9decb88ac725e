package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/kd/cache"
	"github.com/kdnative/kdnative/kd/data"
)

// runKD runs the app in process.
func runKD(args ...string) (stdout, stderr string, err error) {
	app := newApp()
	var out, errw bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errw
	err = app.Run(append([]string{"kdnative"}, args...))
	return out.String(), errw.String(), err
}

// TestElicitAndCacheTeacherHelp: every flag of elicit's subcommands and of
// cache-teacher says what it does, and no help line gives its default twice.
func TestElicitAndCacheTeacherHelp(t *testing.T) {
	cmds := map[string]*cli.Command{"cache-teacher": cacheTeacherCommand()}
	for _, sub := range elicitCommand().Subcommands {
		cmds["elicit "+sub.Name] = sub
	}
	for name, cmd := range cmds {
		for _, f := range cmd.Flags {
			if u, ok := f.(cli.DocGenerationFlag); !ok || strings.TrimSpace(u.GetUsage()) == "" {
				t.Errorf("%s --%s has no help text", name, f.Names()[0])
			}
		}
		out, _, err := runKD(append(strings.Fields(name), "--help")...)
		if err != nil {
			t.Fatalf("%s --help: %v", name, err)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Count(line, "(default") > 1 {
				t.Errorf("%s: the default given twice: %s", name, strings.TrimSpace(line))
			}
		}
	}
}

// TestNearDupOneMeaning: --near-dup reads the same in expand and curate.
func TestNearDupOneMeaning(t *testing.T) {
	usage := func(cmd *cli.Command) string {
		for _, f := range cmd.Flags {
			if f.Names()[0] == "near-dup" {
				u := f.(cli.DocGenerationFlag).GetUsage()
				return strings.NewReplacer("a record", "X", "an instruction", "X").Replace(u)
			}
		}
		return ""
	}
	var expand, curate string
	for _, sub := range elicitCommand().Subcommands {
		switch sub.Name {
		case "expand":
			expand = usage(sub)
		case "curate":
			curate = usage(sub)
		}
	}
	if expand == "" || expand != curate || !strings.Contains(expand, "0: exact duplicates only") {
		t.Fatalf("expand: %q\ncurate: %q", expand, curate)
	}
}

// TestCacheTeacherRefusesBadSizes: sizes below 1 are refused with the flag
// named, before any model is loaded.
func TestCacheTeacherRefusesBadSizes(t *testing.T) {
	base := []string{"cache-teacher", "--teacher", "/nonexistent", "--data", "/nonexistent.jsonl", "--output", t.TempDir()}
	for _, c := range []struct{ flag, value, want string }{
		{"--batch-size", "0", "--batch-size 0: must be at least 1"},
		{"--batch-size", "-3", "--batch-size -3: must be at least 1"},
		{"--max-len", "-5", "--max-len -5: must be at least 1"},
		{"--examples-per-shard", "0", "--examples-per-shard 0: must be at least 1"},
		{"-k", "0", "--k 0: must be at least 1"},
	} {
		_, _, err := runKD(append(append([]string(nil), base...), c.flag, c.value)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: %v, want %q", c.flag, c.value, err, c.want)
		}
	}
}

// TestCacheTeacherVerify: --verify prints ok per shard and succeeds on an
// intact cache; on a damaged one it names the shard and the block and
// fails.
func TestCacheTeacherVerify(t *testing.T) {
	dir := t.TempDir()
	h := cache.Header{Teacher: "t", TokenizerHash: "x", DataHash: "y", K: 2, Temperature: 1, Vocab: 50, Examples: 6}
	w, err := cache.Create(dir, h, cache.WriterOptions{ExamplesPerShard: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := range h.Examples {
		n := 20 + i
		e := cache.Entry{TopK: data.TopK{K: 2, IDs: make([]int32, 2*n), LogProbs: make([]float32, 2*n), Has: make([]bool, n)}}
		for p := 1; p < n; p++ {
			e.TopK.Has[p] = true
			e.TopK.IDs[2*p], e.TopK.IDs[2*p+1] = int32(p%50), int32((p+7)%50)
			e.TopK.LogProbs[2*p], e.TopK.LogProbs[2*p+1] = float32(math.Log(0.6)), float32(math.Log(0.1*float64(p%3+1)))
		}
		if err := w.Add(i, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out, _, err := runKD("cache-teacher", "--verify", dir)
	if err != nil || strings.Count(out, " ok ") != 3 || !strings.Contains(out, "ok: 3 shards, every block intact, all 6 examples") {
		t.Fatalf("intact: %v\n%s", err, out)
	}
	p := filepath.Join(dir, "cache-00001.kdc")
	raw, _ := os.ReadFile(p)
	n := int(raw[12]) | int(raw[13])<<8 | int(raw[14])<<16 | int(raw[15])<<24 // the header's JSON length
	raw[8+4+4+n+4+3] ^= 0x40                                                  // in the first block
	os.WriteFile(p, raw, 0o644)
	out, _, err = runKD("cache-teacher", "--verify", dir)
	if err == nil || !strings.Contains(err.Error(), "damaged or incomplete (4 of 6 examples intact)") ||
		!strings.Contains(out, "cache-00001.kdc  damaged    block 0 (examples 2–3): checksum mismatch") || strings.Count(out, " ok ") != 2 {
		t.Fatalf("damaged: %v\n%s", err, out)
	}
	t.Logf("\n%s", out)
}
