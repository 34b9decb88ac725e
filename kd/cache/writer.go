package cache

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// WriterOptions tune a Writer; the zero value is the default.
type WriterOptions struct {
	// ExamplesPerShard is how many examples a shard holds (default 1024):
	// the unit of durability, since a shard becomes visible whole or not at
	// all.
	ExamplesPerShard int
	// Quantization of the stored log-probabilities (default
	// DefaultQuantization).
	Quantization Quantization
	// BlockBytes is the uncompressed size at which a block is closed
	// (default 256 KiB, at most 64 MiB): the unit that Get reads and
	// decompresses. An example never spans blocks.
	BlockBytes int
	// Level is zstd's (default zstd.SpeedBetterCompression).
	Level zstd.EncoderLevel
}

const (
	defaultExamplesPerShard = 1024
	defaultBlockBytes       = 256 << 10
	maxBlockOption          = 64 << 20
	// maxBlockExamples bounds the examples of a block, so that finding one
	// in the block's meta stream stays short.
	maxBlockExamples = 4096
	cacheJSON        = "cache.json"
	cacheFormat      = "kdnative teacher cache"
)

// cacheFile is cache.json.
type cacheFile struct {
	Format string `json:"format"`
	Header
}

// Writer fills a cache folder with shards. Examples arrive in index order,
// the ranges of Todo() one after another; each full shard is written to a
// temporary file, synced and renamed into place, so the folder only ever
// holds complete shards (and at most one temporary file, which Create
// removes). A Writer is not safe for concurrent use.
type Writer struct {
	dir string
	h   Header
	opt WriterOptions
	fs  fsys
	zw  *zstd.Encoder
	e   encoder

	done     int   // examples in complete shards
	next     int   // the index Add expects
	shard    int   // number of the shard being built
	target   int   // the examples it will hold
	gaps     []gap // what is left to write; gaps[0] is being written
	endShard int   // the number after the last complete shard
	left     []error

	// the shard being built
	f          wfile
	tmp        string
	off        int64
	blocks     []blockInfo
	shardFirst int
	shardN     int
	shardPos   int64

	// the block being built
	blockFirst, blockN, blockPos, blockTPos int
	buf                                     []byte

	err    error // sticky: an I/O error ends the writer
	closed bool
}

// Create opens the cache folder dir for writing, making it if needed. A
// folder that already holds a cache with the same header is resumed: every
// shard is checked through (header, index, trailer and every block, as
// VerifyDir does), the intact ones are kept, and Todo() gives the examples
// still to add: those of the shards missing or damaged (LeftOut says which
// and why; each is written again under its own number, holding the same
// examples) and those an unfinished run never wrote. A folder holding a
// cache with another header (teacher, tokenizer, data, k, temperature,
// vocabulary) is refused with an error that names the differences, and
// nothing in it is touched. A header whose k exceeds its vocabulary is
// refused.
func Create(dir string, h Header, opt WriterOptions) (*Writer, error) {
	return create(dir, h, opt, osFS{})
}

