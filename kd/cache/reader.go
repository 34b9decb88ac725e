package cache

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// decoderMaxMemory bounds what one stream may decompress to (the fuzz test
// lowers it).
var decoderMaxMemory uint64 = maxBlockBytes

// Reader serves a cache folder's examples by index. It is safe for
// concurrent use.
type Reader struct {
	dir     string
	h       Header
	shards  []*shardInfo
	n       int
	problem error
	dec     *zstd.Decoder

	mu   sync.Mutex
	last *decoded // the block read last: sequential reads decompress once
}

type decoded struct {
	shard, block int
	streams      [nStreams][]byte
}

// Open reads cache.json and checks every shard's header, index and trailer
// (not its blocks: Get and Verify do). The examples it serves are those of
// the leading run of complete shards; a missing, truncated or damaged shard
// ends the run, Len counts what comes before it, and Incomplete says which
// shard and why. A shard of another cache in the folder is an error.
func Open(dir string) (*Reader, error) {
	h, err := readCacheJSON(dir)
	if err != nil {
		return nil, err
	}
	if h.Version != FormatVersion {
		return nil, fmt.Errorf("teacher cache: %s is format version %d; this kdnative reads version %d", dir, h.Version, FormatVersion)
	}
	shards, n, problem, err := scan(dir, h)
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(decoderMaxMemory))
	if err != nil {
		return nil, fmt.Errorf("teacher cache: %w", err)
	}
	return &Reader{dir: dir, h: h, shards: shards, n: n, problem: problem, dec: dec}, nil
}

// Header is the cache's header (cache.json).
func (r *Reader) Header() Header { return r.h }

// Len is the number of examples served: those of the complete shards from
// the first on, up to the first missing or damaged one.
func (r *Reader) Len() int { return r.n }

// Incomplete is nil when the cache holds all Header().Examples, else an
// error saying how many it holds and which shard is missing or damaged.
func (r *Reader) Incomplete() error {
	if r.n == r.h.Examples {
		return nil
	}
	return fmt.Errorf("teacher cache %s holds %d of %d examples: %w", r.dir, r.n, r.h.Examples, r.problem)
}

// Get returns example index. It reads and decompresses the one block that
// holds it, after checking the block's checksum: damage is a *CorruptError
// (errors.Is ErrCorrupt) naming the file, the block and the example.
func (r *Reader) Get(index int) (Entry, error) {
	if index < 0 || index >= r.n {
		return Entry{}, fmt.Errorf("teacher cache: example %d is not in the cache (it serves the first %d of %d examples)", index, r.n, r.h.Examples)
	}
	si := sort.Search(len(r.shards), func(i int) bool { s := r.shards[i]; return s.First+s.N > index })
	sh := r.shards[si]
	bi := sort.Search(len(sh.Blocks), func(i int) bool { b := sh.Blocks[i]; return b.First+b.N > index })
	d, err := r.block(si, bi, index)
	if err != nil {
		return Entry{}, err
	}
	b := sh.Blocks[bi]
	e, err := decodeExample(sh.q, r.h.K, r.h.Vocab, &d.streams, b.N, index-b.First, b.Pos)
	if err != nil {
		return Entry{}, blockError(sh, bi, index, err.Error())
	}
	return e, nil
}

func blockError(sh *shardInfo, bi, example int, detail string) error {
	b := sh.Blocks[bi]
	return &CorruptError{Path: sh.Path, Part: fmt.Sprintf("block %d (examples %d–%d)", bi, b.First, b.First+b.N-1), Example: example, Detail: detail}
}

// block reads, checks and decompresses one block.
func (r *Reader) block(si, bi, example int) (*decoded, error) {
	r.mu.Lock()
	last := r.last
	r.mu.Unlock()
	if last != nil && last.shard == si && last.block == bi {
		return last, nil
	}
	sh := r.shards[si]
	b := sh.Blocks[bi]
	f, err := os.Open(sh.Path)
	if err != nil {
		return nil, fmt.Errorf("teacher cache: %w", err)
	}
	buf := make([]byte, b.Bytes)
	_, err = f.ReadAt(buf, b.Off)
	f.Close()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, blockError(sh, bi, example, "truncated since the cache was opened")
		}
		return nil, fmt.Errorf("teacher cache: reading %s: %w", sh.Path, err)
	}
	if got := crc(buf); got != b.CRC {
		return nil, blockError(sh, bi, example, fmt.Sprintf("checksum mismatch (stored %08x, computed %08x)", b.CRC, got))
	}
	d := &decoded{shard: si, block: bi}
	if err := decompress(r.dec, buf, b, &d.streams); err != nil {
		return nil, blockError(sh, bi, example, err.Error())
	}
	r.mu.Lock()
	r.last = d
	r.mu.Unlock()
	return d, nil
}

