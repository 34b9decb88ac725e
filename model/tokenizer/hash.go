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
// the model vocabulary (id and token), the merges in rank order, ignore_merges,
// the added tokens with their flags, the normalizer and the pre-tokenizer. It
// leaves out what does not change ids (the chat template, BOS/EOS/PAD, the
// file's layout), so the same tokenizer read from GPT-2's vocab.json and
// merges.txt or from an equivalent tokenizer.json hashes the same. Teacher
// and student with equal hashes tokenize every text alike.
func (t *Tokenizer) Hash() string {
	t.hashOnce.Do(func() {
		h := sha256.New()
		w := bufio.NewWriter(h)
		fmt.Fprintf(w, "kdnative tokenizer v1\nmodel bpe ignore_merges=%v\n", t.model.ignoreMerges)
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
