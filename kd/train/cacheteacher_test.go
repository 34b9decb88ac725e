package train

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kdnative/kdnative/kd/cache"
	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestCacheTeacherRefusesBadSizes: a negative batch size or max-len is
// refused up front, naming the option, before the teacher is loaded.
func TestCacheTeacherRefusesBadSizes(t *testing.T) {
	for _, c := range []struct {
		cfg  CacheConfig
		want string
	}{
		{CacheConfig{K: 4, Temperature: 1, BatchSize: -3}, "batch size -3 must be at least 1"},
		{CacheConfig{K: 4, Temperature: 1, MaxLen: -5}, "max-len -5 must be at least 1"},
		{CacheConfig{K: 4, Temperature: 1, ExamplesPerShard: -1}, "examples per shard -1 must be at least 1"},
		{CacheConfig{K: 4, Temperature: math.Inf(1)}, "temperature +Inf must be positive and finite"},
	} {
		c.cfg.Teacher, c.cfg.Data, c.cfg.Output = "/nonexistent/teacher", "/nonexistent/data.jsonl", t.TempDir()
		err := CacheTeacher(context.Background(), cpu.New(), c.cfg, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}

// damageBlock flips a byte inside the first data block of a shard (past
// its preamble, before its index), which only reading the block finds.
func damageBlock(t *testing.T, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(raw, []byte("\"floor\":")) // in the preamble's JSON
	i += bytes.IndexByte(raw[i:], '}') + 1 + 4 + 8
	raw[i] ^= 0x20
	os.WriteFile(path, raw, 0o644)
}

// TestCacheTeacherRewritesDamagedShard: cache-teacher run again over a
// cache with a damaged data block in a middle shard says so, naming the
// shard and the block, computes that shard's examples only (the intact
// shards stay byte for byte), and leaves a cache that verifies; a training
// run over the damaged cache names the shard instead of "an unfinished run".
func TestCacheTeacherRewritesDamagedShard(t *testing.T) {
	w := newWorld(t)
	dir := filepath.Join(w.dir, "cache")
	cc := CacheConfig{Teacher: w.teacher, Data: w.sft, Output: dir, K: 8, Temperature: 1, MaxLen: 64, Template: "none", ExamplesPerShard: 4, BatchSize: 3}
	var log bytes.Buffer
	if err := CacheTeacher(context.Background(), cpu.New(), cc, &log); err != nil {
		t.Fatalf("%v\n%s", err, &log)
	}
	if !strings.Contains(log.String(), "12 examples to cache (all of them: a training run takes its validation split from the same cache)") || strings.Contains(log.String(), "0 validation") {
		t.Fatalf("data line:\n%s", &log)
	}
	before := map[string][]byte{}
	for _, n := range []string{"cache-00000.kdc", "cache-00002.kdc"} {
		before[n], _ = os.ReadFile(filepath.Join(dir, n))
	}
	damageBlock(t, filepath.Join(dir, "cache-00001.kdc"))

	// Training names the shard, the block and what to do.
	r := w.recipe(filepath.Join(w.dir, "run"))
	r.Teacher = w.teacher
	r.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1, Cache: dir}
	r.MaxSteps = 1
	_, err := Run(context.Background(), cpu.New(), r, Options{Log: &bytes.Buffer{}})
	if err == nil || !strings.Contains(err.Error(), "cache-00001.kdc: block 0") || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("training over a damaged cache: %v", err)
	}
	if rep, err := cache.VerifyDir(dir); err != nil || rep.OK() || rep.Shards[1].Status() != "damaged" {
		t.Fatalf("VerifyDir: %v\n%s", err, rep)
	}

	log.Reset()
	if err := CacheTeacher(context.Background(), cpu.New(), cc, &log); err != nil {
		t.Fatalf("%v\n%s", err, &log)
	}
	if !regexp.MustCompile(`cache-00001.kdc: block 0 \(examples 4–\d+\): checksum mismatch .*; its examples are cached again`).MatchString(log.String()) ||
		!strings.Contains(log.String(), "resuming: 8 of 12 examples already cached (every block checked); 4 to go") ||
		!strings.Contains(log.String(), "cached 12 examples (4 computed in this run)") {
		t.Fatalf("second run's log:\n%s", &log)
	}
	for n, b := range before {
		if now, _ := os.ReadFile(filepath.Join(dir, n)); !bytes.Equal(now, b) {
			t.Fatalf("the intact %s was rewritten", n)
		}
	}
	if rep, err := cache.VerifyDir(dir); err != nil || !rep.OK() {
		t.Fatalf("after the rerun: %v\n%s", err, rep)
	}
	if _, err := Run(context.Background(), cpu.New(), r, Options{Log: &bytes.Buffer{}}); err != nil {
		t.Fatalf("training over the repaired cache: %v", err)
	}
}

