package train

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kdnative/kdnative/kd/cache"
	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// EvalConfig is what `kdnative eval` measures.
type EvalConfig struct {
	Model, Teacher, Data string
	// Cache is a teacher cache made over Data (instead of Teacher).
	Cache             string
	MaxLen, BatchSize int
	Template          string
	OnBadLine         string
	// JSON, when set, is a file the result is written to.
	JSON string
	// Terminal: the log is a terminal, and gets a redrawn progress line.
	Terminal bool
	// Precision is auto (the backend's default), bf16, fp32 or tf32: how the
	// models are stored and multiplied (runtime.UsePrecision).
	Precision string
}

// EvalResult is eval's output, as printed and as written to JSON.
type EvalResult struct {
	Model       string   `json:"model"`
	Teacher     string   `json:"teacher,omitempty"`
	Cache       string   `json:"teacher_cache,omitempty"`
	Data        string   `json:"data"`
	Examples    int      `json:"examples"`
	Tokens      int      `json:"tokens"`
	Loss        float64  `json:"loss"`
	Perplexity  float64  `json:"perplexity"`
	KLToTeacher *float64 `json:"kl_to_teacher,omitempty"`
	Skipped     int      `json:"skipped_lines"`
}

// RunEval measures a model's loss and perplexity on every example of a data
// file, and its forward KL to a teacher when one is given.
func RunEval(be kdrt.Backend, c EvalConfig, log io.Writer) (*EvalResult, error) {
	if c.BatchSize <= 0 {
		c.BatchSize = 8
	}
	prec, err := kdrt.UsePrecision(be, c.Precision)
	if err != nil {
		return nil, err
	}
	m, err := model.LoadDir(c.Model, be, model.ForPrecision(prec, false)...)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.LoadDir(c.Model)
	if err != nil {
		return nil, err
	}
	var teacher *model.Model
	if c.Teacher != "" {
		if teacher, err = model.LoadDir(c.Teacher, be, model.ForPrecision(prec, false)...); err != nil {
			return nil, fmt.Errorf("teacher: %w", err)
		}
		ttok, err := tokenizer.LoadDir(c.Teacher)
		if err != nil {
			return nil, fmt.Errorf("teacher: %w", err)
		}
		if ttok.Hash() != tok.Hash() {
			return nil, fmt.Errorf("the teacher's tokenizer (%s) differs from the model's (%s)", c.Teacher, c.Model)
		}
	}
	maxLen := c.MaxLen
	if maxLen <= 0 || maxLen > m.Config.MaxPositions {
		maxLen = m.Config.MaxPositions
	}
	opts := cacheDataOptions(maxLen, c.Template, c.OnBadLine, m.Config.Vocab)
	if c.Cache != "" {
		if teacher != nil {
			return nil, fmt.Errorf("give a teacher or a teacher cache, not both")
		}
		r, err := cache.Open(c.Cache)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		if r.Header().TokenizerHash != tok.Hash() {
			return nil, fmt.Errorf("the teacher cache %s was made with another tokenizer than the model's", c.Cache)
		}
		opts.BeforeSplit = attachCache(r)
	}
	rows, _, rep, err := data.LoadSFT(c.Data, tok, opts)
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(log, evalDataLine(rep))
	sp := tok.Special()
	pad := max(sp.PAD, sp.EOS, 0)
	bar := &meter{w: log, term: c.Terminal, label: "eval", unit: "examples", total: len(rows)}
	e, err := evaluateSFT(be, m, teacher, rows, c.BatchSize, pad, loss.Options{}, bar.update, nil)
	bar.finish()
	if err != nil {
		return nil, err
	}
	if e.Tokens == 0 {
		return nil, fmt.Errorf("%s: no tokens to evaluate", c.Data)
	}
	res := &EvalResult{Model: c.Model, Teacher: c.Teacher, Cache: c.Cache, Data: c.Data, Examples: len(rows), Tokens: e.Tokens,
		Loss: e.Loss, Perplexity: e.PPL, Skipped: rep.Skipped}
	if e.HasKL {
		kl := e.KL
		res.KLToTeacher = &kl
	}
	fmt.Fprintln(log, e.String())
	if c.JSON != "" {
		js, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(c.JSON, append(js, '\n'), 0o644); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// evalDataLine is the data report for eval, which evaluates every example:
// the loader's "(275 train, 0 validation)" split means nothing here.
func evalDataLine(rep data.Report) string {
	return strings.Replace(rep.String(), fmt.Sprintf(" (%d train, %d validation)", rep.Train, rep.Val), ", all evaluated", 1)
}
