package elicit

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"unicode"

	"github.com/kdnative/kdnative/internal/atomicfile"
)

// CurateConfig says how to filter a JSONL file of generated records.
type CurateConfig struct {
	Input, Output string
	// Dropped, when set, receives every dropped record with a "reason".
	Dropped string
	// Fields are the record fields whose text is judged (joined by "\n");
	// default: "prompt" and "response", or the contents of "messages".
	Fields []string
	// MinChars and MaxChars bound the judged text's length in characters
	// (0: no bound).
	MinChars, MaxChars int
	// Script, when set ("latin", "han", "cyrillic", "arabic", "devanagari",
	// …, a Unicode script name in lower case), keeps records whose letters
	// are at least ScriptFraction (default 0.8) of that script.
	Script         string
	ScriptFraction float64
	// NearDup > 0 removes records whose word 5-gram Jaccard similarity to an
	// earlier kept record is estimated at NearDup or more (MinHash with 128
	// permutations and LSH banding); 0 removes exact duplicates only.
	NearDup float64
}

// CurateReport counts what curation did.
type CurateReport struct {
	Read, Kept int
	Dropped    map[string]int // by reason
}

func (r CurateReport) String() string {
	s := fmt.Sprintf("%d records read, %d kept", r.Read, r.Kept)
	if len(r.Dropped) == 0 {
		return s + ", none dropped"
	}
	keys := make([]string, 0, len(r.Dropped))
	n := 0
	for k, v := range r.Dropped {
		keys = append(keys, k)
		n += v
	}
	sort.Strings(keys)
	reasons := make([]string, len(keys))
	for i, k := range keys {
		reasons[i] = fmt.Sprintf("%d %s", r.Dropped[k], k)
	}
	return fmt.Sprintf("%s, %d dropped (%s)", s, n, strings.Join(reasons, ", "))
}

