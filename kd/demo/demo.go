// Package demo is kdnative's built-in first run: `kdnative train` with no
// recipe distills a small teacher that ships inside the binary into a
// smaller student, on Moby-Dick, offline, on the CPU in a few minutes, and
// shows what the student learned.
//
// Everything it uses is embedded from assets/: the tokenizer (byte level),
// the teacher (made by kdnative's own init-model and train commands with
// assets/recipes/teacher.yaml), the student's architecture, the data and the
// distillation recipe (assets/recipes/distill.yaml).
package demo

import (
	"context"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kdnative/kdnative/kd/train"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	kdrt "github.com/kdnative/kdnative/runtime"
)

//go:embed assets
var assets embed.FS

// Options drive the demo.
type Options struct {
	// Output is where the student and the run's files go (default
	// "kdnative-demo").
	Output string
	// Sets are recipe overrides (key=value), as for any recipe.
	Sets   []string
	Resume bool
	// Overwrite replaces an earlier run in Output (see train.Options).
	Overwrite bool
	Log       io.Writer
	// Terminal makes progress a redrawn line.
	Terminal bool
}

// Prompt is what both models continue at the end of the demo.
const Prompt = "Call me Ishmael. Some years ago"

// Run unpacks the assets to a temporary folder, makes a random student,
// distills the teacher into it, and prints before/after and samples.
func Run(ctx context.Context, be kdrt.Backend, opt Options) error {
	if opt.Output == "" {
		opt.Output = "kdnative-demo"
	}
	if opt.Log == nil {
		opt.Log = io.Discard
	}
	start := time.Now()
	dir, err := os.MkdirTemp("", "kdnative-demo-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := unpack(dir); err != nil {
		return fmt.Errorf("demo: unpacking assets: %w", err)
	}
	a := filepath.Join(dir, "assets")
	student := filepath.Join(dir, "student-init")
	if err := train.InitModel(be, filepath.Join(a, "student-config.json"), filepath.Join(a, "tokenizer"), 1, student, false); err != nil {
		return err
	}
	teacher := filepath.Join(dir, "teacher")
	if err := os.MkdirAll(teacher, 0o755); err != nil {
		return err
	}
	for _, f := range []string{"config.json", "model.safetensors"} {
		if err := os.Rename(filepath.Join(a, "teacher", f), filepath.Join(teacher, f)); err != nil {
			return err
		}
	}
	if err := train.CopyTokenizer(filepath.Join(a, "tokenizer"), teacher); err != nil {
		return err
	}
	r, err := train.LoadRecipe(filepath.Join(a, "recipes", "distill.yaml"))
	if err != nil {
		return err
	}
	r.Student, r.Teacher, r.Output, r.Device = student, teacher, opt.Output, be.Name()
	r.Data.Train, r.Data.Val = filepath.Join(a, "data", "train.jsonl.gz"), filepath.Join(a, "data", "val.jsonl.gz")
	for _, kv := range opt.Sets {
		if err := r.Set(kv); err != nil {
			return err
		}
	}
	tm, sm, err := sizes(be, teacher, student)
	if err != nil {
		return err
	}
	fmt.Fprintf(opt.Log, "kdnative demo: distilling the built-in teacher (%s) into a student (%s) on Moby-Dick,\n", tm, sm)
	fmt.Fprintf(opt.Log, "by %s, for %d steps on %s. The student and the run's files go to %s/.\n\n",
		r.Objectives.KD.Divergence, r.MaxSteps, be.Describe(), opt.Output)

	sum, err := train.Run(ctx, be, r, train.Options{Resume: opt.Resume, Overwrite: opt.Overwrite, Log: opt.Log, Terminal: opt.Terminal})
	if err != nil {
		return err
	}
	w := opt.Log
	fmt.Fprintf(w, "\nWhat the student learned (validation: %d tokens of Moby-Dick the models never trained on):\n", sum.After.Tokens)
	fmt.Fprintf(w, "  KL(teacher‖student)   %8.4f → %.4f nats/token  (%.1f× lower)\n", sum.Before.KL, sum.After.KL, sum.Before.KL/sum.After.KL)
	fmt.Fprintf(w, "  student loss          %8.4f → %.4f  (perplexity %.1f → %.1f)\n", sum.Before.Loss, sum.After.Loss, sum.Before.PPL, sum.After.PPL)
	if err := samples(be, w, teacher, student, opt.Output); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nDone in %s. Try: kdnative forward --model %s\n", time.Since(start).Round(time.Second), opt.Output)
	return nil
}

func unpack(dst string) error {
	return fs.WalkDir(assets, "assets", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		out := filepath.Join(dst, filepath.FromSlash(path))
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		data, err := assets.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(out, data, 0o644)
	})
}

func sizes(be kdrt.Backend, dirs ...string) (string, string, error) {
	var out []string
	for _, d := range dirs {
		c, err := model.LoadConfig(filepath.Join(d, "config.json"))
		if err != nil {
			return "", "", err
		}
		out = append(out, fmt.Sprintf("%.2fM parameters, %d layers, width %d", float64(c.NumParams())/1e6, c.Layers, c.Hidden))
	}
	return out[0], out[1], nil
}

// samples prints a continuation of Prompt by the teacher and by the student
// before and after distillation, at temperature 0.7 with one seed.
func samples(be kdrt.Backend, w io.Writer, teacher, before, after string) error {
	tok, err := tokenizer.LoadDir(teacher)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nSamples (temperature 0.7, seed 1) continuing %q:\n", Prompt)
	for _, m := range []struct{ name, dir string }{{"teacher", teacher}, {"student before", before}, {"student after", after}} {
		mod, err := model.LoadDir(m.dir, be)
		if err != nil {
			return err
		}
		prompt := tok.Encode(Prompt)
		eos := tok.Special().EOS
		g, err := mod.Generate(prompt, model.GenerateParams{MaxTokens: min(100, mod.Config.MaxPositions-len(prompt)),
			Temperature: 0.7, Seed: 1, StopTokens: []int32{eos}})
		if err != nil {
			return err
		}
		// The training pieces end in <|endoftext|>; the sample ends there too.
		ids := g.Tokens
		if g.Finish == "stop" {
			ids = ids[:len(ids)-1]
		}
		text := strings.ReplaceAll(tok.Decode(ids), "\n", " ")
		fmt.Fprintf(w, "  %-15s %s\n", m.name+":", text)
	}
	return nil
}
