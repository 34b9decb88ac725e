package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Range is the examples First … End−1.
type Range struct{ First, End int }

func (r Range) String() string {
	if r.End-r.First == 1 {
		return fmt.Sprintf("example %d", r.First)
	}
	return fmt.Sprintf("examples %d–%d", r.First, r.End-1)
}

// shardState is what survey found at one shard number: info when the shard
// is intact, else err (nil err and nil info: the file is missing).
type shardState struct {
	num  int
	path string
	info *shardInfo
	err  error
}

// errMissing is a missing shard file's problem.
var errMissing = errors.New("missing")

// survey looks at every shard file of dir, numbers 0 to the highest
// present, wherever each says it starts. With verify it also reads every
// block of every structurally sound shard, checks its checksum and decodes
// its examples. A shard of another cache is an error (the folder is not
// this cache's to change).
func survey(dir string, h Header, verify bool) ([]shardState, error) {
	names, err := filepath.Glob(filepath.Join(dir, "cache-*.kdc"))
	if err != nil {
		return nil, err
	}
	// A cache of n examples has at most n shards: a file numbered beyond
	// (a stray) is no part of it, and is not looked at.
	top := -1
	for _, p := range names {
		if n, ok := shardNumber(filepath.Base(p)); ok && n > top && n < h.Examples {
			top = n
		}
	}
	var dec *zstd.Decoder
	if verify && top >= 0 {
		if dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(decoderMaxMemory)); err != nil {
			return nil, fmt.Errorf("teacher cache: %w", err)
		}
		defer dec.Close()
	}
	states := make([]shardState, top+1)
	for n := range states {
		p := filepath.Join(dir, shardName(n))
		st := shardState{num: n, path: p}
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			st.err = errMissing
		} else if si, err := readShard(p, n, -1, h); errors.Is(err, ErrMismatch) {
			return nil, err
		} else if err != nil {
			st.err = err
		} else if verify {
			if err := checkBlocks(dec, si, h); err != nil {
				st.err = err
			} else {
				st.info = si
			}
		} else {
			st.info = si
		}
		states[n] = st
	}
	return states, nil
}

// checkBlocks reads every block of a shard, checks its checksum and decodes
// every example: nil, or the first damage (a *CorruptError naming the
// block).
func checkBlocks(dec *zstd.Decoder, sh *shardInfo, h Header) error {
	f, err := os.Open(sh.Path)
	if err != nil {
		return fmt.Errorf("teacher cache: %w", err)
	}
	defer f.Close()
	var streams [nStreams][]byte
	for bi, b := range sh.Blocks {
		buf := make([]byte, b.Bytes)
		if _, err := f.ReadAt(buf, b.Off); err != nil {
			return blockError(sh, bi, -1, fmt.Sprintf("reading: %v", err))
		}
		if got := crc(buf); got != b.CRC {
			return blockError(sh, bi, -1, fmt.Sprintf("checksum mismatch (stored %08x, computed %08x)", b.CRC, got))
		}
		if err := decompress(dec, buf, b, &streams); err != nil {
			return blockError(sh, bi, -1, err.Error())
		}
		for j := range b.N {
			if _, err := decodeExample(sh.q, h.K, h.Vocab, &streams, b.N, j, b.Pos); err != nil {
				return blockError(sh, bi, b.First+j, err.Error())
			}
		}
	}
	return nil
}

// gap is examples no kept shard holds, to be written as shards num,
// num+1, …: exactly shards of them between two kept shards (the numbers
// free there), as many as it takes at the end (shards < 0).
type gap struct {
	Range
	num, shards int
}

// layout is what a resumed writer keeps and what it writes again.
type layout struct {
	kept     []*shardInfo
	done     int // examples in kept shards
	gaps     []gap
	endShard int // the number after the last kept shard
	// left are the shards left out, each with an error naming the file and
	// why: damaged, missing before a kept shard, or not fitting between
	// its neighbours.
	left []leftShard
}

type leftShard struct {
	num int
	err error
}