// TestCacheTeacherNamesMissingShard: a shard deleted from a finished cache
// is named when a run reads the cache, where it used to say "an unfinished
// run".
func TestCacheTeacherNamesMissingShard(t *testing.T) {
	w := newWorld(t)
	dir := filepath.Join(w.dir, "cache")
	cc := CacheConfig{Teacher: w.teacher, Data: w.sft, Output: dir, K: 8, Temperature: 1, MaxLen: 64, Template: "none", ExamplesPerShard: 5}
	if err := CacheTeacher(context.Background(), cpu.New(), cc, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "cache-00001.kdc"))
	r := w.recipe(filepath.Join(w.dir, "run"))
	r.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1, Cache: dir}
	_, err := Run(context.Background(), cpu.New(), r, Options{Log: &bytes.Buffer{}})
	if err == nil || !strings.Contains(err.Error(), "holds 5 of 12 examples: cache-00001.kdc is missing") || !strings.Contains(err.Error(), "--verify") {
		t.Fatalf("%v", err)
	}
}

// TestInspectCacheRenormalized: two bins of 0.5 each (top-1 and tail) are
// each stored rounded up (log 0.5 lies 0.18 of a step below a grid point),
// so the stored bins sum above 1; inspect shows them renormalized, as
// training reads them: 0.5 and 0.5.
func TestInspectCacheRenormalized(t *testing.T) {
	dir := t.TempDir()
	h := cache.Header{Teacher: "t", TokenizerHash: "x", DataHash: "y", K: 1, Temperature: 1, Vocab: 4, Examples: 1}
	w, err := cache.Create(dir, h, cache.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	half := float32(math.Log(0.5))
	e := cache.Entry{TopK: data.TopK{K: 1, IDs: []int32{0, 2}, LogProbs: []float32{0, half}, Has: []bool{false, true}}, Tail: []float32{0, half}}
	if err := w.Add(0, e); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := InspectCache(dir, 0, 1, &out); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`top-1 mass ([0-9.]+), tail ([0-9.]+) \(renormalized`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("inspect:\n%s", &out)
	}
	top, _ := strconv.ParseFloat(m[1], 64)
	tail, _ := strconv.ParseFloat(m[2], 64)
	if math.Abs(top-0.5) > 1e-4 || math.Abs(tail-0.5) > 1e-4 || !strings.Contains(out.String(), "p=0.5000") {
		t.Fatalf("want 0.5 and 0.5:\n%s", &out)
	}
	if !regexp.MustCompile(`stored: top-1 0\.50\d\d \+ tail 0\.50\d\d = 1\.0\d\d\d`).MatchString(out.String()) {
		t.Fatalf("the stored bins should sum above 1 here:\n%s", &out)
	}
}

// TestCacheProgressLine: with a clock of its own, the rate follows the
// tokens done and the time left the tokens left; a plain writer gets a line
// every 15 s and no carriage return, a terminal a redrawn line.
func TestCacheProgressLine(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := t0
	var b bytes.Buffer
	p := newCacheProgress(&b, 10, 1000)
	p.now = func() time.Time { return clock }
	p.start, p.last = t0, t0
	if got := p.line(clock); got != "cache-teacher: 0/10 examples, 0/1000 tokens, ? tokens/s, ? left" {
		t.Fatalf("%q", got)
	}
	clock = t0.Add(10 * time.Second)
	p.add(2, 250)
	if b.Len() != 0 {
		t.Fatalf("a line before 15 s: %q", b.String())
	}
	clock = t0.Add(20 * time.Second)
	p.add(2, 250)
	p.end()
	if got := b.String(); got != "cache-teacher: 4/10 examples, 500/1000 tokens, 25 tokens/s, 20s elapsed, 20s left\n" {
		t.Fatalf("%q", got)
	}
	b.Reset()
	p.term = true
	clock = t0.Add(30 * time.Second)
	p.add(6, 500)
	p.end()
	if got := b.String(); !strings.HasPrefix(got, "\rcache-teacher: 10/10 examples") || !strings.HasSuffix(got, "0s left   \n") || strings.Count(got, "\r") != 2 {
		t.Fatalf("%q", got)
	}
}
