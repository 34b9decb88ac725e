package train

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/runtime/cpu"
)

// evalPoint is one evaluation of a run's metrics.jsonl.
type evalPoint struct {
	Step     int
	Loss, KL float64
}

func readEvals(t *testing.T, path string) []evalPoint {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []evalPoint
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct {
			Step int `json:"step"`
			Eval *struct {
				Loss float64 `json:"loss"`
				KL   float64 `json:"kl"`
			} `json:"eval"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if rec.Eval != nil {
			out = append(out, evalPoint{rec.Step, rec.Eval.Loss, rec.Eval.KL})
		}
	}
	return out
}

// TestBF16FollowsFP32: online distillation (SFT and forward KL from a
// teacher) in bf16 on the CPU — BF16 weights and activations, F32 master
// weights, gradients, moments, logits and losses — follows the fp32 run:
// its validation loss within 2% at every evaluation and its final KL to the
// teacher within 3% (the quality targets, here on a tiny model).
func TestBF16FollowsFP32(t *testing.T) {
	w := newWorld(t)
	evals := map[string][]evalPoint{}
	for _, prec := range []string{"fp32", "bf16"} {
		r := w.recipe(filepath.Join(w.dir, prec))
		r.Teacher, r.Precision = w.teacher, prec
		r.Objectives.SFT = &SFTTerm{Weight: 0.5}
		r.Objectives.KD = &KDTerm{Weight: 0.5, Divergence: "forward_kl", Temperature: 1}
		r.EvalEvery = 5
		_, log := run(t, r, false)
		if want := "precision " + prec; !strings.Contains(log, want) {
			t.Errorf("the log does not say %q:\n%s", want, log)
		}
		evals[prec] = readEvals(t, filepath.Join(r.Output, "metrics.jsonl"))
	}
	a, b := evals["fp32"], evals["bf16"]
	if len(a) != len(b) || len(a) < 4 {
		t.Fatalf("evaluations: %d in fp32, %d in bf16", len(a), len(b))
	}
	for i := range a {
		e := math.Abs(b[i].Loss-a[i].Loss) / a[i].Loss
		t.Logf("step %2d: loss fp32 %.4f bf16 %.4f (%.2f%%), KL fp32 %.4f bf16 %.4f", a[i].Step, a[i].Loss, b[i].Loss, 100*e, a[i].KL, b[i].KL)
		if e > 0.02 {
			t.Errorf("step %d: bf16 validation loss %.4f is %.1f%% from fp32's %.4f (at most 2%%)", a[i].Step, b[i].Loss, 100*e, a[i].Loss)
		}
	}
	last := len(a) - 1
	if e := math.Abs(b[last].KL-a[last].KL) / a[last].KL; e > 0.03 {
		t.Errorf("final KL to the teacher: bf16 %.4f is %.1f%% from fp32's %.4f (at most 3%%)", b[last].KL, 100*e, a[last].KL)
	}
	if !(a[last].Loss < a[0].Loss-0.3) {
		t.Errorf("the fp32 run did not learn (%.4f → %.4f): the comparison shows little", a[0].Loss, a[last].Loss)
	}
}

// TestTF32RefusedOnCPU: tf32 is a tensor-core mode; asking for it on the
// CPU is an error saying what to use, not a silent fp32 run.
func TestTF32RefusedOnCPU(t *testing.T) {
	w := newWorld(t)
	r := w.recipe(filepath.Join(w.dir, "tf32"))
	r.Objectives.SFT = &SFTTerm{Weight: 1}
	r.Precision = "tf32"
	var log bytes.Buffer
	_, err := Run(context.Background(), cpu.New(), r, Options{Log: &log})
	if err == nil || !strings.Contains(err.Error(), "tf32") || !strings.Contains(err.Error(), "fp32 or bf16") {
		t.Fatalf("tf32 on the CPU: %v", err)
	}
}
