// Command plot draws the curves of training runs side by side into one PNG
// (kd/train's PlotCompare) and prints, per curve, how far the later runs
// are from the first at the steps they share:
//
//	go run ./scripts/precision/plot -o docs/precision-demo.png -title "built-in demo" \
//	    fp32=runs/demo-fp32/metrics.jsonl bf16=runs/demo-bf16/metrics.jsonl
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/kdnative/kdnative/kd/train"
)

func main() {
	out := flag.String("o", "precision.png", "the PNG to write")
	title := flag.String("title", "runs", "the plot's title")
	flag.Parse()
	var runs []train.PlotRun
	for _, a := range flag.Args() {
		label, path, ok := strings.Cut(a, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "plot: %q: want label=metrics.jsonl\n", a)
			os.Exit(2)
		}
		runs = append(runs, train.PlotRun{Label: label, Metrics: path})
	}
	if len(runs) < 1 {
		fmt.Fprintln(os.Stderr, "plot: give label=metrics.jsonl for each run")
		os.Exit(2)
	}
	if err := train.PlotCompare(*out, *title, runs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The evaluations as a table: step, then loss and KL per run, and the
	// relative difference of each later run from the first.
	evals := make([]map[int][2]float64, len(runs))
	var steps []int
	for i, r := range runs {
		evals[i] = readEvals(r.Metrics)
		if i == 0 {
			for s := range evals[0] {
				steps = append(steps, s)
			}
		}
	}
	slices.Sort(steps)
	fmt.Printf("| step |")
	for _, r := range runs {
		fmt.Printf(" %s val loss | %s KL |", r.Label, r.Label)
	}
	fmt.Println()
	worstL, worstKL := 0.0, 0.0
	for _, s := range steps {
		fmt.Printf("| %d |", s)
		ref := evals[0][s]
		for i := range runs {
			e, ok := evals[i][s]
			if !ok {
				fmt.Printf(" – | – |")
				continue
			}
			fmt.Printf(" %.4f | %.4f |", e[0], e[1])
			if i > 0 {
				worstL = math.Max(worstL, math.Abs(e[0]-ref[0])/ref[0])
			}
		}
		fmt.Println()
	}
	last := steps[len(steps)-1]
	for i := 1; i < len(runs); i++ {
		if ref := evals[0][last]; ref[1] != 0 {
			worstKL = math.Max(worstKL, math.Abs(evals[i][last][1]-ref[1])/ref[1])
		}
	}
	fmt.Printf("largest validation-loss difference %.2f%%; final KL difference %.2f%%; wrote %s\n", 100*worstL, 100*worstKL, *out)
}

func readEvals(path string) map[int][2]float64 {
	out := map[int][2]float64{}
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Step int `json:"step"`
			Eval *struct {
				Loss float64 `json:"loss"`
				KL   float64 `json:"kl"`
			} `json:"eval"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Eval != nil {
			out[rec.Step] = [2]float64{rec.Eval.Loss, rec.Eval.KL}
		}
	}
	return out
}