// decompress splits a block into its streams' frames and decompresses them.
func decompress(dec *zstd.Decoder, buf []byte, b blockInfo, streams *[nStreams][]byte) error {
	br := &byteReader{b: buf}
	ns, err := br.uvarint()
	if err != nil {
		return err
	}
	if ns != nStreams {
		return fmt.Errorf("%w: %d streams, not %d", errBlock, ns, nStreams)
	}
	var clen, rlen [nStreams]uint64
	var total, raw uint64
	for i := range nStreams {
		if clen[i], err = br.uvarint(); err != nil {
			return err
		}
		if rlen[i], err = br.uvarint(); err != nil {
			return err
		}
		if clen[i] > uint64(len(buf)) || rlen[i] > maxBlockBytes || (clen[i] == 0) != (rlen[i] == 0) {
			return fmt.Errorf("%w: stream %d of %d bytes (%d raw)", errBlock, i, clen[i], rlen[i])
		}
		total += clen[i]
		raw += rlen[i]
	}
	if uint64(br.off)+total != uint64(len(buf)) || raw != uint64(b.Raw) {
		return fmt.Errorf("%w: streams of %d bytes (%d raw) in a block of %d (%d raw)", errBlock, total, raw, len(buf)-br.off, b.Raw)
	}
	off := uint64(br.off)
	for i := range nStreams {
		frame := buf[off : off+clen[i]]
		off += clen[i]
		if rlen[i] == 0 {
			streams[i] = nil
			continue
		}
		var zh zstd.Header
		if err := zh.Decode(frame); err != nil || (zh.HasFCS && zh.FrameContentSize != rlen[i]) {
			return fmt.Errorf("%w: stream %d is not a zstd frame of %d bytes", errBlock, i, rlen[i])
		}
		out, err := dec.DecodeAll(frame, nil)
		if err != nil {
			return fmt.Errorf("%w: stream %d: %v", errBlock, i, err)
		}
		if uint64(len(out)) != rlen[i] {
			return fmt.Errorf("%w: stream %d decompresses to %d bytes, not %d", errBlock, i, len(out), rlen[i])
		}
		streams[i] = out
	}
	return nil
}

// Verify reads every block of every served shard, checks its checksum and
// decodes every example: nil, or the first damage found.
func (r *Reader) Verify() error {
	for si, sh := range r.shards {
		for bi, b := range sh.Blocks {
			d, err := r.block(si, bi, -1)
			if err != nil {
				return err
			}
			for j := range b.N {
				if _, err := decodeExample(sh.q, r.h.K, r.h.Vocab, &d.streams, b.N, j, b.Pos); err != nil {
					return blockError(sh, bi, b.First+j, err.Error())
				}
			}
		}
	}
	return nil
}

// Stats describe a cache's size.
type Stats struct {
	Shards, Blocks, Examples int
	Bytes                    int64        // shard files on disk
	RawBytes                 int64        // the blocks' streams before zstd
	Positions                int64        // token positions
	TeacherPositions         int64        // positions with a teacher entry
	BytesPerPosition         float64      // Bytes / TeacherPositions
	Quantization             Quantization // of the first shard (Step 0 when shards differ)
}

// Stats sums the served shards (from their indexes: nothing is read).
func (r *Reader) Stats() Stats {
	var s Stats
	for i, sh := range r.shards {
		s.Shards++
		s.Examples += sh.N
		s.Bytes += sh.Size
		s.Positions += sh.Positions
		if i == 0 {
			s.Quantization = sh.q.Quantization
		} else if s.Quantization != sh.q.Quantization {
			s.Quantization = Quantization{}
		}
		for _, b := range sh.Blocks {
			s.Blocks++
			s.RawBytes += int64(b.Raw)
			s.TeacherPositions += int64(b.TeachPos)
		}
	}
	if s.TeacherPositions > 0 {
		s.BytesPerPosition = float64(s.Bytes) / float64(s.TeacherPositions)
	}
	return s
}

// Close releases the decoder.
func (r *Reader) Close() error {
	r.dec.Close()
	return nil
}

// Dir is the cache folder.
func (r *Reader) Dir() string { return r.dir }