// plan keeps every intact shard that fits the layout: shard n must start
// where the kept shard before it ends when no number lies between them,
// and leave at least one example for each free number otherwise. The rest
// is gaps.
func plan(states []shardState, h Header) layout {
	var l layout
	prevEnd, prevNum := 0, -1
	var pending []leftShard // shards left out since the last kept one
	for _, st := range states {
		if st.info == nil {
			pending = append(pending, leftShard{st.num, shardErr(st)})
			continue
		}
		si := st.info
		free := st.num - prevNum - 1
		fits := si.First+si.N <= h.Examples && (free == 0 && si.First == prevEnd || free > 0 && si.First >= prevEnd+free)
		if !fits {
			pending = append(pending, leftShard{st.num, fmt.Errorf("%s holds examples %d–%d, which do not follow the shards before it (left from another layout?)", st.path, si.First, si.First+si.N-1)})
			continue
		}
		if free > 0 {
			l.gaps = append(l.gaps, gap{Range{prevEnd, si.First}, prevNum + 1, free})
		}
		l.left = append(l.left, pending...)
		pending = nil
		l.kept = append(l.kept, si)
		l.done += si.N
		prevEnd, prevNum = si.First+si.N, st.num
	}
	// After the last kept shard, a missing file is only not written yet.
	for _, ls := range pending {
		if !errors.Is(ls.err, errMissing) {
			l.left = append(l.left, ls)
		}
	}
	if prevEnd < h.Examples {
		l.gaps = append(l.gaps, gap{Range{prevEnd, h.Examples}, prevNum + 1, -1})
	}
	l.endShard = prevNum + 1
	return l
}

func shardErr(st shardState) error {
	if st.err == errMissing {
		return fmt.Errorf("%s is %w", st.path, errMissing)
	}
	return st.err
}

// ShardCheck is one shard file as Verify found it.
type ShardCheck struct {
	Name string // the file name, e.g. cache-00003.kdc
	// Range is the examples it holds (zero when unknown: damaged header,
	// index or trailer, or missing); Blocks its blocks.
	Range  Range
	Blocks int
	// Err is nil for an intact shard that fits the cache's layout, else
	// why not: a *CorruptError (the part and what is wrong), a missing
	// file, or a shard that does not follow the ones before it.
	Err error
}

// Status is "ok", "missing", "damaged" or "misplaced".
func (c ShardCheck) Status() string {
	var ce *CorruptError
	switch {
	case c.Err == nil:
		return "ok"
	case errors.Is(c.Err, errMissing):
		return "missing"
	case errors.As(c.Err, &ce):
		return "damaged"
	}
	return "misplaced"
}

// Reason is what is wrong, without the file name ("" when intact).
func (c ShardCheck) Reason() string {
	var ce *CorruptError
	switch {
	case c.Err == nil:
		return ""
	case errors.As(c.Err, &ce):
		s := ce.Part + ": " + ce.Detail
		if ce.Example >= 0 {
			s += fmt.Sprintf(" (example %d)", ce.Example)
		}
		return s
	}
	return strings.TrimPrefix(strings.TrimPrefix(c.Err.Error(), "teacher cache: "), c.Name+" ")
}

// VerifyReport is what VerifyDir found in a cache folder.
type VerifyReport struct {
	Dir    string
	Header Header
	// Shards are the shard numbers from 0 to the highest file present.
	Shards []ShardCheck
	// Intact counts the examples of intact shards that fit the layout;
	// Missing are the examples no such shard holds (a damaged or missing
	// shard's, or those an unfinished run has not written yet).
	Intact  int
	Missing []Range
	// Temporary lists *.kdc.tmp files: shards a crash interrupted (never
	// read; the next cache-teacher run removes them).
	Temporary []string
	// Stray lists shard files numbered beyond any shard a cache of this
	// many examples can have (never read; removed when a run completes the
	// cache).
	Stray []string
}

// OK reports whether every shard is intact and the cache holds every
// example.
func (r VerifyReport) OK() bool {
	for _, s := range r.Shards {
		if s.Err != nil {
			return false
		}
	}
	return r.Intact == r.Header.Examples
}

