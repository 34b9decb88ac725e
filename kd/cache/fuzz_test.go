package cache

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReader feeds arbitrary bytes to the reader as shard 0 of a cache:
// Open, Len, Get of every example, Verify and Stats must never panic. With
// fix set, the input's checksums are recomputed first, so that mutations
// get past them into the index, the block layout, zstd and the decoder.
func FuzzReader(f *testing.F) {
	seedDir := f.TempDir()
	h := testHeader(5)
	writeCache(f, seedDir, h, WriterOptions{ExamplesPerShard: 5, BlockBytes: 80}, entries(31, h.Examples, h.K, h.Vocab))
	cj, err := os.ReadFile(filepath.Join(seedDir, cacheJSON))
	if err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(filepath.Join(seedDir, "cache-00000.kdc"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed, false)
	f.Add(seed, true)
	f.Add(seed[:len(seed)/2], true)
	f.Add([]byte(shardMagic), false)
	// Bound what a forged length may make the reader allocate.
	oldMem, oldPos := decoderMaxMemory, maxPositions
	decoderMaxMemory, maxPositions = 1<<20, 1<<12
	f.Cleanup(func() { decoderMaxMemory, maxPositions = oldMem, oldPos })
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, shard []byte, fix bool) {
		if fix {
			shard = append([]byte(nil), shard...)
			fixChecksums(shard)
		}
		os.WriteFile(filepath.Join(dir, cacheJSON), cj, 0o644)
		os.WriteFile(filepath.Join(dir, "cache-00000.kdc"), shard, 0o644)
		r, err := Open(dir)
		if err != nil {
			return
		}
		defer r.Close()
		for i := range r.Len() {
			r.Get(i)
		}
		r.Verify()
		r.Stats()
		r.Incomplete()
	})
}

// fixChecksums rewrites, as far as the layout can be followed, every
// checksum of a shard: header, blocks, index, trailer.
func fixChecksums(b []byte) {
	const pre = len(shardMagic) + 8
	if len(b) < pre+4+trailerSize {
		return
	}
	hlen := int(binary.LittleEndian.Uint32(b[12:]))
	if hlen >= 0 && pre+hlen+4 <= len(b) && hlen < len(b) {
		binary.LittleEndian.PutUint32(b[pre+hlen:], crc(b[:pre+hlen]))
	}
	tr := b[len(b)-trailerSize:]
	off := binary.LittleEndian.Uint64(tr[0:])
	n := uint64(binary.LittleEndian.Uint32(tr[8:]))
	if off <= uint64(len(b)) && n <= uint64(len(b))-off {
		index := b[off : off+n]
		for i := 0; i+indexEntry <= len(index); i += indexEntry {
			e := index[i:]
			bo := binary.LittleEndian.Uint64(e[0:])
			bn := uint64(binary.LittleEndian.Uint32(e[8:]))
			if bo <= uint64(len(b)) && bn <= uint64(len(b))-bo && bo+bn <= off {
				binary.LittleEndian.PutUint32(e[32:], crc(b[bo:bo+bn]))
			}
		}
		binary.LittleEndian.PutUint32(tr[12:], crc(index))
	}
	binary.LittleEndian.PutUint32(tr[48:], crc(tr[:48]))
}
