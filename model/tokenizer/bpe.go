package tokenizer

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// bpe is the BPE model: a word (one pre-token, as raw bytes) starts as one
// symbol per byte (byte-level BPE) or per character (SentencePiece-style,
// spm) and adjacent symbols are merged, lowest merge rank first and leftmost
// first among equal ranks, until no adjacent pair has a merge. This is the
// order of Hugging Face's BPE (a heap of (rank, position)), of tiktoken
// (ranks of byte strings) and of llama.cpp's SentencePiece BPE (a merge's
// rank there is its merged token's score, highest first, so several pairs
// may share one), so each gives the same ids as its reference.
type bpe struct {
	// byteID[b] is the id of the one-byte token for byte b, or -1 when the
	// vocabulary lacks it (the byte is then dropped, as HF does with no
	// unk_token).
	byteID [256]int32
	// merges maps the pair (left id, right id), packed as left<<32|right, to
	// rank<<32|merged id.
	merges pairTable
	// words maps raw bytes to ids; used when ignoreMerges is set.
	words map[string]int32
	// ignoreMerges: a word that is itself a token is emitted as that token
	// without merging (HF's ignore_merges, Llama 3; tiktoken's behaviour).
	ignoreMerges bool
	// noCache turns the word cache off (benchmarks of the merge loop).
	noCache bool

	// spm: the model is SentencePiece-style BPE (see spm.go): a word starts
	// as one symbol per character rather than per byte, and a character
	// that is not in the vocabulary falls back to its bytes' <0xNN> tokens.
	spm bool
	// chars maps a one-character token to its id (spm).
	chars map[rune]int32
	// fallback[b] is the id of the <0xNN> token of byte b, or -1 (spm).
	fallback [256]int32
	// unk is the id emitted for a character whose bytes lack <0xNN>
	// tokens, or -1 to drop it (spm).
	unk int32
	// fuseUnk: a run of such characters is one unk (HF's fuse_unk).
	fuseUnk bool
	// cutAtSpace: no token has "▁" right after another character, so no
	// merge can cross the start of a "▁" run and a word is merged piece by
	// piece, each cut before such a run (spm; see encodeWord).
	cutAtSpace bool

	cache wordCache
}

const noMerge = ^uint64(0)

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

func (m *bpe) merge(a, b int32) uint64 { return m.merges.get(pairKey(a, b)) }

// pairTable is an open-addressing hash table from pair key to merge value,
// about twice as fast as a Go map for this one lookup the merge loop makes
// for every candidate pair.
type pairTable struct {
	keys  []uint64 // emptyKey where free
	vals  []uint64
	shift uint // 64 - log2(len(keys))
}

const emptyKey = ^uint64(0) // the pair (-1, -1), which no vocabulary has

func newPairTable(n int) pairTable {
	size := 16
	for size < 2*n {
		size *= 2
	}
	t := pairTable{keys: make([]uint64, size), vals: make([]uint64, size), shift: 64}
	for s := size; s > 1; s >>= 1 {
		t.shift--
	}
	for i := range t.keys {
		t.keys[i] = emptyKey
	}
	return t
}

func (t *pairTable) slot(k uint64) int { return int((k * 0x9E3779B97F4A7C15) >> t.shift) }

// put sets the value of k; the table never fills past half, as sized.
func (t *pairTable) put(k, v uint64) {
	mask := len(t.keys) - 1
	for i := t.slot(k); ; i = (i + 1) & mask {
		if t.keys[i] == emptyKey || t.keys[i] == k {
			t.keys[i], t.vals[i] = k, v
			return
		}
	}
}

func (t *pairTable) get(k uint64) uint64 {
	if len(t.keys) == 0 {
		return noMerge
	}
	mask := len(t.keys) - 1
	for i := t.slot(k); ; i = (i + 1) & mask {
		switch t.keys[i] {
		case k:
			return t.vals[i]
		case emptyKey:
			return noMerge
		}
	}
}

// smallWord is the length up to which encodeWord rescans all pairs after each
// merge (cheap for short words) instead of keeping a heap.
const smallWord = 48

