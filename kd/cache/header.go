package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
)

// FormatVersion is the version of the shard format this package writes and
// reads (FORMAT.md).
const FormatVersion = 1

// Header names what a cache holds. Every shard carries a copy, and cache.json
// holds it for the folder, so that a cache made by another teacher, tokenizer,
// data set, k or temperature is never read or extended by mistake.
type Header struct {
	Version       int     `json:"version"`        // format version (FormatVersion; 0 at Create means "this one")
	Teacher       string  `json:"teacher"`        // the teacher's name or path as given
	TokenizerHash string  `json:"tokenizer_hash"` // tokenizer.Tokenizer.Hash() of the teacher
	DataHash      string  `json:"data_hash"`      // DataHash of the examples' token ids, in order
	K             int     `json:"k"`              // top-k entries per position
	Temperature   float64 `json:"temperature"`    // the temperature of the teacher's softmax
	Vocab         int     `json:"vocab"`          // the teacher's vocabulary (number of logits)
	Examples      int     `json:"examples"`       // total examples the cache will hold
}

// ErrMismatch is what Compatible's errors wrap (errors.Is).
var ErrMismatch = errors.New("teacher cache made for something else")

// Compatible returns nil when a cache with header h can serve a run that
// wants want, or an error naming everything that differs: teacher,
// tokenizer, data (hash or number of examples), k, temperature, vocabulary.
// Strings and numbers compare exactly; want.Vocab, want.Examples and
// want.Version are compared only where they are not 0.
func (h Header) Compatible(want Header) error {
	var diffs []string
	short := func(s string) string {
		if len(s) > 16 {
			return s[:16] + "…"
		}
		return s
	}
	if h.Teacher != want.Teacher {
		diffs = append(diffs, fmt.Sprintf("teacher %q, not %q", h.Teacher, want.Teacher))
	}
	if h.TokenizerHash != want.TokenizerHash {
		diffs = append(diffs, fmt.Sprintf("tokenizer hash %s, not %s", short(h.TokenizerHash), short(want.TokenizerHash)))
	}
	if h.DataHash != want.DataHash {
		diffs = append(diffs, fmt.Sprintf("data hash %s, not %s (other examples or another order)", short(h.DataHash), short(want.DataHash)))
	}
	if want.Examples != 0 && h.Examples != want.Examples {
		diffs = append(diffs, fmt.Sprintf("data of %d examples, not %d", h.Examples, want.Examples))
	}
	if h.K != want.K {
		diffs = append(diffs, fmt.Sprintf("k = %d, not %d", h.K, want.K))
	}
	if h.Temperature != want.Temperature {
		diffs = append(diffs, fmt.Sprintf("temperature %g, not %g", h.Temperature, want.Temperature))
	}
	if want.Vocab != 0 && h.Vocab != want.Vocab {
		diffs = append(diffs, fmt.Sprintf("vocabulary of %d, not %d", h.Vocab, want.Vocab))
	}
	if want.Version != 0 && h.Version != want.Version {
		diffs = append(diffs, fmt.Sprintf("format version %d, not %d", h.Version, want.Version))
	}
	if len(diffs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: the cache has %s", ErrMismatch, strings.Join(diffs, "; "))
}

// validate checks a header given to Create.
func (h Header) validate() error {
	var bad []string
	if h.Version != FormatVersion {
		bad = append(bad, fmt.Sprintf("format version %d (this kdnative writes %d)", h.Version, FormatVersion))
	}
	if h.Teacher == "" {
		bad = append(bad, "no teacher name")
	}
	if h.TokenizerHash == "" {
		bad = append(bad, "no tokenizer hash")
	}
	if h.DataHash == "" {
		bad = append(bad, "no data hash")
	}
	if h.Vocab < 1 || h.Vocab > math.MaxInt32 {
		bad = append(bad, fmt.Sprintf("vocabulary of %d", h.Vocab))
	}
	if h.K < 1 {
		bad = append(bad, fmt.Sprintf("k = %d (must be at least 1)", h.K))
	} else if h.Vocab >= 1 && h.K > h.Vocab {
		bad = append(bad, fmt.Sprintf("k = %d is larger than the vocabulary of %d", h.K, h.Vocab))
	} else if h.K > maxK {
		bad = append(bad, fmt.Sprintf("k = %d is larger than %d", h.K, maxK))
	}
	if !(h.Temperature > 0) || math.IsInf(h.Temperature, 0) {
		bad = append(bad, fmt.Sprintf("temperature %g (must be > 0)", h.Temperature))
	}
	if h.Examples < 0 {
		bad = append(bad, fmt.Sprintf("%d examples", h.Examples))
	}
	if len(bad) > 0 {
		return fmt.Errorf("teacher cache header: %s", strings.Join(bad, "; "))
	}
	return nil
}

// maxK bounds k so that one position's entries stay addressable.
const maxK = 1 << 16

// DataHash is a stable hex SHA-256 of token sequences in order: the number of
// examples, then each example's length and ids. Two data sets hash alike
// exactly when they hold the same sequences in the same order.
func DataHash(examples [][]int32) string {
	h := sha256.New()
	h.Write([]byte("kdnative data v1\n"))
	var buf []byte
	buf = binary.AppendUvarint(buf, uint64(len(examples)))
	for _, ex := range examples {
		buf = binary.AppendUvarint(buf, uint64(len(ex)))
		for _, id := range ex {
			buf = binary.LittleEndian.AppendUint32(buf, uint32(id))
		}
		if len(buf) > 1<<16 {
			h.Write(buf)
			buf = buf[:0]
		}
	}
	h.Write(buf)
	return hex.EncodeToString(h.Sum(nil))
}
