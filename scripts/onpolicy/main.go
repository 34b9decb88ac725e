// Command onpolicy measures students distilled from the demo's teacher, for
// docs/on-policy.md: for each training run folder it reads metrics.jsonl
// (optimizer steps, the wall time of the steps split into generation,
// teacher scoring and training) and measures the final student against the
// teacher — the forward KL(teacher ‖ student) on held-out text (every
// validation line, as kdnative's evaluation computes it) and the reverse
// KL(student ‖ teacher) on the student's own samples (the first -prompts
// validation lines' first -prompt-tokens tokens as prompts, one sample each
// at temperature 1 with fixed seeds, the KL over the whole vocabulary at
// every sampled position). It prints a Markdown table.
//
//	go run ./scripts/onpolicy -assets demo-assets runs/kd runs/onpolicy-jsd runs/onpolicy-rkl
//
// scripts/onpolicy/measure.sh trains the runs and calls it.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/kd/rollout"
	"github.com/kdnative/kdnative/kd/train"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	"github.com/kdnative/kdnative/runtime/cpu"
)

func main() {
	assets := flag.String("assets", "demo-assets", "the folder `kdnative demo-assets` wrote")
	prompts := flag.Int("prompts", 64, "validation prompts the student answers")
	promptTokens := flag.Int("prompt-tokens", 32, "tokens of each validation line that are the prompt")
	maxNew := flag.Int("max-new-tokens", 96, "tokens each answer has at most")
	seed := flag.Uint64("seed", 1000, "prompt i's answer is sampled with seed+i")
	flag.Parse()
	if err := run(*assets, flag.Args(), *prompts, *promptTokens, *maxNew, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "onpolicy:", err)
		os.Exit(1)
	}
}

// timing sums a run's step records.
type timing struct {
	steps                     int
	step, gen, score, trainer float64
}

func readTiming(dir string) (timing, error) {
	f, err := os.Open(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		return timing{}, err
	}
	defer f.Close()
	var tm timing
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var rec struct {
			Step   int      `json:"step"`
			Loss   *float64 `json:"loss"`
			StepS  float64  `json:"step_s"`
			GenS   *float64 `json:"gen_s"`
			ScoreS *float64 `json:"score_s"`
			TrainS *float64 `json:"train_s"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec.Loss == nil {
			continue
		}
		tm.steps = max(tm.steps, rec.Step)
		tm.step += rec.StepS
		if rec.GenS != nil {
			tm.gen += *rec.GenS
			tm.score += *rec.ScoreS
			tm.trainer += *rec.TrainS
		} else {
			tm.trainer += rec.StepS
		}
	}
	return tm, sc.Err()
}

func run(assets string, runs []string, nPrompts, promptTokens, maxNew int, seed uint64) error {
	if len(runs) == 0 {
		return fmt.Errorf("give the run folders to measure")
	}
	be := cpu.New()
	teacherDir := filepath.Join(assets, "teacher")
	teacher, err := model.LoadDir(teacherDir, be)
	if err != nil {
		return err
	}
	tok, err := tokenizer.LoadDir(teacherDir)
	if err != nil {
		return err
	}
	val, _, _, err := data.LoadSFT(filepath.Join(assets, "val.jsonl"), tok, data.Options{MaxLen: 128, Template: "none", Vocab: teacher.Config.Vocab})
	if err != nil {
		return err
	}
	if len(val) == 0 {
		return fmt.Errorf("%s: no validation lines", filepath.Join(assets, "val.jsonl"))
	}
	var ps [][]int32
	var seeds []uint64
	for i, e := range val[:min(nPrompts, len(val))] {
		ps = append(ps, e.Tokens[:min(promptTokens, len(e.Tokens)-1)])
		seeds = append(seeds, seed+uint64(i))
	}
	stops := []int32{tok.Special().EOS}
	fmt.Printf("| run | optimizer steps | wall time of the steps | generation | teacher scoring | training | forward KL on held-out text | reverse KL on student samples |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|\n")
	for _, dir := range runs {
		tm, err := readTiming(dir)
		if err != nil {
			return err
		}
		student, err := model.LoadDir(dir, be)
		if err != nil {
			return err
		}
		ev, err := train.EvaluateSFT(be, student, teacher, val, 16, tok.Special().EOS, loss.Options{})
		if err != nil {
			return err
		}
		s := rollout.NewSampler(student)
		rkl, tokens, _, err := rollout.ReverseKLOnSamples(context.Background(), s, student, teacher, nil, ps, seeds,
			rollout.Params{Temperature: 1, MaxNewTokens: maxNew, MaxLen: 128, StopTokens: stops}, tok.Special().EOS, loss.Options{})
		s.Close()
		if err != nil {
			return err
		}
		pct := func(x float64) string { return fmt.Sprintf("%.0f s (%.0f%%)", x, 100*x/max(tm.step, 1e-9)) }
		fmt.Printf("| %s | %d | %.0f s | %s | %s | %s | %.4f | %.4f (%d tokens) |\n", filepath.Base(dir), tm.steps, tm.step,
			pct(tm.gen), pct(tm.score), pct(tm.trainer), ev.KL, rkl, tokens)
	}
	fmt.Printf("\nforward KL: KL(teacher ‖ student) per token over the %d validation lines; reverse KL: KL(student ‖ teacher) over the whole vocabulary at every position of one sample per prompt (the first %d validation lines' first %d tokens, temperature 1, seeds %d+i, at most %d new tokens).\n",
		len(val), len(ps), promptTokens, seed, maxNew)
	return nil
}
