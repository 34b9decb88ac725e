package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"time"

	"github.com/kdnative/kdnative/kd/cache"
	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// CacheConfig is what `kdnative cache-teacher` does: run a teacher over a
// dataset and keep, for every position, its top-k at a temperature.
type CacheConfig struct {
	Teacher     string
	Data        string
	Output      string
	K           int
	Temperature float64
	MaxLen      int
	Template    string
	OnBadLine   string
	BatchSize   int
	// ExamplesPerShard bounds a shard (0: the cache package's default).
	ExamplesPerShard int
}

// dataOptions are the data options a cache and the runs that read it must
// share: the same examples, tokenized the same way, in the same order.
func cacheDataOptions(maxLen int, template, onBadLine string, vocab int) data.Options {
	return data.Options{MaxLen: maxLen, Template: template, OnBadLine: onBadLine, Vocab: vocab}
}

// CacheTeacher writes a teacher cache: for every token of every example of
// the data file (entry i: the teacher's distribution that predicted token i),
// the K most likely tokens and their log-probabilities at the temperature,
// and the remaining mass. An interrupted run resumes where its last complete
// shard ended.
func CacheTeacher(ctx context.Context, be kdrt.Backend, c CacheConfig, log io.Writer) error {
	if c.K <= 0 {
		return fmt.Errorf("cache-teacher: k %d must be positive", c.K)
	}
	if !(c.Temperature > 0) {
		return fmt.Errorf("cache-teacher: temperature %g must be positive", c.Temperature)
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 8
	}
	teacher, err := model.LoadDir(c.Teacher, be)
	if err != nil {
		return err
	}
	tok, err := tokenizer.LoadDir(c.Teacher)
	if err != nil {
		return err
	}
	V := teacher.Config.Vocab
	if c.K > V {
		return fmt.Errorf("cache-teacher: k = %d is larger than the teacher's vocabulary of %d", c.K, V)
	}
	maxLen := c.MaxLen
	if maxLen <= 0 || maxLen > teacher.Config.MaxPositions {
		maxLen = teacher.Config.MaxPositions
	}
	rows, _, rep, err := data.LoadSFT(c.Data, tok, cacheDataOptions(maxLen, c.Template, c.OnBadLine, V))
	if err != nil {
		return err
	}
	fmt.Fprintln(log, rep.String())
	w, err := cache.Create(c.Output, cache.Header{Teacher: c.Teacher, TokenizerHash: tok.Hash(), DataHash: dataHash(rows),
		K: c.K, Temperature: c.Temperature, Vocab: V, Examples: len(rows)}, cache.WriterOptions{ExamplesPerShard: c.ExamplesPerShard})
	if err != nil {
		return err
	}
	start, done := time.Now(), w.Done()
	if done > 0 {
		fmt.Fprintf(log, "resuming: %d of %d examples already cached\n", done, len(rows))
	}
	sp := tok.Special()
	pad := max(sp.PAD, sp.EOS, 0)
	for i := done; i < len(rows); i += c.BatchSize {
		if ctx.Err() != nil {
			if err := w.Close(); err != nil {
				return err
			}
			return fmt.Errorf("cache-teacher: %w at example %d; run it again to resume", ErrInterrupted, w.Done())
		}
		chunk := rows[i:min(i+c.BatchSize, len(rows))]
		entries, err := teacherTopK(teacher, chunk, pad, c.K, c.Temperature)
		if err != nil {
			return err
		}
		for j, e := range entries {
			if err := w.Add(i+j, e); err != nil {
				return err
			}
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	r, err := cache.Open(c.Output)
	if err != nil {
		return err
	}
	defer r.Close()
	st := r.Stats()
	fmt.Fprintf(log, "cached %d examples in %s: %s\n", r.Len(), time.Since(start).Round(time.Millisecond), describeStats(st))
	return nil
}

// dataHash fingerprints the examples' tokens.
func dataHash(rows []data.Example) string {
	seqs := make([][]int32, len(rows))
	for i, r := range rows {
		seqs[i] = r.Tokens
	}
	return cache.DataHash(seqs)
}

// teacherTopK runs the teacher on rows and returns each row's cache entry.
func teacherTopK(teacher *model.Model, rows []data.Example, pad int32, K int, T float64) ([]cache.Entry, error) {
	b, err := data.MakeBatch(rows, pad, 0)
	if err != nil {
		return nil, err
	}
	if _, err := teacher.Forward(model.Batch{B: b.B, T: b.T, IDs: b.IDs}); err != nil {
		return nil, err
	}
	be, V := teacher.Backend(), teacher.Config.Vocab
	logits := make([]float32, teacher.Logits().Numel())
	if err := be.Download(teacher.Logits(), logits); err != nil {
		return nil, err
	}
	out := make([]cache.Entry, len(rows))
	order := make([]int, V)
	lp := make([]float64, V)
	for r, row := range rows {
		n := len(row.Tokens)
		e := cache.Entry{TopK: data.TopK{K: K, IDs: make([]int32, n*K), LogProbs: make([]float32, n*K), Has: make([]bool, n)},
			Tail: make([]float32, n)}
		e.Tail[0] = float32(math.Inf(-1))
		for k := range K { // entry 0 has no teacher: placeholder ids
			e.TopK.IDs[k], e.TopK.LogProbs[k] = int32(k), float32(math.Inf(-1))
		}
		for i := 1; i < n; i++ {
			// Position i−1's distribution predicted token i.
			lg := logits[(r*b.T+i-1)*V : (r*b.T+i)*V]
			logSoftmax64(lp, lg, T)
			for j := range order {
				order[j] = j
			}
			sort.Slice(order, func(a, c int) bool { return lp[order[a]] > lp[order[c]] })
			// The tail's mass, summed from its own terms (1 − Σ top-k would
			// cancel when the top-k holds nearly everything).
			mx := math.Inf(-1)
			for _, j := range order[K:] {
				mx = math.Max(mx, lp[j])
			}
			tail := math.Inf(-1)
			if !math.IsInf(mx, -1) {
				var s float64
				for _, j := range order[K:] {
					s += math.Exp(lp[j] - mx)
				}
				tail = mx + math.Log(s)
			}
			for k, j := range order[:K] {
				e.TopK.IDs[i*K+k], e.TopK.LogProbs[i*K+k] = int32(j), float32(lp[j])
			}
			e.TopK.Has[i], e.Tail[i] = true, float32(tail)
		}
		out[r] = e
	}
	return out, nil
}

// logSoftmax64 writes log softmax(x/T) in float64.
func logSoftmax64(dst []float64, x []float32, T float64) {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = math.Max(mx, float64(v)/T)
	}
	var s float64
	for _, v := range x {
		s += math.Exp(float64(v)/T - mx)
	}
	ls := math.Log(s)
	for i, v := range x {
		dst[i] = float64(v)/T - mx - ls
	}
}

// attachCache returns a data hook that checks a cache against the examples
// and attaches each example's cached teacher.
func attachCache(r *cache.Reader) func([]data.Example) error {
	return func(rows []data.Example) error {
		h := r.Header()
		if h.DataHash != dataHash(rows) {
			return errors.New("the teacher cache was made for other data (or other data options: max_len, template): its data fingerprint differs; run cache-teacher on this data")
		}
		if r.Len() != len(rows) {
			return fmt.Errorf("the teacher cache holds %d of the %d examples (an unfinished cache-teacher run? run it again to resume)", r.Len(), len(rows))
		}
		for i := range rows {
			e, err := r.Get(i)
			if err != nil {
				return err
			}
			tk := e.TopK
			tk.Tail = e.Tail // the teacher's own measure of the mass outside the top-k
			rows[i].TopK = &tk
		}
		return nil
	}
}

// InspectCache prints a cache's header, its size and bytes per token, and the
// cached distribution at one position of one example (decoded with the
// teacher's tokenizer when its folder is still there).
func InspectCache(dir string, example, position int, w io.Writer) error {
	r, err := cache.Open(dir)
	if err != nil {
		return err
	}
	defer r.Close()
	h := r.Header()
	fmt.Fprintf(w, "cache        %s (format version %d)\n", dir, h.Version)
	fmt.Fprintf(w, "teacher      %s\n", h.Teacher)
	fmt.Fprintf(w, "tokenizer    %s\n", h.TokenizerHash)
	fmt.Fprintf(w, "data         %s\n", h.DataHash)
	fmt.Fprintf(w, "k            %d of a vocabulary of %d, temperature %g\n", h.K, h.Vocab, h.Temperature)
	fmt.Fprintf(w, "examples     %d of %d\n", r.Len(), h.Examples)
	fmt.Fprintf(w, "size         %s\n", describeStats(r.Stats()))
	if r.Len() == 0 {
		return nil
	}
	e, err := r.Get(example)
	if err != nil {
		return err
	}
	n := len(e.TopK.Has)
	if position < 0 || position >= n {
		return fmt.Errorf("example %d has positions 0…%d", example, n-1)
	}
	if !e.TopK.Has[position] {
		fmt.Fprintf(w, "example %d, position %d: no teacher entry (the first token)\n", example, position)
		return nil
	}
	tok, _ := tokenizer.LoadDir(h.Teacher)
	fmt.Fprintf(w, "example %d, position %d (the distribution that predicted token %d):\n", example, position, position)
	K := e.TopK.K
	var mass float64
	for k := range K {
		id, lp := e.TopK.IDs[position*K+k], e.TopK.LogProbs[position*K+k]
		p := math.Exp(float64(lp))
		mass += p
		text := ""
		if tok != nil {
			text = fmt.Sprintf("%q", tok.Decode([]int32{id}))
		}
		fmt.Fprintf(w, "  %6d %-12s p=%.4f  logp=%.4f\n", id, text, p, lp)
	}
	fmt.Fprintf(w, "  top-%d mass %.4f, tail %.4f (stored)\n", K, mass, math.Exp(float64(e.Tail[position])))
	return nil
}

// describeStats is a cache's size in one line.
func describeStats(s cache.Stats) string {
	return fmt.Sprintf("%d shards, %.2f MB, %d positions with a teacher entry, %.1f bytes per position (%.1f before zstd), log-probabilities quantized to %.4g nats",
		s.Shards, float64(s.Bytes)/1e6, s.TeacherPositions, s.BytesPerPosition, float64(s.RawBytes)/float64(max(s.TeacherPositions, 1)), s.Quantization.Step)
}

func osMkdirAll(dir string) error { return os.MkdirAll(dir, 0o755) }
