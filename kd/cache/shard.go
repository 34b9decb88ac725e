package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
)

// A shard (FORMAT.md):
//
//	preamble  "KDNCACHE" | u32 version | u32 n | n bytes of JSON (shardHeader) | u32 CRC32C of all before
//	blocks    each: uvarint count, per stream uvarint compressed and raw length, the streams' zstd frames
//	index     per block: u64 offset | u32 bytes | u32 raw bytes | u32 first example (in the shard) |
//	          u32 examples | u32 positions | u32 positions with a teacher | u32 CRC32C of the block
//	trailer   u64 index offset | u32 index bytes | u32 index CRC32C | u64 first example | u32 examples |
//	          u32 blocks | u64 positions | "KDNCEND1" | u32 CRC32C of the trailer before it
//
// All integers little-endian.

const (
	shardMagic   = "KDNCACHE"
	trailerMagic = "KDNCEND1"
	indexEntry   = 36
	trailerSize  = 52
	// maxHeaderJSON bounds the shard header's JSON (teacher names are paths).
	maxHeaderJSON = 1 << 20
	// maxBlockBytes bounds a block on disk and decompressed.
	maxBlockBytes = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// shardHeader is the JSON in a shard's preamble.
type shardHeader struct {
	Cache        Header       `json:"cache"`
	Shard        int          `json:"shard"`
	First        int          `json:"first"` // index of the shard's first example
	Quantization Quantization `json:"quantization"`
	Floor        float64      `json:"floor"` // lowest finite log-probability, nats
}

// blockInfo is one index entry, First made global.
type blockInfo struct {
	Off      int64
	Bytes    uint32
	Raw      uint32
	First    int // global index of the block's first example
	N        int
	Pos      int
	TeachPos int
	CRC      uint32
}

// shardInfo is a shard that passed its structural checks.
type shardInfo struct {
	Path      string
	Num       int
	First     int
	N         int
	Size      int64
	Positions int64
	q         quantizer
	Blocks    []blockInfo
}

func shardName(n int) string { return fmt.Sprintf("cache-%05d.kdc", n) }

func preamble(sh shardHeader) ([]byte, error) {
	js, err := json.Marshal(sh)
	if err != nil {
		return nil, err
	}
	b := []byte(shardMagic)
	b = binary.LittleEndian.AppendUint32(b, FormatVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(js)))
	b = append(b, js...)
	return binary.LittleEndian.AppendUint32(b, crc(b)), nil
}

func appendIndex(b []byte, shardFirst int, blocks []blockInfo) []byte {
	for _, bl := range blocks {
		b = binary.LittleEndian.AppendUint64(b, uint64(bl.Off))
		b = binary.LittleEndian.AppendUint32(b, bl.Bytes)
		b = binary.LittleEndian.AppendUint32(b, bl.Raw)
		b = binary.LittleEndian.AppendUint32(b, uint32(bl.First-shardFirst))
		b = binary.LittleEndian.AppendUint32(b, uint32(bl.N))
		b = binary.LittleEndian.AppendUint32(b, uint32(bl.Pos))
		b = binary.LittleEndian.AppendUint32(b, uint32(bl.TeachPos))
		b = binary.LittleEndian.AppendUint32(b, bl.CRC)
	}
	return b
}

func trailer(indexOff int64, index []byte, first, n, blocks int, positions int64) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(indexOff))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(index)))
	b = binary.LittleEndian.AppendUint32(b, crc(index))
	b = binary.LittleEndian.AppendUint64(b, uint64(first))
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	b = binary.LittleEndian.AppendUint32(b, uint32(blocks))
	b = binary.LittleEndian.AppendUint64(b, uint64(positions))
	b = append(b, trailerMagic...)
	return binary.LittleEndian.AppendUint32(b, crc(b))
}

// ErrCorrupt is what the errors of damaged or truncated shards wrap
// (errors.Is); their type is *CorruptError.
var ErrCorrupt = errors.New("teacher cache damaged")

// CorruptError names the damaged part of a cache: the shard file, the part
// ("header", "index", "trailer", "block N (examples A–B)") and, for Get, the
// example asked for.
type CorruptError struct {
	Path    string
	Part    string
	Example int // -1 when no example was asked for
	Detail  string
}

func (e *CorruptError) Error() string {
	s := fmt.Sprintf("teacher cache damaged: %s: %s: %s", e.Path, e.Part, e.Detail)
	if e.Example >= 0 {
		s += fmt.Sprintf(" (reading example %d)", e.Example)
	}
	return s
}

func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// readShard opens a shard file and checks everything but its blocks: the
// preamble and its checksum, that it belongs to the cache h (want), is shard
// number num and starts at example first (first < 0: wherever its header
// says), the trailer, the index and their checksums, and that blocks, index
// and trailer tile the file exactly.
func readShard(path string, num, first int, want Header) (*shardInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return parseShard(f, st.Size(), path, num, first, want)
}