func create(dir string, h Header, opt WriterOptions, fsy fsys) (*Writer, error) {
	if h.Version == 0 {
		h.Version = FormatVersion
	}
	if err := h.validate(); err != nil {
		return nil, err
	}
	if opt.ExamplesPerShard == 0 {
		opt.ExamplesPerShard = defaultExamplesPerShard
	}
	if opt.Quantization.Step == 0 {
		opt.Quantization = DefaultQuantization
	}
	if opt.BlockBytes == 0 {
		opt.BlockBytes = defaultBlockBytes
	}
	if opt.Level == 0 {
		opt.Level = zstd.SpeedBetterCompression
	}
	if opt.ExamplesPerShard < 1 || opt.ExamplesPerShard > math.MaxInt32 {
		return nil, fmt.Errorf("teacher cache: %d examples per shard", opt.ExamplesPerShard)
	}
	if opt.BlockBytes < 1 || opt.BlockBytes > maxBlockOption {
		return nil, fmt.Errorf("teacher cache: blocks of %d bytes (1 to %d)", opt.BlockBytes, maxBlockOption)
	}
	q, err := newQuantizer(opt.Quantization)
	if err != nil {
		return nil, err
	}
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(opt.Level), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, fmt.Errorf("teacher cache: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("teacher cache: %w", err)
	}
	w := &Writer{dir: dir, h: h, opt: opt, fs: fsy, zw: zw, e: encoder{q: q.withProbs(), k: h.K, vocab: h.Vocab}}

	stored, err := readCacheJSON(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		js, err := json.MarshalIndent(cacheFile{Format: cacheFormat, Header: h}, "", "  ")
		if err != nil {
			return nil, err
		}
		if err := w.writeAtomic(cacheJSON, append(js, '\n')); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		if err := stored.Compatible(h); err != nil {
			return nil, fmt.Errorf("teacher cache: %s holds another cache, refusing to write into it: %w", dir, err)
		}
		if stored != h {
			return nil, fmt.Errorf("teacher cache: %s holds another cache (%+v), refusing to write into it: %w", dir, stored, ErrMismatch)
		}
	}
	// A temporary file is a shard a crash interrupted: never complete.
	tmps, _ := filepath.Glob(filepath.Join(dir, "cache-*.kdc.tmp"))
	for _, t := range tmps {
		if err := fsy.Remove(t); err != nil {
			return nil, fmt.Errorf("teacher cache: removing the unfinished %s: %w", t, err)
		}
	}
	states, err := survey(dir, h, true)
	if err != nil {
		return nil, err
	}
	l := plan(states, h)
	w.done, w.gaps, w.endShard = l.done, l.gaps, l.endShard
	for _, ls := range l.left {
		w.left = append(w.left, ls.err)
	}
	w.enterGap()
	return w, nil
}

// enterGap points the writer at the first gap left (or past the end).
func (w *Writer) enterGap() {
	if len(w.gaps) == 0 {
		w.next, w.shard = w.h.Examples, w.endShard
		return
	}
	w.next, w.shard = w.gaps[0].First, w.gaps[0].num
}

// Done is the number of examples in complete shards: after a crash, what
// survived.
func (w *Writer) Done() int { return w.done }

// Todo is the examples still to add, in the order Add wants them: after a
// crash or on a fresh cache one range from Done() to the end; where a
// damaged or missing shard was found between intact ones, its examples
// first.
func (w *Writer) Todo() []Range {
	var out []Range
	for i, g := range w.gaps {
		if i == 0 {
			g.First = w.next
		}
		out = append(out, g.Range)
	}
	return out
}

// LeftOut lists the shard files that Create found damaged, missing between
// intact shards, or not fitting the layout, each an error naming the file
// and why; their examples are in Todo().
func (w *Writer) LeftOut() []error { return w.left }

// Add appends example index, which must be the next one of Todo(). A bad entry (wrong shape, an id outside the vocabulary or
// repeated, a log-probability above 0 or NaN) is refused and the writer goes
// on; an I/O error (a full disk) names the file, ends the writer, and leaves
// the complete shards as they were.
func (w *Writer) Add(index int, e Entry) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return fmt.Errorf("teacher cache: Add after Close")
	}
	if index >= w.h.Examples {
		return fmt.Errorf("teacher cache: example %d is beyond the %d examples of the header", index, w.h.Examples)
	}
	if len(w.gaps) == 0 {
		return fmt.Errorf("teacher cache: example %d arrives, but the cache is complete", index)
	}
	if index != w.next {
		return fmt.Errorf("teacher cache: example %d arrives, expected %d (examples come in the order of Todo(): %v)", index, w.next, w.Todo())
	}
	if w.f == nil {
		if err := w.startShard(); err != nil {
			return w.fail(err)
		}
	}
	if w.blockN > 0 && int64(w.blockPos)+int64(len(e.TopK.Has)) > math.MaxUint32 {
		if err := w.flushBlock(); err != nil {
			return w.fail(err)
		}
	}
	var saved [nStreams]int
	raw := 0
	for i := range w.e.s {
		saved[i] = len(w.e.s[i])
	}
	pos, tpos, err := w.e.add(index, e)
	if err != nil {
		return err
	}
	for i := range w.e.s {
		raw += len(w.e.s[i])
	}
	if raw > maxBlockBytes/2 {
		for i := range w.e.s {
			w.e.s[i] = w.e.s[i][:saved[i]]
		}
		return fmt.Errorf("teacher cache: example %d is too large (%d bytes encoded)", index, raw)
	}
	if w.blockN == 0 {
		w.blockFirst = index
	}
	w.blockN++
	w.blockPos += pos
	w.blockTPos += tpos
	w.shardN++
	w.shardPos += int64(pos)
	w.next++
	if raw >= w.opt.BlockBytes || w.blockN >= maxBlockExamples {
		if err := w.flushBlock(); err != nil {
			return w.fail(err)
		}
	}
	if w.shardN == w.target || w.next == w.gaps[0].End {
		if err := w.finishShard(); err != nil {
			return w.fail(err)
		}
	}
	return nil
}

