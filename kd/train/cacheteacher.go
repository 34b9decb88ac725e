package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
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
	// MaxLen is the longest sequence in tokens (0: the teacher's
	// max_position_embeddings).
	MaxLen    int
	Template  string
	OnBadLine string
	// BatchSize is how many examples go through the teacher at once (0: 8).
	BatchSize int
	// ExamplesPerShard bounds a shard (0: the cache package's default).
	ExamplesPerShard int
	// Progress, when set, receives a progress line with the rate and the
	// time left: redrawn in place on a terminal, a plain line every 15 s
	// otherwise. Nil: none.
	Progress io.Writer
	// Precision is auto (the backend's default), bf16, fp32 or tf32: how the
	// teacher is stored and multiplied (runtime.UsePrecision). Its logits
	// are F32 either way.
	Precision string
}

// dataOptions are the data options a cache and the runs that read it must
// share: the same examples, tokenized the same way, in the same order.
func cacheDataOptions(maxLen int, template, onBadLine string, vocab int) data.Options {
	return data.Options{MaxLen: maxLen, Template: template, OnBadLine: onBadLine, Vocab: vocab}
}

// CacheTeacher writes a teacher cache: for every token of every example of
// the data file (entry i: the teacher's distribution that predicted token i),
// the K most likely tokens and their log-probabilities at the temperature,
// and the remaining mass. Run again over an existing cache it resumes: every
// shard already written is checked through (every block), the intact ones
// are kept, and only the examples of missing or damaged shards and those
// never written are computed (log says which shards are written again and
// why).
func CacheTeacher(ctx context.Context, be kdrt.Backend, c CacheConfig, log io.Writer) error {
	if c.K <= 0 {
		return fmt.Errorf("cache-teacher: k %d must be positive", c.K)
	}
	if !(c.Temperature > 0) || math.IsInf(c.Temperature, 0) {
		return fmt.Errorf("cache-teacher: temperature %g must be positive and finite", c.Temperature)
	}
	if c.BatchSize < 0 {
		return fmt.Errorf("cache-teacher: batch size %d must be at least 1 (examples run through the teacher at once; 0: the default, 8)", c.BatchSize)
	}
	if c.MaxLen < 0 {
		return fmt.Errorf("cache-teacher: max-len %d must be at least 1 (tokens per example; 0: the teacher's max_position_embeddings)", c.MaxLen)
	}
	if c.ExamplesPerShard < 0 {
		return fmt.Errorf("cache-teacher: examples per shard %d must be at least 1 (0: the default)", c.ExamplesPerShard)
	}
	if c.BatchSize == 0 {
		c.BatchSize = 8
	}
	prec, err := kdrt.UsePrecision(be, c.Precision)
	if err != nil {
		return err
	}
	teacher, err := model.LoadDir(c.Teacher, be, model.ForPrecision(prec, false)...)
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
	fmt.Fprintln(log, describeData(rep, maxLen))
	w, err := cache.Create(c.Output, cache.Header{Teacher: c.Teacher, TokenizerHash: tok.Hash(), DataHash: dataHash(rows),
		K: c.K, Temperature: c.Temperature, Vocab: V, Examples: len(rows)}, cache.WriterOptions{ExamplesPerShard: c.ExamplesPerShard})
	if err != nil {
		return err
	}
	for _, e := range w.LeftOut() {
		fmt.Fprintf(log, "cache-teacher: %v; its examples are cached again\n", e)
	}
	todo := w.Todo()
	if done := w.Done(); done > 0 {
		fmt.Fprintf(log, "resuming: %d of %d examples already cached (every block checked); %d to go\n", done, len(rows), len(rows)-done)
	}
	total, tokens := 0, 0
	for _, r := range todo {
		total += r.End - r.First
		for _, row := range rows[r.First:r.End] {
			tokens += len(row.Tokens)
		}
	}
	bar := newCacheProgress(c.Progress, total, tokens)
	sp := tok.Special()
	pad := max(sp.PAD, sp.EOS, 0)
	for _, r := range todo {
		for i := r.First; i < r.End; i += c.BatchSize {
			if ctx.Err() != nil {
				bar.end()
				if err := w.Close(); err != nil {
					return err
				}
				return fmt.Errorf("cache-teacher: %w with %d of %d examples cached; run it again to resume", ErrInterrupted, w.Done(), len(rows))
			}
			chunk := rows[i:min(i+c.BatchSize, r.End)]
			entries, err := teacherTopK(teacher, chunk, pad, c.K, c.Temperature)
			if err != nil {
				return err
			}
			n := 0
			for j, e := range entries {
				if err := w.Add(i+j, e); err != nil {
					return err
				}
				n += len(chunk[j].Tokens)
			}
			bar.add(len(chunk), n)
		}
	}
	bar.end()
	if err := w.Close(); err != nil {
		return err
	}
	rd, err := cache.Open(c.Output)
	if err != nil {
		return err
	}
	defer rd.Close()
	if err := rd.Incomplete(); err != nil {
		return err
	}
	fmt.Fprintf(log, "cached %d examples (%d computed in this run) in %s: %s\n", rd.Len(), total, bar.elapsed().Round(time.Millisecond), describeStats(rd.Stats()))
	return nil
}