// encodeWord appends the ids of word to dst.
func (m *bpe) encodeWord(word string, dst []int32) []int32 {
	if !m.cutAtSpace {
		return m.encodePiece(word, dst)
	}
	// SentencePiece text is one word from special token to special token
	// (llama.cpp and HF merge it whole). Where the vocabulary allows, cut it
	// before each run of "▁" that follows another character: a symbol
	// crossing that place would be a token holding "x▁", and there is none,
	// so the pieces merge exactly as the whole would, and each is cached.
	start := 0
	for i := 1; i < len(word); i++ {
		if word[i] == metaSpace[0] && strings.HasPrefix(word[i:], metaSpace) && !strings.HasSuffix(word[:i], metaSpace) {
			dst = m.encodePiece(word[start:i], dst)
			start = i
		}
	}
	return m.encodePiece(word[start:], dst)
}

// encodePiece appends the ids of word to dst.
func (m *bpe) encodePiece(word string, dst []int32) []int32 {
	if len(word) == 0 {
		return dst
	}
	if m.ignoreMerges {
		if id, ok := m.words[word]; ok {
			return append(dst, id)
		}
	}
	if len(word) == 1 && !m.spm {
		if id := m.byteID[word[0]]; id >= 0 {
			dst = append(dst, id)
		}
		return dst
	}
	cacheable := len(word) <= maxCachedWord && !m.noCache
	if cacheable {
		if ids, ok := m.cache.get(word); ok {
			return append(dst, ids...)
		}
	}
	start := len(dst)
	// A word has at most one symbol per byte.
	if len(word) <= smallWord {
		var symBuf [smallWord]int32
		dst = m.mergeSmall(m.symbols(word, symBuf[:0]), dst)
	} else {
		dst = m.mergeHeap(m.symbols(word, make([]int32, 0, len(word))), dst)
	}
	if m.spm {
		for i := start; i < len(dst); i++ {
			if dst[i] < 0 {
				dst[i] = m.fallback[fallbackByte(dst[i])]
			}
		}
	}
	if cacheable {
		m.cache.put(word, dst[start:])
	}
	return dst
}

// symbols appends to sym the initial symbols of word: the byte tokens of its
// bytes (bytes without one are dropped, as HF does with no unk_token), or,
// for spm, the tokens of its characters, a character missing from the
// vocabulary becoming the fallback symbols of its bytes (see fallbackSym).
func (m *bpe) symbols(word string, sym []int32) []int32 {
	if !m.spm {
		for i := 0; i < len(word); i++ {
			if id := m.byteID[word[i]]; id >= 0 {
				sym = append(sym, id)
			}
		}
		return sym
	}
	lastUnk := false
	for i := 0; i < len(word); {
		r, size := utf8.DecodeRuneInString(word[i:])
		if r != utf8.RuneError || size > 1 {
			if id, ok := m.chars[r]; ok {
				sym = append(sym, id)
				i += size
				lastUnk = false
				continue
			}
		}
		// Byte fallback: every byte of the character must have its <0xNN>
		// token, else the character is unk (consecutive unks fused when
		// fuse_unk is set, as in HF's BPE).
		all := true
		for k := i; k < i+size; k++ {
			all = all && m.fallback[word[k]] >= 0
		}
		switch {
		case all:
			for k := i; k < i+size; k++ {
				sym = append(sym, fallbackSym(word[k]))
			}
			lastUnk = false
		case m.unk >= 0 && !(lastUnk && m.fuseUnk):
			sym = append(sym, m.unk)
			lastUnk = true
		}
		i += size
	}
	return sym
}

// fallbackSym is the symbol of byte b fallen back from a character missing
// from the vocabulary: a negative id, so that no merge takes it (a real
// <0xNN> token in the text could still merge, as in llama.cpp), mapped to
// the <0xNN> token once merging is done. -2-b keeps clear of -1, whose pair
// key is the pair table's empty slot.
func fallbackSym(b byte) int32 { return -2 - int32(b) }

func fallbackByte(sym int32) byte { return byte(-2 - sym) }

// mergeSmall keeps the symbols and the merge value of each adjacent pair in
// arrays, merges the pair of lowest value (leftmost on ties) and updates the
// two pairs around it, in O(n²) integer compares. sym has at most smallWord
// symbols and is changed in place.
func (m *bpe) mergeSmall(sym []int32, dst []int32) []int32 {
	var pairBuf [smallWord]uint64
	if len(sym) == 0 {
		return dst
	}
	pairs := pairBuf[:len(sym)-1]
	for i := range pairs {
		pairs[i] = m.merge(sym[i], sym[i+1])
	}
	for len(pairs) > 0 {
		best, bi := noMerge, -1
		for i, v := range pairs {
			if v>>32 < best>>32 {
				best, bi = v, i
			}
		}
		if bi < 0 {
			break
		}
		sym[bi] = int32(uint32(best))
		copy(sym[bi+1:], sym[bi+2:])
		sym = sym[:len(sym)-1]
		copy(pairs[bi:], pairs[bi+1:])
		pairs = pairs[:len(pairs)-1]
		if bi > 0 {
			pairs[bi-1] = m.merge(sym[bi-1], sym[bi])
		}
		if bi < len(pairs) {
			pairs[bi] = m.merge(sym[bi], sym[bi+1])
		}
	}
	return append(dst, sym...)
}