// Close writes the examples added since the last complete shard as a
// (smaller) shard, atomically — except in a gap between intact shards,
// where a shard must hold exactly the examples its number stands for: there
// the unfinished shard is dropped, and a later run writes it whole. When
// the cache is complete Close also removes shard files beyond the last one
// (left by an earlier layout). After an I/O error Close removes the
// unfinished file and returns that error.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	defer w.zw.Close()
	if w.err != nil {
		return w.err
	}
	if w.shardN > 0 && w.gaps[0].shards < 0 {
		if err := w.finishShard(); err != nil {
			return w.fail(err)
		}
	} else if w.f != nil { // a gap's shard unfinished, or every example was refused
		w.f.Close()
		w.f = nil
		if err := w.fs.Remove(w.tmp); err != nil {
			return fmt.Errorf("teacher cache: removing %s: %w", w.tmp, err)
		}
	}
	if w.done == w.h.Examples {
		all, _ := filepath.Glob(filepath.Join(w.dir, "cache-*.kdc"))
		for _, p := range all {
			n, ok := shardNumber(filepath.Base(p))
			if ok && n >= w.endShard {
				if err := w.fs.Remove(p); err != nil {
					return fmt.Errorf("teacher cache: removing the stale %s: %w", p, err)
				}
			}
		}
	}
	return nil
}

// fail records an I/O error: the unfinished temporary file goes, the
// complete shards stay.
func (w *Writer) fail(err error) error {
	w.err = err
	if w.f != nil {
		w.f.Close()
		w.f = nil
		w.fs.Remove(w.tmp)
	}
	return err
}

func (w *Writer) startShard() error {
	w.tmp = filepath.Join(w.dir, shardName(w.shard)+".tmp")
	f, err := w.fs.Create(w.tmp)
	if err != nil {
		return fmt.Errorf("teacher cache: creating %s: %w", w.tmp, err)
	}
	w.f = f
	w.shardFirst, w.shardN, w.shardPos, w.blocks, w.off = w.next, 0, 0, w.blocks[:0], 0
	// A gap between intact shards is shared evenly by its shard numbers
	// (one shard holding exactly a damaged one's examples, as a rule); the
	// end gets shards of ExamplesPerShard.
	if g := w.gaps[0]; g.shards > 0 {
		n := g.End - w.next
		w.target = (n + g.shards - 1) / g.shards
	} else {
		w.target = w.opt.ExamplesPerShard
	}
	pre, err := preamble(shardHeader{Cache: w.h, Shard: w.shard, First: w.next, Quantization: w.e.q.Quantization, Floor: Floor})
	if err != nil {
		return err
	}
	return w.write(pre)
}

func (w *Writer) write(b []byte) error {
	if _, err := w.f.Write(b); err != nil {
		return fmt.Errorf("teacher cache: writing %s: %w", w.tmp, err)
	}
	w.off += int64(len(b))
	return nil
}

// flushBlock compresses the block's streams, each as its own zstd frame,
// and appends the block to the shard.
func (w *Writer) flushBlock() error {
	if w.blockN == 0 {
		return nil
	}
	var frames [nStreams][]byte
	raw := 0
	b := binary.AppendUvarint(w.buf[:0], nStreams)
	for i, s := range w.e.s {
		if len(s) > 0 {
			frames[i] = w.zw.EncodeAll(s, nil)
		}
		raw += len(s)
		b = binary.AppendUvarint(b, uint64(len(frames[i])))
		b = binary.AppendUvarint(b, uint64(len(s)))
	}
	for _, f := range frames {
		b = append(b, f...)
	}
	w.buf = b
	bl := blockInfo{Off: w.off, Bytes: uint32(len(b)), Raw: uint32(raw), First: w.blockFirst, N: w.blockN, Pos: w.blockPos, TeachPos: w.blockTPos, CRC: crc(b)}
	if err := w.write(b); err != nil {
		return err
	}
	w.blocks = append(w.blocks, bl)
	w.e.reset()
	w.blockN, w.blockPos, w.blockTPos = 0, 0, 0
	return nil
}