// describeData is what cache-teacher read, in words: every example is
// cached (a training run splits off its validation examples later, from the
// same cache).
func describeData(rep data.Report, maxLen int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d examples to cache (all of them: a training run takes its validation split from the same cache), %d tokens, at most %d each",
		strings.Join(rep.Files, ", "), rep.Examples, rep.Tokens, maxLen)
	if rep.Template != "" {
		fmt.Fprintf(&b, ", template %s", rep.Template)
	}
	if rep.Truncated > 0 {
		fmt.Fprintf(&b, ", %d truncated", rep.Truncated)
	}
	if rep.Dropped > 0 {
		fmt.Fprintf(&b, ", %d dropped", rep.Dropped)
	}
	if rep.Skipped > 0 {
		fmt.Fprintf(&b, ", %d bad lines skipped", rep.Skipped)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(&b, "\n  %s", p.Error())
	}
	if n := rep.Skipped + rep.Dropped - len(rep.Problems); n > 0 {
		fmt.Fprintf(&b, "\n  … and %d more", n)
	}
	return b.String()
}

// cacheProgress shows cache-teacher's progress: examples and tokens done
// of those this run computes, the rate and the time left. On a terminal
// the line is redrawn (at most twice a second); elsewhere a plain line is
// printed every 15 s, so a log holds no carriage returns.
type cacheProgress struct {
	w               io.Writer
	term            bool
	total, tokens   int
	doneEx, doneTok int
	start, last     time.Time
	now             func() time.Time
}

func newCacheProgress(w io.Writer, total, tokens int) *cacheProgress {
	p := &cacheProgress{w: w, term: isTerminal(w), total: total, tokens: tokens, now: time.Now}
	p.start = p.now()
	p.last = p.start
	return p
}

func (p *cacheProgress) elapsed() time.Duration { return p.now().Sub(p.start) }

func (p *cacheProgress) add(examples, tokens int) {
	p.doneEx += examples
	p.doneTok += tokens
	if p.w == nil {
		return
	}
	now := p.now()
	every := 15 * time.Second
	if p.term {
		every = 500 * time.Millisecond
	}
	if now.Sub(p.last) < every {
		return
	}
	p.last = now
	if p.term {
		fmt.Fprintf(p.w, "\r%s   ", p.line(now))
	} else {
		fmt.Fprintln(p.w, p.line(now))
	}
}

// line is the progress in words. The time left is the tokens left at this
// run's token rate (examples differ in length; the teacher's cost follows
// tokens).
func (p *cacheProgress) line(now time.Time) string {
	el := now.Sub(p.start)
	s := fmt.Sprintf("cache-teacher: %d/%d examples, %d/%d tokens", p.doneEx, p.total, p.doneTok, p.tokens)
	if p.doneTok == 0 || el <= 0 {
		return s + ", ? tokens/s, ? left"
	}
	rate := float64(p.doneTok) / el.Seconds()
	left := time.Duration(float64(p.tokens-p.doneTok) / rate * float64(time.Second))
	return s + fmt.Sprintf(", %.4g tokens/s, %v elapsed, %v left", rate, el.Round(time.Second), left.Round(time.Second))
}

// end finishes a redrawn line.
func (p *cacheProgress) end() {
	if p.w != nil && p.term && p.doneEx > 0 {
		fmt.Fprintf(p.w, "\r%s   \n", p.line(p.now()))
	}
}

// isTerminal reports whether w is a character device (a terminal), where a
// line can be redrawn.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// dataHash fingerprints the examples' tokens.
func dataHash(rows []data.Example) string {
	seqs := make([][]int32, len(rows))
	for i, r := range rows {
		seqs[i] = r.Tokens
	}
	return cache.DataHash(seqs)
}