// mergeHeap is the O(n log n) form for long words (whitespace runs, long
// digit or punctuation runs): symbols in a linked list, candidate merges in a
// min-heap of rank<<32|position, stale candidates skipped when popped. sym
// is changed in place.
func (m *bpe) mergeHeap(sym []int32, dst []int32) []int32 {
	n := len(sym)
	if n == 0 {
		return dst
	}
	prev := make([]int32, n)
	next := make([]int32, n)
	alive := make([]bool, n)
	for i := range n {
		prev[i], next[i], alive[i] = int32(i-1), int32(i+1), true
	}
	next[n-1] = -1
	h := make(mergeHeap, 0, n)
	push := func(pos int32) {
		r := next[pos]
		if r < 0 {
			return
		}
		if v := m.merge(sym[pos], sym[r]); v != noMerge {
			h.push(v>>32<<32 | uint64(pos))
		}
	}
	for i := range int32(n - 1) {
		push(i)
	}
	for len(h) > 0 {
		top := h.pop()
		pos := int32(uint32(top))
		rank := top >> 32
		if !alive[pos] || next[pos] < 0 {
			continue
		}
		r := next[pos]
		v := m.merge(sym[pos], sym[r])
		if v == noMerge || v>>32 != rank {
			continue // the pair at pos changed since this candidate was pushed
		}
		sym[pos] = int32(uint32(v))
		alive[r] = false
		next[pos] = next[r]
		if next[r] >= 0 {
			prev[next[r]] = pos
		}
		if p := prev[pos]; p >= 0 {
			push(p)
		}
		push(pos)
	}
	for i := int32(0); i >= 0; i = next[i] {
		dst = append(dst, sym[i])
	}
	return dst
}

// mergeHeap is a binary min-heap of uint64.
type mergeHeap []uint64

func (h *mergeHeap) push(v uint64) {
	*h = append(*h, v)
	a := *h
	i := len(a) - 1
	for i > 0 {
		p := (i - 1) / 2
		if a[p] <= a[i] {
			break
		}
		a[p], a[i] = a[i], a[p]
		i = p
	}
}

func (h *mergeHeap) pop() uint64 {
	a := *h
	top := a[0]
	last := len(a) - 1
	a[0] = a[last]
	a = a[:last]
	i := 0
	for {
		l := 2*i + 1
		if l >= len(a) {
			break
		}
		c := l
		if r := l + 1; r < len(a) && a[r] < a[l] {
			c = r
		}
		if a[i] <= a[c] {
			break
		}
		a[i], a[c] = a[c], a[i]
		i = c
	}
	*h = a
	return top
}

// wordCache is a bounded, lock-free cache from word to ids: a direct-mapped
// table of immutable entries, each slot holding the last word that hashed to
// it. Readers never block each other (a mutex, even a read lock, made
// parallel encoding slower than serial), and memory stays bounded.
type wordCache struct {
	once  sync.Once
	slots []atomic.Pointer[cacheEntry]
}

type cacheEntry struct {
	word string
	ids  []int32
}

const (
	cacheSlots    = 1 << 16
	maxCachedWord = 256 // bytes; longer words are not cached (as in HF)
)

var cacheSeed = maphash.MakeSeed()

func (c *wordCache) slot(word string) *atomic.Pointer[cacheEntry] {
	c.once.Do(func() { c.slots = make([]atomic.Pointer[cacheEntry], cacheSlots) })
	return &c.slots[maphash.String(cacheSeed, word)&(cacheSlots-1)]
}

func (c *wordCache) get(word string) ([]int32, bool) {
	if e := c.slot(word).Load(); e != nil && e.word == word {
		return e.ids, true
	}
	return nil, false
}

func (c *wordCache) put(word string, ids []int32) {
	// word may point into a large input text: keep a copy.
	c.slot(word).Store(&cacheEntry{strings.Clone(word), append([]int32(nil), ids...)})
}
