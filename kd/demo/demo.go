// Package demo is kdnative's built-in first run: `kdnative train` with no
// recipe distills a small teacher that ships inside the binary into a
// smaller student, on Moby-Dick, offline, on the CPU in a few minutes, and
// shows what the student learned.
//
// Everything it uses is embedded from assets/: the tokenizer (byte level),
// the teacher (made by kdnative's own init-model and train commands with
// assets/recipes/teacher.yaml), the student's architecture, the data and the
// distillation recipe (assets/recipes/distill.yaml). WriteAssets writes them
// out as files (`kdnative demo-assets DIR`), with the data also as chat
// conversations and preference pairs, for the example recipes; the demo
// itself runs from those files.
package demo

import (
	"context"
	"embed"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

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
	// DefaultOutput); its inputs go to AssetsDir(Output).
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

// DefaultOutput is the demo's output folder when none is given.
const DefaultOutput = "kdnative-demo"

// Prompt is what both models continue at the end of the demo.
const Prompt = "Call me Ishmael. Some years ago"

// AssetsDir is where the demo writes its inputs for an output folder: a
// folder "demo-assets" beside it (./demo-assets for the default output), the
// folder `kdnative demo-assets demo-assets` makes and the example recipes
// name. They stay after the demo, so that the recipe.yaml it saves in the
// output folder runs again and the example recipes run as they are.
func AssetsDir(output string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(output)), "demo-assets")
}

// Recipe is the demo's recipe for opt: the built-in distill.yaml with the
// student, teacher and data of AssetsDir(opt.Output), then opt.Sets. It is
// validated, so that a wrong --set is reported before anything is written
// or a device is opened.
func Recipe(opt Options) (train.Recipe, Assets, error) {
	if opt.Output == "" {
		opt.Output = DefaultOutput
	}
	a := Layout(AssetsDir(opt.Output))
	if filepath.Clean(opt.Output) == filepath.Clean(a.Dir) {
		return train.Recipe{}, a, fmt.Errorf("the demo keeps its inputs in %s: choose another --output", a.Dir)
	}
	text, err := assets.ReadFile("assets/recipes/distill.yaml")
	if err != nil {
		return train.Recipe{}, a, err
	}
	r, err := train.ParseRecipe(text, "distill.yaml (built in)")
	if err != nil {
		return r, a, err
	}
	r.Student, r.Teacher, r.Output = a.StudentInit, a.Teacher, opt.Output
	r.Data.Train, r.Data.Val = a.Train, a.Val
	for _, kv := range opt.Sets {
		if err := r.Set(kv); err != nil {
			return r, a, err
		}
	}
	if err := r.Validate(); err != nil {
		return r, a, fmt.Errorf("recipe: %w", err)
	}
	return r, a, nil
}

// Run writes the demo's inputs (WriteAssets), distills the teacher into the
// random student, and prints before/after, samples and what to try next.
func Run(ctx context.Context, be kdrt.Backend, opt Options) error {
	if opt.Output == "" {
		opt.Output = DefaultOutput
	}
	if opt.Log == nil {
		opt.Log = io.Discard
	}
	start := time.Now()
	r, a, err := Recipe(opt)
	if err != nil {
		return err
	}
	if _, err := WriteAssets(be, a.Dir); err != nil {
		return fmt.Errorf("demo: writing its inputs: %w", err)
	}
	tm, sm, err := sizes(be, a.Teacher, a.StudentInit)
	if err != nil {
		return err
	}
	w := opt.Log
	fmt.Fprintf(w, "kdnative demo: distilling the built-in teacher (%s) into a student (%s) on Moby-Dick,\n", tm, sm)
	fmt.Fprintf(w, "by %s, for %d steps on %s.\n", r.Objectives.KD.Divergence, r.MaxSteps, be.Describe())
	fmt.Fprintf(w, "The student and the run's files go to %s/; the teacher, the student's start and the data are in %s/.\n\n", opt.Output, a.Dir)

	sum, err := train.Run(ctx, be, r, train.Options{Resume: opt.Resume, Overwrite: opt.Overwrite, Log: w, Terminal: opt.Terminal})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nWhat the student learned (validation: %d tokens of Moby-Dick the models never trained on):\n", sum.After.Tokens)
	fmt.Fprintf(w, "  KL(teacher‖student)   %8.4f → %.4f nats/token  (%.1f× lower)\n", sum.Before.KL, sum.After.KL, sum.Before.KL/sum.After.KL)
	fmt.Fprintf(w, "  student loss          %8.4f → %.4f  (perplexity %.1f → %.1f)\n", sum.Before.Loss, sum.After.Loss, sum.Before.PPL, sum.After.PPL)
	if err := samples(be, w, a.Teacher, a.StudentInit, opt.Output); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nDone in %s. Next, try:\n", time.Since(start).Round(time.Second))
	for _, s := range NextSteps(opt.Output) {
		fmt.Fprintf(w, "  %s\n", s)
	}
	return nil
}

// NextSteps are the commands the demo suggests when it ends, for its output
// folder: each shows the student doing something that means something.
func NextSteps(output string) []string {
	a := Layout(AssetsDir(output))
	return []string{
		shellJoin("kdnative", "eval", "--model", output, "--data", a.Val, "--teacher", a.Teacher) +
			"    # its loss and KL to the teacher on held-out text",
		shellJoin("kdnative", "generate", "--model", output, "--prompt", "Call me Ishmael.", "--max-tokens", "80") +
			"    # it writes",
		shellJoin("kdnative", "train", "examples/recipes/logit-kd.yaml") +
			"    # an example recipe (from the repository; they all run on " + a.Dir + "/)",
	}
}

// shellJoin joins a command's words, quoting those a shell would split.
func shellJoin(words ...string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = shellQuote(w)
	}
	return strings.Join(q, " ")
}

func shellQuote(s string) string {
	plain := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@", r))
	}) < 0
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// printable makes a sample safe to print on one terminal line: newlines and
// tabs become spaces, other control characters (a byte-level model can emit
// any byte) and bytes that are not UTF-8 are escaped as \xNN or \uNNNN, so
// that a sample cannot move the cursor, ring the bell or garble the screen.
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n' || r == '\t' || r == '\r':
			b.WriteByte(' ')
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0x100 && !unicode.IsPrint(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case !unicode.IsPrint(r) && !unicode.IsSpace(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
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
		text := printable(tok.Decode(ids))
		fmt.Fprintf(w, "  %-15s %s\n", m.name+":", text)
	}
	return nil
}