// teacherTopK runs the teacher on rows (its inference forward: no
// activations kept) and returns each row's cache entry. The logits are made
// one row of the batch at a time, [T × V] F32, never the whole batch's.
func teacherTopK(teacher *model.Model, rows []data.Example, pad int32, K int, T float64) ([]cache.Entry, error) {
	b, err := data.MakeBatch(rows, pad, 0)
	if err != nil {
		return nil, err
	}
	h, err := teacher.InferHidden(model.Batch{B: b.B, T: b.T, IDs: b.IDs})
	if err != nil {
		return nil, err
	}
	be, V := teacher.Backend(), teacher.Config.Vocab
	rowLogits, err := be.Alloc("cache.logits", kdrt.F32, b.T, V)
	if err != nil {
		return nil, err
	}
	defer be.Free(rowLogits)
	logits := make([]float32, b.T*V)
	out := make([]cache.Entry, len(rows))
	order := make([]int, V)
	lp := make([]float64, V)
	for r, row := range rows {
		if err := teacher.HeadLogits(rowLogits, be.Slice(h, r*b.T, (r+1)*b.T)); err != nil {
			return nil, err
		}
		if err := be.Download(rowLogits, logits); err != nil {
			return nil, err
		}
		n := len(row.Tokens)
		e := cache.Entry{TopK: data.TopK{K: K, IDs: make([]int32, n*K), LogProbs: make([]float32, n*K), Has: make([]bool, n)},
			Tail: make([]float32, n)}
		e.Tail[0] = float32(math.Inf(-1))
		for k := range K { // entry 0 has no teacher: placeholder ids
			e.TopK.IDs[k], e.TopK.LogProbs[k] = int32(k), float32(math.Inf(-1))
		}
		for i := 1; i < n; i++ {
			// Position i−1's distribution predicted token i.
			lg := logits[(i-1)*V : i*V]
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
		if err := r.Incomplete(); err != nil {
			// Which shard is missing or damaged, and why.
			return fmt.Errorf("%w; run cache-teacher again with the same arguments: it keeps the intact shards and writes the others (kdnative cache-teacher --verify %s checks every shard)", err, r.Dir())
		}
		if r.Len() != len(rows) {
			return fmt.Errorf("the teacher cache %s holds %d examples, the data %d", r.Dir(), r.Len(), len(rows))
		}
		for i := range rows {
			e, err := r.Get(i)
			if errors.Is(err, cache.ErrCorrupt) {
				return fmt.Errorf("%w; run cache-teacher again with the same arguments: it writes that shard again (kdnative cache-teacher --verify %s checks every shard)", err, r.Dir())
			}
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
		mass += math.Exp(float64(e.TopK.LogProbs[position*K+k]))
	}
	tail := math.Exp(float64(e.Tail[position]))
	// Each log-probability is stored on its own, rounded to the grid (1/32
	// nat near the top), the tail too, so the stored k+1 bins may sum a
	// little above or below 1; training renormalizes them (tail: tail), and
	// p here is what training sees.
	norm := mass + tail
	for k := range K {
		id, lp := e.TopK.IDs[position*K+k], e.TopK.LogProbs[position*K+k]
		text := ""
		if tok != nil {
			text = fmt.Sprintf("%q", tok.Decode([]int32{id}))
		}
		fmt.Fprintf(w, "  %6d %-12s p=%.4f  logp=%.4f (stored)\n", id, text, math.Exp(float64(lp))/norm, lp)
	}
	fmt.Fprintf(w, "  top-%d mass %.4f, tail %.4f (renormalized, as training reads them)\n", K, mass/norm, tail/norm)
	grid := "a grid"
	if q := r.Stats().Quantization.Step; q > 0 {
		grid = fmt.Sprintf("a grid of %.4g nats", q)
	}
	fmt.Fprintf(w, "  stored: top-%d %.4f + tail %.4f = %.4f (each log-probability is stored on its own, rounded to %s, so the stored bins need not sum to 1)\n",
		K, mass, tail, norm, grid)
	return nil
}

// describeStats is a cache's size in one line.
func describeStats(s cache.Stats) string {
	return fmt.Sprintf("%d shards, %.2f MB, %d positions with a teacher entry, %.1f bytes per position (%.1f before zstd), log-probabilities quantized to %.4g nats",
		s.Shards, float64(s.Bytes)/1e6, s.TeacherPositions, s.BytesPerPosition, float64(s.RawBytes)/float64(max(s.TeacherPositions, 1)), s.Quantization.Step)
}

func osMkdirAll(dir string) error { return os.MkdirAll(dir, 0o755) }
