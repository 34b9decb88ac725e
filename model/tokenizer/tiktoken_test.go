package tokenizer

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"strconv"
)

// loadTiktoken builds a Tokenizer from a tiktoken rank file ("base64 rank" per
// line) for the TestPlans of tiktoken encodings. tiktoken has no merge list:
// the rank of a pair of adjacent parts is the rank of their concatenation, and
// a piece that is itself a token is emitted whole. So every split (a, b) of a
// token of rank r becomes a merge of rank r, and ignoreMerges is set; the
// leftmost-lowest order of the BPE loop is then tiktoken's.
func loadTiktoken(path string, split stage, specials map[string]int32) (*Tokenizer, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	b := &builder{source: path, vocab: map[string]int32{}, ignoreMerges: true, stages: []stage{split}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	var raws []string
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) != 2 {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(string(f[0]))
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		rank, err := strconv.Atoi(string(f[1]))
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		b.vocab[byteLevelEncode(string(raw))] = int32(rank)
		raws = append(raws, string(raw))
	}
	for s, id := range specials {
		b.added = append(b.added, &addedToken{ID: id, Content: s, Special: true})
	}
	t, err := b.build()
	if err != nil {
		return nil, err
	}
	n := 0
	for _, raw := range raws {
		n += len(raw) - 1
	}
	t.model.merges = newPairTable(n)
	for _, raw := range raws {
		id := t.model.words[raw]
		for k := 1; k < len(raw); k++ {
			l, okl := t.model.words[raw[:k]]
			r, okr := t.model.words[raw[k:]]
			if okl && okr {
				t.model.merges.put(pairKey(l, r), uint64(id)<<32|uint64(uint32(id)))
			}
		}
	}
	return t, nil
}