// finishShard writes the index and trailer, syncs, closes and renames the
// shard into place.
func (w *Writer) finishShard() error {
	if err := w.flushBlock(); err != nil {
		return err
	}
	index := appendIndex(nil, w.shardFirst, w.blocks)
	tr := trailer(w.off, index, w.shardFirst, w.shardN, len(w.blocks), w.shardPos)
	if err := w.write(append(index, tr...)); err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("teacher cache: syncing %s: %w", w.tmp, err)
	}
	err := w.f.Close()
	w.f = nil
	if err != nil {
		w.fs.Remove(w.tmp)
		return fmt.Errorf("teacher cache: closing %s: %w", w.tmp, err)
	}
	final := filepath.Join(w.dir, shardName(w.shard))
	if err := w.fs.Rename(w.tmp, final); err != nil {
		w.fs.Remove(w.tmp)
		return fmt.Errorf("teacher cache: renaming %s to %s: %w", w.tmp, final, err)
	}
	if err := w.fs.SyncDir(w.dir); err != nil {
		return fmt.Errorf("teacher cache: syncing the folder %s: %w", w.dir, err)
	}
	w.done += w.shardN
	w.shard++
	w.endShard = max(w.endShard, w.shard)
	w.shardN, w.shardPos = 0, 0
	if g := &w.gaps[0]; g.shards > 0 {
		g.shards--
	}
	if w.next == w.gaps[0].End {
		w.gaps = w.gaps[1:]
		w.enterGap()
	}
	return nil
}

// writeAtomic writes dir/name through a synced temporary file and a rename.
// It is not internal/atomicfile because it goes through w.fs, which the
// tests replace with one that fails (a full disk, a rename refused), like
// the shards it sits beside.
func (w *Writer) writeAtomic(name string, b []byte) error {
	final := filepath.Join(w.dir, name)
	tmp := final + ".tmp"
	f, err := w.fs.Create(tmp)
	if err != nil {
		return fmt.Errorf("teacher cache: creating %s: %w", tmp, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = w.fs.Rename(tmp, final)
	}
	if err != nil {
		w.fs.Remove(tmp)
		return fmt.Errorf("teacher cache: writing %s: %w", final, err)
	}
	return w.fs.SyncDir(w.dir)
}

// readCacheJSON reads the folder's header; a missing file wraps
// fs.ErrNotExist.
func readCacheJSON(dir string) (Header, error) {
	p := filepath.Join(dir, cacheJSON)
	b, err := os.ReadFile(p)
	if err != nil {
		return Header{}, fmt.Errorf("teacher cache: %w", err)
	}
	var cf cacheFile
	if err := json.Unmarshal(b, &cf); err != nil {
		return Header{}, fmt.Errorf("teacher cache: %s: %w", p, err)
	}
	if cf.Format != cacheFormat {
		return Header{}, fmt.Errorf("teacher cache: %s is not a kdnative teacher cache header (format %q)", p, cf.Format)
	}
	return cf.Header, nil
}

func shardNumber(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, "cache-")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, ".kdc")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}

// scan reads the shards of dir in order and keeps the leading run of
// complete ones: their examples are done. problem says why the run stops
// short of h.Examples (a missing or damaged shard); err is a shard of
// another cache, which makes the folder unusable.
func scan(dir string, h Header) (shards []*shardInfo, done int, problem, err error) {
	for n := 0; done < h.Examples; n++ {
		p := filepath.Join(dir, shardName(n))
		if _, serr := os.Stat(p); serr != nil {
			if errors.Is(serr, fs.ErrNotExist) {
				problem = fmt.Errorf("%s is missing", shardName(n))
			} else {
				problem = serr
			}
			break
		}
		si, serr := readShard(p, n, done, h)
		if serr != nil {
			if errors.Is(serr, ErrMismatch) {
				return nil, 0, nil, serr
			}
			problem = serr
			break
		}
		if si.N > h.Examples-done {
			problem = fmt.Errorf("%s holds examples %d–%d, beyond the %d of the header", p, si.First, si.First+si.N-1, h.Examples)
			break
		}
		shards = append(shards, si)
		done += si.N
	}
	return shards, done, problem, nil
}