// Curate filters cfg.Input into cfg.Output (written to a temporary name and
// renamed), keeping the first of each group of duplicates and the records'
// order.
func Curate(cfg CurateConfig) (CurateReport, error) {
	rep := CurateReport{Dropped: map[string]int{}}
	if !(cfg.NearDup >= 0 && cfg.NearDup <= 1) {
		return rep, fmt.Errorf("curate: near-duplicate threshold %g must be in [0, 1] (0: exact duplicates only)", cfg.NearDup)
	}
	if cfg.ScriptFraction == 0 {
		cfg.ScriptFraction = 0.8
	}
	var script *unicode.RangeTable
	if cfg.Script != "" {
		for name, t := range unicode.Scripts {
			if strings.EqualFold(name, cfg.Script) {
				script = t
			}
		}
		if script == nil {
			return rep, fmt.Errorf("curate: unknown script %q (a Unicode script name such as latin, han, cyrillic)", cfg.Script)
		}
	}
	in, err := os.Open(cfg.Input)
	if err != nil {
		return rep, fmt.Errorf("curate: %w", err)
	}
	defer in.Close()
	out, err := newAtomicFile(cfg.Output)
	if err != nil {
		return rep, err
	}
	defer out.abort()
	var dropped *atomicFile
	if cfg.Dropped != "" {
		if dropped, err = newAtomicFile(cfg.Dropped); err != nil {
			return rep, err
		}
		defer dropped.abort()
	}
	seen := map[uint64]bool{}
	lsh := newLSH(cfg.NearDup)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), maxCurateLine)
	line := 1
	for ; sc.Scan(); line++ {
		raw := strings.TrimSpace(sc.Text())
		if raw == "" {
			continue
		}
		rep.Read++
		var rec map[string]any
		if err := json.Unmarshal([]byte(raw), &rec); err != nil {
			return rep, fmt.Errorf("%s:%d: not a JSON object: %v", cfg.Input, line, err)
		}
		text := recordText(rec, cfg.Fields)
		reason := ""
		n := len([]rune(text))
		switch {
		case text == "":
			reason = "empty"
		case cfg.MinChars > 0 && n < cfg.MinChars:
			reason = "too short"
		case cfg.MaxChars > 0 && n > cfg.MaxChars:
			reason = "too long"
		case script != nil && scriptFraction(text, script) < cfg.ScriptFraction:
			reason = "other script"
		}
		if reason == "" {
			h := textHash(normalize(text))
			if seen[h] {
				reason = "exact duplicate"
			} else if cfg.NearDup > 0 && lsh.nearDuplicate(text) {
				reason = "near duplicate"
			} else {
				seen[h] = true
				if cfg.NearDup > 0 {
					lsh.add(text)
				}
			}
		}
		if reason != "" {
			rep.Dropped[reason]++
			if dropped != nil {
				rec["reason"] = reason
				js, _ := json.Marshal(rec)
				dropped.w.Write(append(js, '\n'))
			}
			continue
		}
		rep.Kept++
		out.w.WriteString(raw + "\n")
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return rep, fmt.Errorf("%s:%d: a line is longer than %d MiB", cfg.Input, line, maxCurateLine>>20)
		}
		return rep, fmt.Errorf("%s: %w", cfg.Input, err)
	}
	if err := out.commit(); err != nil {
		return rep, err
	}
	if dropped != nil {
		if err := dropped.commit(); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// maxCurateLine is the longest input line Curate reads.
const maxCurateLine = 64 << 20

// recordText is the text curation judges.
func recordText(rec map[string]any, fields []string) string {
	if len(fields) == 0 {
		if msgs, ok := rec["messages"].([]any); ok {
			var parts []string
			for _, m := range msgs {
				if mm, ok := m.(map[string]any); ok {
					if c, ok := mm["content"].(string); ok {
						parts = append(parts, c)
					}
				}
			}
			return strings.Join(parts, "\n")
		}
		fields = []string{"prompt", "response"}
	}
	var parts []string
	for _, f := range fields {
		if s, ok := rec[f].(string); ok && s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, "\n")
}

// normalize folds case and whitespace, so that exact duplicates differing
// only in those count as duplicates.
func normalize(s string) string { return strings.Join(strings.Fields(strings.ToLower(s)), " ") }

func textHash(s string) uint64 {
	h := fnv.New64a()
	io.WriteString(h, s)
	return h.Sum64()
}

// scriptFraction is the share of the text's letters that are in script.
func scriptFraction(s string, script *unicode.RangeTable) float64 {
	letters, in := 0, 0
	for _, r := range s {
		if unicode.IsLetter(r) {
			letters++
			if unicode.Is(script, r) {
				in++
			}
		}
	}
	if letters == 0 {
		return 0
	}
	return float64(in) / float64(letters)
}

// MinHash with locality-sensitive hashing: each text becomes numPerm
// minimum hashes of its word 5-grams; texts whose signatures agree on all
// rows of some band are candidates, and a candidate whose estimated Jaccard
// similarity reaches the threshold is a near duplicate.
const (
	numPerm   = 128
	shingleN  = 5
	bandCount = 32 // 32 bands of 4 rows: the S-curve's midpoint near (1/32)^(1/4) ≈ 0.42
)

type lsh struct {
	threshold float64
	buckets   []map[uint64][]int // per band: band hash → signatures
	sigs      [][numPerm]uint64
	seeds     [numPerm][2]uint64
}

func newLSH(threshold float64) *lsh {
	l := &lsh{threshold: threshold, buckets: make([]map[uint64][]int, bandCount)}
	for i := range l.buckets {
		l.buckets[i] = map[uint64][]int{}
	}
	// Fixed odd multipliers and offsets: the same text always gets the same
	// signature, so runs are reproducible.
	x := uint64(0x9e3779b97f4a7c15)
	for i := range l.seeds {
		x = x*6364136223846793005 + 1442695040888963407
		a := x | 1
		x = x*6364136223846793005 + 1442695040888963407
		l.seeds[i] = [2]uint64{a, x}
	}
	return l
}

func (l *lsh) signature(text string) [numPerm]uint64 {
	words := strings.Fields(strings.ToLower(text))
	var sig [numPerm]uint64
	for i := range sig {
		sig[i] = math.MaxUint64
	}
	n := max(1, len(words)-shingleN+1)
	for i := range n {
		end := min(i+shingleN, len(words))
		h := textHash(strings.Join(words[i:end], " "))
		for j, s := range l.seeds {
			v := h*s[0] + s[1]
			v ^= v >> 29
			if v < sig[j] {
				sig[j] = v
			}
		}
	}
	return sig
}

func bandKey(sig *[numPerm]uint64, b int) uint64 {
	rows := numPerm / bandCount
	h := fnv.New64a()
	var buf [8]byte
	for _, v := range sig[b*rows : (b+1)*rows] {
		binary.LittleEndian.PutUint64(buf[:], v)
		h.Write(buf[:])
	}
	return h.Sum64()
}

func (l *lsh) nearDuplicate(text string) bool {
	sig := l.signature(text)
	checked := map[int]bool{}
	for b := range bandCount {
		for _, i := range l.buckets[b][bandKey(&sig, b)] {
			if checked[i] {
				continue
			}
			checked[i] = true
			same := 0
			for j := range sig {
				if sig[j] == l.sigs[i][j] {
					same++
				}
			}
			if float64(same)/numPerm >= l.threshold {
				return true
			}
		}
	}
	return false
}

func (l *lsh) add(text string) {
	sig := l.signature(text)
	i := len(l.sigs)
	l.sigs = append(l.sigs, sig)
	for b := range bandCount {
		k := bandKey(&sig, b)
		l.buckets[b][k] = append(l.buckets[b][k], i)
	}
}

// atomicFile is an output written through internal/atomicfile, so an
// interrupted run never leaves a half-written one, with a buffer in front.
type atomicFile struct {
	f    *atomicfile.File
	w    *bufio.Writer
	path string
}

func newAtomicFile(path string) (*atomicFile, error) {
	f, err := atomicfile.Create(path)
	if err != nil {
		return nil, fmt.Errorf("curate: %w", err)
	}
	return &atomicFile{f: f, w: bufio.NewWriter(f), path: path}, nil
}

func (a *atomicFile) commit() error {
	err := a.w.Flush()
	if err == nil {
		err = a.f.Commit()
	}
	if err != nil {
		a.f.Abort()
		return fmt.Errorf("curate: writing %s: %w", a.path, err)
	}
	return nil
}

// abort discards the output unless it was committed.
func (a *atomicFile) abort() { a.f.Abort() }
