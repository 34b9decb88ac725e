package main

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/safetensors"
	"github.com/kdnative/kdnative/runtime"
)

// forwardConfig is what `kdnative forward` was asked to do.
type forwardConfig struct {
	ModelDir string  // a Hugging Face folder; empty means the built-in tiny model
	Seed     uint64  // the built-in model's random weights
	IDs      []int32 // the token ids to run
	SaveDir  string  // when set, save the model there as a Hugging Face folder
	Logits   string  // when set, write input_ids and logits there (safetensors)
}

func forwardCommand() *cli.Command {
	return &cli.Command{
		Name:  "forward",
		Usage: "run one forward and backward pass and print the loss and next-token predictions",
		Description: "Loads a model folder (config.json + safetensors; llama, qwen2, mistral or gpt2), or the\n" +
			"tiny model built into kdnative when --model is not given, runs the token ids through it,\n" +
			"and prints the next-token loss, the gradient norm and the top predictions.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "Hugging Face model folder (default: the built-in tiny model)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the built-in model's random weights"},
			&cli.StringFlag{Name: "ids", Value: "1,2,3,5,8,13,21,34,55,89", Usage: "comma-separated token ids"},
			&cli.StringFlag{Name: "save", Usage: "save the model to this folder (Hugging Face layout, float32)"},
			&cli.StringFlag{Name: "logits", Usage: "write input_ids and logits to this .safetensors file"},
		},
		Action: func(c *cli.Context) error {
			cfg := forwardConfig{ModelDir: c.String("model"), Seed: c.Uint64("seed"), SaveDir: c.String("save"), Logits: c.String("logits")}
			for _, f := range strings.Split(c.String("ids"), ",") {
				id, err := strconv.ParseInt(strings.TrimSpace(f), 10, 32)
				if err != nil {
					return fmt.Errorf("--ids: %q is not a token id", f)
				}
				cfg.IDs = append(cfg.IDs, int32(id))
			}
			if len(cfg.IDs) < 2 {
				return fmt.Errorf("--ids: need at least 2 tokens (the loss predicts each next one)")
			}
			be, err := openBackend(c)
			if err != nil {
				return err
			}
			return runForward(be, cfg, c.App.Writer)
		},
	}
}

func runForward(be runtime.Backend, cfg forwardConfig, w io.Writer) error {
	var m *model.Model
	var err error
	source := cfg.ModelDir
	if source == "" {
		source = fmt.Sprintf("built-in tiny model, random weights (seed %d)", cfg.Seed)
		if m, err = model.New(model.BuiltinTiny(), be); err == nil {
			err = m.InitRandom(cfg.Seed)
		}
	} else {
		m, err = model.LoadDir(cfg.ModelDir, be)
	}
	if err != nil {
		return err
	}
	c := m.Config
	fmt.Fprintf(w, "model    %s\n", source)
	fmt.Fprintf(w, "shape    %s: %d layers, width %d, %d heads (%d key/value), vocabulary %d, %.2fM parameters\n",
		c.ModelType, c.Layers, c.Hidden, c.Heads, c.KVHeads, c.Vocab, float64(c.NumParams())/1e6)
	fmt.Fprintf(w, "device   %s\n", be.Describe())

	T := len(cfg.IDs)
	targets := make([]int32, T)
	copy(targets, cfg.IDs[1:])
	targets[T-1] = runtime.IgnoreIndex
	batch := model.Batch{B: 1, T: T, IDs: cfg.IDs, Targets: targets}
	start := time.Now()
	loss, err := m.Forward(batch)
	if err != nil {
		return err
	}
	if err := m.ZeroGrad(); err != nil {
		return err
	}
	if err := m.Backward(); err != nil {
		return err
	}
	elapsed := time.Since(start)
	var ss float64
	for _, p := range m.Params() {
		s, err := be.SumSquares(p.G)
		if err != nil {
			return err
		}
		ss += s
	}
	fmt.Fprintf(w, "tokens   %v\n", cfg.IDs)
	fmt.Fprintf(w, "loss     %.4f next-token cross-entropy over %d positions (a uniform guess scores ln %d = %.4f)\n",
		loss, T-1, c.Vocab, math.Log(float64(c.Vocab)))
	fmt.Fprintf(w, "grad     norm %.4g over %d parameter tensors\n", math.Sqrt(ss), len(m.Params()))
	fmt.Fprintf(w, "time     %v for forward and backward\n", elapsed.Round(time.Microsecond))

	logits := make([]float32, m.Logits().Numel())
	if err := be.Download(m.Logits(), logits); err != nil {
		return err
	}
	last := logits[(T-1)*c.Vocab:]
	idx := make([]int, c.Vocab)
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return last[idx[a]] > last[idx[b]] })
	var lse float64
	mx := float64(last[idx[0]])
	for _, v := range last {
		lse += math.Exp(float64(v) - mx)
	}
	fmt.Fprint(w, "next     ")
	for _, id := range idx[:min(5, len(idx))] {
		fmt.Fprintf(w, "%d (p=%.3f)  ", id, math.Exp(float64(last[id])-mx)/lse)
	}
	fmt.Fprintln(w)

	if cfg.Logits != "" {
		err := safetensors.Write(cfg.Logits, []safetensors.Tensor{
			{Name: "input_ids", DType: runtime.I32, Shape: []int{1, T}, I32: cfg.IDs},
			{Name: "logits", DType: runtime.F32, Shape: []int{1, T, c.Vocab}, F32: logits},
		}, map[string]string{"format": "pt"})
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "wrote    %s\n", cfg.Logits)
	}
	if cfg.SaveDir != "" {
		if err := m.SaveDir(cfg.SaveDir, 0); err != nil {
			return err
		}
		fmt.Fprintf(w, "saved    %s\n", cfg.SaveDir)
	}
	return nil
}