// String is the report in lines: one per shard, then the examples
// missing, then a verdict.
func (r VerifyReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "teacher cache %s: %d examples (teacher %s, k = %d)\n", r.Dir, r.Header.Examples, r.Header.Teacher, r.Header.K)
	bad := 0
	for _, s := range r.Shards {
		switch {
		case s.Err == nil:
			blocks := "blocks"
			if s.Blocks == 1 {
				blocks = "block"
			}
			fmt.Fprintf(&b, "  %s  ok         %s, %d %s\n", s.Name, s.Range, s.Blocks, blocks)
		default:
			bad++
			fmt.Fprintf(&b, "  %s  %-9s  %s\n", s.Name, s.Status(), s.Reason())
		}
	}
	for _, t := range r.Temporary {
		fmt.Fprintf(&b, "  %s  (a shard a crash interrupted: never read, removed by the next cache-teacher run)\n", t)
	}
	for _, t := range r.Stray {
		fmt.Fprintf(&b, "  %s  (numbered beyond any shard of this cache: never read)\n", t)
	}
	for _, m := range r.Missing {
		fmt.Fprintf(&b, "  %s: in no intact shard\n", m)
	}
	switch {
	case r.OK():
		fmt.Fprintf(&b, "ok: %d shards, every block intact, all %d examples", len(r.Shards), r.Header.Examples)
	case bad > 0:
		fmt.Fprintf(&b, "DAMAGED: %d of %d shards unusable; %d of %d examples intact. Run cache-teacher again with the same arguments: it keeps the intact shards and writes the others again", bad, len(r.Shards), r.Intact, r.Header.Examples)
	default:
		fmt.Fprintf(&b, "INCOMPLETE: %d of %d examples (an unfinished cache-teacher run: run it again with the same arguments to finish)", r.Intact, r.Header.Examples)
	}
	return b.String()
}

// VerifyDir checks a cache folder completely: cache.json, and every shard
// file's header, index, trailer and every block (checksum, decompression,
// every example decoded), and that the shards tile the examples. An error
// means the folder is not a readable cache at all (no cache.json, a shard
// of another cache); damage is in the report.
func VerifyDir(dir string) (VerifyReport, error) {
	h, err := readCacheJSON(dir)
	if err != nil {
		return VerifyReport{}, err
	}
	if h.Version != FormatVersion {
		return VerifyReport{}, fmt.Errorf("teacher cache: %s is format version %d; this kdnative reads version %d", dir, h.Version, FormatVersion)
	}
	states, err := survey(dir, h, true)
	if err != nil {
		return VerifyReport{}, err
	}
	l := plan(states, h)
	left := map[int]error{}
	for _, ls := range l.left {
		left[ls.num] = ls.err
	}
	rep := VerifyReport{Dir: dir, Header: h, Intact: l.done}
	for _, st := range states {
		c := ShardCheck{Name: filepath.Base(st.path)}
		switch {
		case left[st.num] != nil:
			c.Err = left[st.num]
		case st.info != nil:
			c.Range, c.Blocks = Range{st.info.First, st.info.First + st.info.N}, len(st.info.Blocks)
		default:
			c.Err = shardErr(st) // missing after the last intact shard
		}
		rep.Shards = append(rep.Shards, c)
	}
	for _, g := range l.gaps {
		rep.Missing = append(rep.Missing, g.Range)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "cache-*.kdc"))
	sort.Strings(names)
	for _, p := range names {
		if n, ok := shardNumber(filepath.Base(p)); ok && n >= len(states) && n >= h.Examples {
			rep.Stray = append(rep.Stray, filepath.Base(p))
		}
	}
	tmps, _ := filepath.Glob(filepath.Join(dir, "cache-*.kdc.tmp"))
	sort.Strings(tmps)
	for _, t := range tmps {
		rep.Temporary = append(rep.Temporary, filepath.Base(t))
	}
	return rep, nil
}
