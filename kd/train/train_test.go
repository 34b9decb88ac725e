package train

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	"github.com/kdnative/kdnative/runtime/cpu"
)

func run(t *testing.T, r Recipe, resume bool) (*Summary, string) {
	t.Helper()
	var log bytes.Buffer
	sum, err := Run(context.Background(), cpu.New(), r, Options{Resume: resume, Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	return sum, log.String()
}

func TestSFTLossFalls(t *testing.T) {
	w := newWorld(t)
	r := w.recipe(filepath.Join(w.dir, "sft-run"))
	r.Objectives.SFT = &SFTTerm{Weight: 1}
	sum, log := run(t, r, false)
	if !(sum.After.Loss < sum.Before.Loss-0.5) {
		t.Fatalf("validation loss %.4f → %.4f did not fall\n%s", sum.Before.Loss, sum.After.Loss, log)
	}
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl", "loss.png", "recipe.yaml", "checkpoint-20/training_state.safetensors"} {
		if _, err := os.Stat(filepath.Join(r.Output, f)); err != nil {
			t.Errorf("missing output %s", f)
		}
	}
	if _, err := model.LoadDir(r.Output, cpu.New()); err != nil {
		t.Fatalf("the final student does not load: %v", err)
	}
	f, err := os.Open(filepath.Join(r.Output, "loss.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil || img.Bounds().Dx() != 800 {
		t.Fatalf("loss.png: %v", err)
	}
}

func TestKDLossFalls(t *testing.T) {
	w := newWorld(t)
	r := w.recipe(filepath.Join(w.dir, "kd-run"))
	r.Teacher = w.teacher
	r.Objectives.KD = &KDTerm{Weight: 1, Divergence: "forward_kl", Temperature: 1}
	sum, log := run(t, r, false)
	if !sum.Before.HasKL || !(sum.After.KL < 0.7*sum.Before.KL) {
		t.Fatalf("KL to the teacher %.4f → %.4f did not fall well\n%s", sum.Before.KL, sum.After.KL, log)
	}
	t.Logf("KL %.4f → %.4f", sum.Before.KL, sum.After.KL)
}

func TestDPOLearnsPreference(t *testing.T) {
	w := newWorld(t)
	r := w.recipe(filepath.Join(w.dir, "dpo-run"))
	r.Data.Train = w.pairs
	r.Objectives.DPO = &DPOTerm{Weight: 1, Kind: "sigmoid", Beta: 0.5}
	r.MaxSteps = 15
	sum, log := run(t, r, false)
	if sum.Before.DPO == nil || !(sum.After.DPO.Loss < sum.Before.DPO.Loss-0.1) || sum.After.DPO.Accuracy < 0.99 {
		t.Fatalf("dpo: %s → %s\n%s", sum.Before, sum.After, log)
	}
}

// TestResumeIsBitIdentical: a run stopped at a checkpoint and resumed gives
// the same losses and the same final weights, to the last bit, as a run that
// never stopped — in fp32, and in bf16, where the checkpoint's weights are
// the F32 master copies and the resumed BF16 weights their rounding.
func TestResumeIsBitIdentical(t *testing.T) {
	for _, prec := range []string{"fp32", "bf16"} {
		t.Run(prec, func(t *testing.T) { testResume(t, prec) })
	}
}

func testResume(t *testing.T, precision string) {
	w := newWorld(t)
	base := w.recipe("")
	base.Precision = precision
	base.Teacher = w.teacher
	base.Objectives.SFT = &SFTTerm{Weight: 0.5}
	base.Objectives.KD = &KDTerm{Weight: 0.5, Divergence: "jsd", Beta: 0.5, Temperature: 2}
	base.MaxSteps, base.LogEvery, base.SaveEvery, base.GradAccum = 8, 1, 4, 2
	base.Schedule = ScheduleRecipe{Kind: "cosine", WarmupSteps: 2, MinLRRatio: 0.1}

	straight := base
	straight.Output = filepath.Join(w.dir, "straight")
	run(t, straight, false)

	stopped := base
	stopped.Output = filepath.Join(w.dir, "stopped")
	stopped.MaxSteps = 8
	// Stop after the step-4 checkpoint by cancelling from the log writer.
	ctx, cancel := context.WithCancel(context.Background())
	var log bytes.Buffer
	_, err := Run(ctx, cpu.New(), stopped, Options{Log: cancelAfter{&log, "step 4/8", cancel}})
	if err != ErrInterrupted {
		t.Fatalf("interrupted run: %v\n%s", err, log.String())
	}
	run(t, stopped, true)

	a, _ := os.ReadFile(filepath.Join(straight.Output, "model.safetensors"))
	b, _ := os.ReadFile(filepath.Join(stopped.Output, "model.safetensors"))
	if !bytes.Equal(a, b) {
		t.Fatal("final weights differ between the resumed run and the straight one")
	}
	la := lossLines(t, filepath.Join(straight.Output, "metrics.jsonl"))
	lb := lossLines(t, filepath.Join(stopped.Output, "metrics.jsonl"))
	if la != lb {
		t.Fatalf("losses differ:\nstraight %s\nresumed  %s", la, lb)
	}
}

// lossLines keeps the step and loss fields of a metrics file.
func lossLines(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.Index(line, `"loss":`); i >= 0 {
			j := strings.IndexAny(line[i:], ",}")
			out = append(out, line[i:i+j])
		}
	}
	return strings.Join(out, " ")
}

// cancelAfter cancels once the log has printed a marker.
type cancelAfter struct {
	w      *bytes.Buffer
	marker string
	cancel func()
}

func (c cancelAfter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if strings.Contains(c.w.String(), c.marker) {
		c.cancel()
	}
	return n, err
}

func TestRunEval(t *testing.T) {
	w := newWorld(t)
	js := filepath.Join(w.dir, "eval.json")
	var log bytes.Buffer
	res, err := RunEval(cpu.New(), EvalConfig{Model: w.student, Teacher: w.teacher, Data: w.sft, Template: "none", JSON: js}, &log)
	if err != nil {
		t.Fatal(err)
	}
	if res.Tokens == 0 || res.KLToTeacher == nil || !(res.Perplexity > 1) {
		t.Fatalf("eval %+v", res)
	}
	if data, err := os.ReadFile(js); err != nil || !strings.Contains(string(data), `"kl_to_teacher"`) {
		t.Fatalf("eval JSON: %s, %v", data, err)
	}
	// eval evaluates every example: no train/validation split is reported,
	// and off a terminal there is no progress line.
	n := len(sentences)
	if out := log.String(); strings.Contains(out, "validation)") || !strings.Contains(out, fmt.Sprintf("%d examples, all evaluated", n)) ||
		strings.Contains(out, "\r") {
		t.Errorf("eval's output off a terminal:\n%s", out)
	}
}

// TestRunEvalProgress: on a terminal eval redraws a progress line (done of
// total examples, rate, time left) and ends it before the result.
func TestRunEvalProgress(t *testing.T) {
	w := newWorld(t)
	var log bytes.Buffer
	if _, err := RunEval(cpu.New(), EvalConfig{Model: w.student, Data: w.sft, Template: "none", BatchSize: 2, Terminal: true}, &log); err != nil {
		t.Fatal(err)
	}
	n := len(sentences)
	out := log.String()
	if !strings.Contains(out, fmt.Sprintf("\reval %d/%d examples  100%%", n, n)) || !strings.Contains(out, " left") {
		t.Errorf("no progress line reaching %d/%d with a time left:\n%q", n, n, out)
	}
	last := out[strings.LastIndex(out, "\r"):]
	if !strings.Contains(last, "\nval loss") {
		t.Errorf("the result does not start on its own line after the progress: %q", last)
	}
}

// TestRunBadInput: each mistake gives a clear error before anything is
// trained, and leaves what the output folder held untouched, even under
// --overwrite (an earlier run's recipe.yaml stays until the new run starts).
func TestRunBadInput(t *testing.T) {
	w := newWorld(t)
	out := filepath.Join(w.dir, "out")
	os.MkdirAll(out, 0o755)
	keep := filepath.Join(out, "keep.txt")
	os.WriteFile(keep, []byte("mine"), 0o644)
	earlier := filepath.Join(out, "recipe.yaml")
	os.WriteFile(earlier, []byte("mine"), 0o644)
	other := filepath.Join(w.dir, "other-tokenizer")
	writeModel(t, other, 48, 2, 5)
	// Another tokenizer: the same alphabet with two ids swapped.
	var tj map[string]any
	raw, _ := os.ReadFile(filepath.Join(other, "tokenizer.json"))
	json.Unmarshal(raw, &tj)
	vocab := tj["model"].(map[string]any)["vocab"].(map[string]any)
	vocab["A"], vocab["B"] = vocab["B"], vocab["A"]
	writeJSON(t, filepath.Join(other, "tokenizer.json"), tj)
	notJSON := filepath.Join(w.dir, "bad.jsonl")
	os.WriteFile(notJSON, []byte("{\"prompt\": \"a\", \"response\": \"b\"}\nnot json\n"), 0o644)
	cases := []struct {
		name string
		edit func(r *Recipe)
		want string
	}{
		{"missing student", func(r *Recipe) { r.Student = filepath.Join(w.dir, "nope") }, "nope"},
		{"missing data", func(r *Recipe) { r.Data.Train = filepath.Join(w.dir, "missing.jsonl") }, "missing.jsonl"},
		{"bad line stops", func(r *Recipe) { r.Data.Train, r.Data.OnBadLine = notJSON, "stop" }, "bad.jsonl:2"},
		{"longer than the model", func(r *Recipe) { r.Data.MaxLen = 500 }, "data.max_len 500 is longer than the student allows (96 positions"},
		{"teacher with another tokenizer", func(r *Recipe) {
			r.Teacher = other
			r.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1}
		}, "tokenizer"},
		{"kd without teacher", func(r *Recipe) { r.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1} }, "objectives.kd needs a teacher"},
	}
	for _, c := range cases {
		r := w.recipe(out)
		r.Objectives.SFT = &SFTTerm{Weight: 1}
		c.edit(&r)
		_, err := Run(context.Background(), cpu.New(), r, Options{Overwrite: true})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to mention %q", c.name, err, c.want)
		}
		for _, f := range []string{keep, earlier} {
			if data, _ := os.ReadFile(f); string(data) != "mine" {
				t.Fatalf("%s: the output folder's %s was touched", c.name, filepath.Base(f))
			}
		}
	}
}

