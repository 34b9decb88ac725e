package tokenizer

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
)

// Hash returns a hex SHA-256 of everything that decides the ids of a text:
// the kind of BPE (byte-level or SentencePiece-style with its unk token and
// fuse_unk),
// the model vocabulary (id and token), the merges in rank order,
// ignore_merges, the added tokens with their flags, the normalizer and the
// pre-tokenizer. It
// leaves out what does not change ids (the chat template, BOS/EOS/PAD, the
// file's layout), so the same tokenizer read from GPT-2's vocab.json and
// merges.txt or from an equivalent tokenizer.json hashes the same. Teacher
// and student with equal hashes tokenize every text alike, with one
// exception: a GGUF file's SentencePiece tokenizer, which ranks merges by
// their token's score and takes the leftmost of equal ones (as llama.cpp
// does), hashes as the folder GGUFFiles writes for it, whose merges rank one
// by one (as transformers derives them). The two part only where two
// overlapping candidate pairs make the same token, or tokens of equal score
// (no string of llama.cpp's tests does); hashing them apart would refuse to
// distill a GGUF teacher into a student whose tokenizer folder was written
// from it (init-model, convert).
func (t *Tokenizer) Hash() string {
	t.hashOnce.Do(func() {
		h := sha256.New()
		w := bufio.NewWriter(h)
		if t.model.spm {
			// A byte-level tokenizer's header is unchanged from before
			// SentencePiece-style BPE, so that its hash is too.
			fmt.Fprintf(w, "kdnative tokenizer v1\nmodel bpe-spm ignore_merges=%v unk=%d fuse_unk=%v\n",
				t.model.ignoreMerges, t.model.unk, t.model.fuseUnk)
		} else {
			fmt.Fprintf(w, "kdnative tokenizer v1\nmodel bpe ignore_merges=%v\n", t.model.ignoreMerges)
		}
		fmt.Fprintf(w, "normalizer %s\n", strings.Join(t.normSpecs, ","))
		for _, st := range t.stages {
			fmt.Fprintf(w, "pre %s\n", st.spec())
		}
		type entry struct {
			id  int32
			tok string
		}
		vocab := make([]entry, 0, len(t.vocab))
		for tok, id := range t.vocab {
			vocab = append(vocab, entry{id, tok})
		}
		sort.Slice(vocab, func(i, j int) bool { return vocab[i].id < vocab[j].id })
		fmt.Fprintf(w, "vocab %d\n", len(vocab))
		for _, e := range vocab {
			fmt.Fprintf(w, "%d %q\n", e.id, e.tok)
		}
		fmt.Fprintf(w, "merges %d\n", len(t.merges))
		for _, m := range t.merges {
			fmt.Fprintf(w, "%d %d\n", m[0], m[1])
		}
		added := append([]*addedToken(nil), t.added...)
		sort.Slice(added, func(i, j int) bool { return added[i].ID < added[j].ID })
		fmt.Fprintf(w, "added %d\n", len(added))
		for _, a := range added {
			fmt.Fprintf(w, "%d %q special=%v lstrip=%v rstrip=%v single_word=%v normalized=%v\n",
				a.ID, a.Content, a.Special, a.LStrip, a.RStrip, a.SingleWord, a.Normalized)
		}
		w.Flush()
		t.hash = hex.EncodeToString(h.Sum(nil))
	})
	return t.hash
}
