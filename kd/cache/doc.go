// Package cache is the teacher cache: a folder of zstd-compressed shards that
// hold, for every token position of a data set, the teacher's top-k token ids
// and log-probabilities and the log of the mass outside them, so that
// distillation can run without the teacher.
//
// A cache folder holds cache.json (the Header: teacher, tokenizer hash, data
// hash, k, temperature, vocabulary, examples, format version) and shards
// cache-00000.kdc, cache-00001.kdc, … of consecutive examples. Each shard
// carries a copy of the header, blocks of a few examples (each stream of a
// block compressed on its own), an index of the blocks and a trailer, with a
// CRC-32C over each of them, so that Get reads and decompresses one block and
// any damage is found and named (file, block, example). FORMAT.md in this
// folder gives the layout byte by byte, the encoding, its error bounds and
// the measured sizes.
//
// Writing:
//
//	w, err := cache.Create(dir, h, cache.WriterOptions{})   // resumes a cache with the same header
//	for _, r := range w.Todo() {                              // all examples, or those still missing
//		for i := r.First; i < r.End; i++ {
//			err = w.Add(i, cache.Entry{TopK: topk, Tail: tail})   // Tail may be nil
//		}
//	}
//	err = w.Close()
//
// A shard is written to a temporary file, synced and renamed into place when
// full, so a crash (or a full disk: the error names the file) loses at most
// the shard being written. Create checks every block of the shards already
// there, keeps the intact ones, and Todo tells a new writer what is left:
// the examples of damaged or missing shards (LeftOut names them) and those
// never written. Create refuses a folder holding another header's cache and
// a header whose k exceeds its vocabulary.
//
// Reading:
//
//	r, err := cache.Open(dir)
//	err = r.Header().Compatible(want)   // nil, or what differs
//	err = r.Incomplete()                // nil, or which shard is missing or damaged
//	e, err := r.Get(i)                  // random access, safe for concurrent use
//
// VerifyDir(dir) checks a whole folder, every block, and says per shard
// what is intact, damaged (which part, why) or missing.
//
// Log-probabilities are stored on a grid (Quantization): by default within
// 1/64 nat for log p ≥ −6 and within 1/16 below, which costs about 2 bits
// per entry; the ids cost the rest. Read back, a position's entries come in
// decreasing probability and never sum above 1.
package cache