// TestSparseTeacherFromData: kd against a teacher given only as top-k
// log-probabilities in the data (what an API's top_logprobs or a teacher
// cache provides) lowers the student's KL, both to that sparse teacher and to
// the full teacher it was taken from.
func TestSparseTeacherFromData(t *testing.T) {
	w := newWorld(t)
	be := cpu.New()
	teacher, err := model.LoadDir(w.teacher, be)
	if err != nil {
		t.Fatal(err)
	}
	// A random teacher is nearly uniform, and its top-k would hold 3% of the
	// mass; sharpen it (scale the final norm, hence the logits) so the top-k
	// holds most of it, as a trained teacher's does.
	norm := cpu.Float32s(teacher.Param("model.norm.weight").W)
	for i := range norm {
		norm[i] *= 40
	}
	tok, err := tokenizer.LoadDir(w.teacher)
	if err != nil {
		t.Fatal(err)
	}
	const K = 8
	V := teacher.Config.Vocab
	var lines []string
	for i, s := range sentences {
		prompt := tok.Encode(fmt.Sprintf("%d: ", i))
		ids := append(append(append([]int32(nil), prompt...), tok.Encode(s)...), tok.Special().EOS)
		labels := append([]int32(nil), ids...)
		for j := range prompt {
			labels[j] = -100
		}
		if _, err := teacher.Forward(model.Batch{B: 1, T: len(ids), IDs: ids}); err != nil {
			t.Fatal(err)
		}
		logits := cpu.Float32s(teacher.Logits())
		topIDs, topLPs := make([]any, len(ids)), make([]any, len(ids))
		for p := 0; p+1 < len(ids); p++ { // position p's distribution is token p+1's entry
			row := logits[p*V : (p+1)*V]
			lse := 0.0
			mx := float64(row[0])
			for _, v := range row {
				mx = math.Max(mx, float64(v))
			}
			for _, v := range row {
				lse += math.Exp(float64(v) - mx)
			}
			lse = mx + math.Log(lse)
			order := make([]int, V)
			for j := range order {
				order[j] = j
			}
			sort.Slice(order, func(a, b int) bool { return row[order[a]] > row[order[b]] })
			var idsK []int
			var lpK []float64
			for _, j := range order[:K] {
				idsK, lpK = append(idsK, j), append(lpK, float64(row[j])-lse)
			}
			topIDs[p+1], topLPs[p+1] = idsK, lpK
		}
		line, _ := json.Marshal(map[string]any{"input_ids": ids, "labels": labels, "teacher_topk_ids": topIDs, "teacher_topk_logprobs": topLPs})
		lines = append(lines, string(line))
	}
	dataPath := filepath.Join(w.dir, "topk.jsonl")
	os.WriteFile(dataPath, []byte(strings.Join(lines, "\n")+"\n"), 0o644)

	r := w.recipe(filepath.Join(w.dir, "sparse-run"))
	r.Data.Train = dataPath
	r.Objectives.KD = &KDTerm{Weight: 1, Divergence: "forward_kl", Temperature: 1}
	r.MaxSteps = 30
	sum, log := run(t, r, false)
	if !sum.Before.HasKL || !(sum.After.KL < 0.7*sum.Before.KL) {
		t.Fatalf("KL to the sparse teacher %.4f → %.4f did not fall well\n%s", sum.Before.KL, sum.After.KL, log)
	}
	// And against the full teacher it was taken from.
	rows, _, _, err := data.LoadSFT(dataPath, nil, data.Options{MaxLen: 64})
	if err != nil {
		t.Fatal(err)
	}
	initial, _ := model.LoadDir(w.student, be)
	trained, _ := model.LoadDir(r.Output, be)
	e0, err := EvaluateSFT(be, initial, teacher, rows, 4, 0, loss.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e1, err := EvaluateSFT(be, trained, teacher, rows, 4, 0, loss.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !(e1.KL < 0.7*e0.KL) {
		t.Fatalf("KL to the full teacher %.4f → %.4f did not fall well", e0.KL, e1.KL)
	}
	t.Logf("KL to the sparse teacher %.4f → %.4f; to the full teacher %.4f → %.4f", sum.Before.KL, sum.After.KL, e0.KL, e1.KL)
}

// TestFeatureDistillation: matching hidden states (MSE through learned
// projections, the teacher being wider) lowers the feature loss, and a run
// with feature terms resumes bit-identically (the projections and their
// moments are in the training state).
func TestFeatureDistillation(t *testing.T) {
	w := newWorld(t)
	for _, kind := range []string{"mse", "cosine", "relation"} {
		r := w.recipe(filepath.Join(w.dir, "feature-"+kind))
		r.Teacher = w.teacher
		r.Objectives.SFT = &SFTTerm{Weight: 0.1}
		r.Objectives.Feature = &FeatureTerm{Weight: 1, Loss: kind, Layers: "auto"}
		r.MaxSteps, r.LogEvery = 25, 1
		_, log := run(t, r, false)
		first, last := featureAt(t, r.Output, 1), featureAt(t, r.Output, 25)
		if !(last < 0.8*first) {
			t.Fatalf("%s feature loss %.5f → %.5f did not fall\n%s", kind, first, last, log)
		}
		t.Logf("%s: feature loss %.5f → %.5f", kind, first, last)
	}

	base := w.recipe("")
	base.Teacher = w.teacher
	base.Objectives.SFT = &SFTTerm{Weight: 0.5}
	base.Objectives.Feature = &FeatureTerm{Weight: 1, Loss: "mse", Layers: "1:1,2:2"}
	base.MaxSteps, base.SaveEvery, base.LogEvery = 6, 3, 1
	straight := base
	straight.Output = filepath.Join(w.dir, "f-straight")
	run(t, straight, false)
	stopped := base
	stopped.Output = filepath.Join(w.dir, "f-stopped")
	ctx, cancel := context.WithCancel(context.Background())
	var log bytes.Buffer
	if _, err := Run(ctx, cpu.New(), stopped, Options{Log: cancelAfter{&log, "step 3/6", cancel}}); err != ErrInterrupted {
		t.Fatalf("%v\n%s", err, log.String())
	}
	run(t, stopped, true)
	if a, b := lossLines(t, filepath.Join(straight.Output, "metrics.jsonl")), lossLines(t, filepath.Join(stopped.Output, "metrics.jsonl")); a != b {
		t.Fatalf("losses differ after resume:\n%s\n%s", a, b)
	}
}

// featureAt reads the feature loss of a step from metrics.jsonl.
func featureAt(t *testing.T, out string, step int) float64 {
	data, err := os.ReadFile(filepath.Join(out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		var rec struct {
			Step    int      `json:"step"`
			Feature *float64 `json:"feature"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Step == step && rec.Feature != nil {
			return *rec.Feature
		}
	}
	t.Fatalf("no feature loss at step %d", step)
	return 0
}

func TestBench(t *testing.T) {
	w := newWorld(t)
	var log bytes.Buffer
	res, err := Bench(cpu.New(), BenchConfig{Model: w.student, B: 2, T: 16, Steps: 2}, &log)
	if err != nil || !(res.TokensPerSecond > 0) || !(res.GFLOPs > 0) || !strings.Contains(log.String(), "tokens/s") {
		t.Fatalf("%+v %v\n%s", res, err, log.String())
	}
	if _, err := Bench(cpu.New(), BenchConfig{Model: w.student, B: 1, T: 500, Steps: 1}, &log); err == nil || !strings.Contains(err.Error(), "longer than the model allows") {
		t.Fatalf("too long: %v", err)
	}
}

// TestStepNormIsItsOwn: the gradient norm a step reports is read with its
// losses in one download at the step's end; it must be that step's norm (a
// read made before the update was queued gave the previous step's, 0 at
// step 1, and each later step the one before).
func TestStepNormIsItsOwn(t *testing.T) {
	w := newWorld(t)
	r := w.recipe(filepath.Join(w.dir, "norm-run"))
	r.Teacher = w.teacher
	r.Objectives.KD = &KDTerm{Weight: 1, Divergence: "forward_kl", Temperature: 2}
	r.MaxSteps, r.LogEvery = 2, 1
	run(t, r, false)
	b, err := os.ReadFile(filepath.Join(r.Output, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var norms []float64
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var rec struct {
			Step     int      `json:"step"`
			GradNorm *float64 `json:"grad_norm"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.GradNorm != nil {
			norms = append(norms, *rec.GradNorm)
		}
	}
	if len(norms) != 2 || !(norms[0] > 0) || !(norms[1] > 0) || norms[0] == norms[1] {
		t.Fatalf("the steps' gradient norms are %v, want two different positive norms", norms)
	}
}