func parseShard(f io.ReaderAt, size int64, path string, num, first int, want Header) (*shardInfo, error) {
	bad := func(part, format string, args ...any) error {
		return &CorruptError{Path: path, Part: part, Example: -1, Detail: fmt.Sprintf(format, args...)}
	}
	const pre = len(shardMagic) + 8
	if size < int64(pre+4+trailerSize) {
		return nil, bad("file", "truncated: %d bytes, shorter than any shard", size)
	}
	head := make([]byte, pre)
	if _, err := f.ReadAt(head, 0); err != nil {
		return nil, bad("header", "reading: %v", err)
	}
	if string(head[:len(shardMagic)]) != shardMagic {
		return nil, bad("header", "not a kdnative teacher cache shard (magic %q)", head[:len(shardMagic)])
	}
	if v := binary.LittleEndian.Uint32(head[8:]); v != FormatVersion {
		return nil, bad("header", "format version %d; this kdnative reads version %d", v, FormatVersion)
	}
	hlen := int64(binary.LittleEndian.Uint32(head[12:]))
	if hlen > maxHeaderJSON || int64(pre)+hlen+4+trailerSize > size {
		return nil, bad("header", "header length %d does not fit the file's %d bytes", hlen, size)
	}
	full := make([]byte, int64(pre)+hlen+4)
	if _, err := f.ReadAt(full, 0); err != nil {
		return nil, bad("header", "reading: %v", err)
	}
	body := full[:len(full)-4]
	if got, stored := crc(body), binary.LittleEndian.Uint32(full[len(full)-4:]); got != stored {
		return nil, bad("header", "checksum mismatch (stored %08x, computed %08x)", stored, got)
	}
	var sh shardHeader
	dec := json.NewDecoder(bytes.NewReader(body[pre:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sh); err != nil {
		return nil, bad("header", "JSON: %v", err)
	}
	if sh.Cache != want {
		if err := sh.Cache.Compatible(want); err != nil {
			return nil, fmt.Errorf("teacher cache: %s belongs to another cache: %w", path, err)
		}
		return nil, fmt.Errorf("teacher cache: %s belongs to another cache: %w: header %+v, not %+v", path, ErrMismatch, sh.Cache, want)
	}
	if first < 0 && sh.First >= 0 {
		first = sh.First
	}
	if sh.Shard != num || sh.First != first {
		return nil, fmt.Errorf("teacher cache: %s is shard %d from example %d, not shard %d from example %d (left from an earlier layout?)", path, sh.Shard, sh.First, num, first)
	}
	if sh.Floor != Floor {
		return nil, bad("header", "floor %g, this kdnative reads %g", sh.Floor, Floor)
	}
	q, err := newQuantizer(sh.Quantization)
	if err != nil {
		return nil, bad("header", "%v", err)
	}
	blocksStart := int64(len(full))

	tr := make([]byte, trailerSize)
	if _, err := f.ReadAt(tr, size-trailerSize); err != nil {
		return nil, bad("trailer", "reading: %v", err)
	}
	if string(tr[40:48]) != trailerMagic {
		return nil, bad("trailer", "no end marker: truncated or damaged (%d bytes; a complete shard ends with its index and trailer)", size)
	}
	if got, stored := crc(tr[:48]), binary.LittleEndian.Uint32(tr[48:]); got != stored {
		return nil, bad("trailer", "checksum mismatch (stored %08x, computed %08x)", stored, got)
	}
	indexOff := int64(binary.LittleEndian.Uint64(tr[0:]))
	indexLen := int64(binary.LittleEndian.Uint32(tr[8:]))
	indexCRC := binary.LittleEndian.Uint32(tr[12:])
	tFirst := binary.LittleEndian.Uint64(tr[16:])
	n := int(binary.LittleEndian.Uint32(tr[24:]))
	nb := int64(binary.LittleEndian.Uint32(tr[28:]))
	positions := binary.LittleEndian.Uint64(tr[32:])
	if tFirst != uint64(first) {
		return nil, bad("trailer", "first example %d, the header says %d", tFirst, first)
	}
	if indexLen != nb*indexEntry || indexOff < blocksStart || indexOff+indexLen+trailerSize != size {
		return nil, bad("trailer", "index of %d bytes at %d for %d blocks does not fit the file's %d bytes", indexLen, indexOff, nb, size)
	}
	if n < 1 || nb < 1 || nb > int64(n) {
		return nil, bad("trailer", "%d examples in %d blocks", n, nb)
	}
	index := make([]byte, indexLen)
	if _, err := f.ReadAt(index, indexOff); err != nil {
		return nil, bad("index", "reading: %v", err)
	}
	if got := crc(index); got != indexCRC {
		return nil, bad("index", "checksum mismatch (stored %08x, computed %08x)", indexCRC, got)
	}
	si := &shardInfo{Path: path, Num: num, First: first, N: n, Size: size, Positions: int64(positions), q: q, Blocks: make([]blockInfo, nb)}
	off, ex, pos := blocksStart, 0, uint64(0)
	for i := range si.Blocks {
		e := index[i*indexEntry:]
		b := blockInfo{
			Off:      int64(binary.LittleEndian.Uint64(e[0:])),
			Bytes:    binary.LittleEndian.Uint32(e[8:]),
			Raw:      binary.LittleEndian.Uint32(e[12:]),
			First:    int(binary.LittleEndian.Uint32(e[16:])),
			N:        int(binary.LittleEndian.Uint32(e[20:])),
			Pos:      int(binary.LittleEndian.Uint32(e[24:])),
			TeachPos: int(binary.LittleEndian.Uint32(e[28:])),
			CRC:      binary.LittleEndian.Uint32(e[32:]),
		}
		if b.Off != off || b.First != ex || b.N < 1 || b.N > n-ex || b.TeachPos > b.Pos || b.Bytes > maxBlockBytes || b.Raw > maxBlockBytes {
			return nil, bad("index", "block %d (offset %d, %d bytes, examples %d+%d) does not follow block %d", i, b.Off, b.Bytes, b.First, b.N, i-1)
		}
		b.First += first
		off += int64(b.Bytes)
		ex += b.N
		pos += uint64(b.Pos)
		si.Blocks[i] = b
	}
	if off != indexOff || ex != n || pos != positions {
		return nil, bad("index", "blocks end at %d with %d examples and %d positions; the trailer says %d, %d and %d", off, ex, pos, indexOff, n, positions)
	}
	if first > math.MaxInt-n {
		return nil, bad("trailer", "examples overflow")
	}
	return si, nil
}
