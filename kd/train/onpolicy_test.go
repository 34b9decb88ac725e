package train

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kdnative/kdnative/kd/serve"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// demoWorld is the demo's teacher (trained on Moby-Dick), a random student
// of the demo's student shape with the same byte-level tokenizer, and
// Moby-Dick lines as {"text"} data: a teacher with something to teach.
type demoWorld struct {
	dir, teacher, student, train, val string
}

func newDemoWorld(t *testing.T, lines int) *demoWorld {
	t.Helper()
	dir := t.TempDir()
	w := &demoWorld{dir: dir, teacher: filepath.Join(dir, "teacher"), student: filepath.Join(dir, "student"),
		train: filepath.Join(dir, "train.jsonl"), val: filepath.Join(dir, "val.jsonl")}
	for _, d := range []string{w.teacher, w.student} {
		os.MkdirAll(d, 0o755)
		for _, f := range []string{"../demo/assets/tokenizer/tokenizer.json", "../demo/assets/tokenizer/tokenizer_config.json"} {
			copyTestFile(t, f, filepath.Join(d, filepath.Base(f)))
		}
	}
	for _, f := range []string{"config.json", "model.safetensors"} {
		copyTestFile(t, "../demo/assets/teacher/"+f, filepath.Join(w.teacher, f))
	}
	raw, err := os.ReadFile("../demo/assets/student-config.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := model.ParseConfig(raw, "student-config.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(c, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.InitRandom(1); err != nil {
		t.Fatal(err)
	}
	if err := m.SaveDir(w.student, 0); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ src, dst string }{{"train", w.train}, {"val", w.val}} {
		texts := demoLines(t, "../demo/assets/data/"+f.src+".jsonl.gz", lines)
		if f.src == "val" {
			texts = texts[:min(len(texts), 16)]
		}
		var b strings.Builder
		for _, s := range texts {
			line, _ := json.Marshal(map[string]string{"text": s})
			b.Write(append(line, '\n'))
		}
		os.WriteFile(f.dst, []byte(b.String()), 0o644)
	}
	return w
}

func copyTestFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// demoLines are the first n texts of a gzipped {"text"} file.
func demoLines(t *testing.T, path string, n int) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(zr)
	for sc.Scan() && len(out) < n {
		var rec struct{ Text string }
		json.Unmarshal(sc.Bytes(), &rec)
		out = append(out, rec.Text)
	}
	return out
}

// recipe is an on-policy run of the demo world: prompts are each line's
// first 24 tokens.
func (w *demoWorld) recipe(out string, term OnPolicyTerm) Recipe {
	r := DefaultRecipe()
	r.Student, r.Teacher, r.Output = w.student, w.teacher, out
	r.Data.Train, r.Data.Val, r.Data.MaxLen, r.Data.Template = w.train, w.val, 128, "none"
	r.Optim.LR, r.Optim.WeightDecay = 4e-3, 0
	r.Schedule.Kind = "constant"
	r.BatchSize, r.MaxSteps, r.LogEvery, r.Seed = 8, 30, 10, 7
	if term.PromptTokens == 0 {
		term.PromptTokens = 24
	}
	if term.MaxNewTokens == 0 {
		term.MaxNewTokens = 40
	}
	if term.Weight == 0 {
		term.Weight = 1
	}
	r.Objectives.OnPolicy = &term
	return r
}

func ptr[T any](v T) *T { return &v }

// evalRecords are metrics.jsonl's evaluation records.
func evalRecords(t *testing.T, out string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if ev, ok := rec["eval"].(map[string]any); ok {
			recs = append(recs, ev)
		}
	}
	return recs
}

// TestOnPolicyLearnsFromTheTeacher: with either loss, training on its own
// samples brings the student's reverse KL to the teacher, measured on its
// own samples at every evaluation, well down; the progress line and the
// metrics carry the generation/scoring/training split, and the samples
// are logged and written to samples.jsonl.
func TestOnPolicyLearnsFromTheTeacher(t *testing.T) {
	w := newDemoWorld(t, 96)
	for _, c := range []struct {
		name string
		term OnPolicyTerm
		fall float64 // measured: 0.69 (jsd) and 0.73 (reverse_kl_pg)
	}{
		{"jsd", OnPolicyTerm{Loss: "jsd", Beta: ptr(0.5)}, 0.8},
		{"reverse_kl_pg", OnPolicyTerm{Loss: "reverse_kl_pg"}, 0.85},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := w.recipe(filepath.Join(w.dir, c.name), c.term)
			r.MaxSteps, r.BatchSize = 60, 4
			_, log := run(t, r, false)
			evs := evalRecords(t, r.Output)
			if len(evs) != 2 {
				t.Fatalf("%d evaluations\n%s", len(evs), log)
			}
			before, after := evs[0]["reverse_kl_samples"].(float64), evs[1]["reverse_kl_samples"].(float64)
			if !(after < c.fall*before) {
				t.Fatalf("reverse KL on the student's samples %.4f → %.4f did not fall below %g of where it began\n%s", before, after, c.fall, log)
			}
			t.Logf("reverse KL on student samples %.4f → %.4f", before, after)
			for _, want := range []string{"gen ", "score ", "train ", "sample 1: ", "on 8 student samples"} {
				if !strings.Contains(log, want) {
					t.Errorf("the log has no %q:\n%s", want, log)
				}
			}
			m := metricLines(t, r.Output)
			last := m[len(m)-1]
			for _, k := range []string{"gen_s", "score_s", "train_s", "onpolicy", "sampled_rows"} {
				if _, ok := last[k]; !ok {
					t.Errorf("metrics record has no %s: %v", k, last)
				}
			}
			if last["sampled_rows"].(float64) != 4 || last["gen_s"].(float64) <= 0 {
				t.Errorf("metrics %v", last)
			}
			samples, err := os.ReadFile(filepath.Join(r.Output, "samples.jsonl"))
			if err != nil || strings.Count(string(samples), "\n") != 16 || !strings.Contains(string(samples), `"step":60`) {
				t.Fatalf("samples.jsonl (%v):\n%s", err, samples)
			}
		})
	}
}

// metricLines are metrics.jsonl's training-step records.
func metricLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var rec map[string]any
		json.Unmarshal([]byte(line), &rec)
		if _, ok := rec["loss"]; ok {
			recs = append(recs, rec)
		}
	}
	return recs
}

// TestOnPolicyResumeIsBitIdentical: a run stopped after a checkpoint and
// resumed samples the same sequences as one that ran straight through —
// the sampling state is in the checkpoint — so its final weights, losses
// and logged samples are the same bytes; λ < 1 mixes sampled and data
// batches, and sft mixes in on the same rows.
func TestOnPolicyResumeIsBitIdentical(t *testing.T) {
	w := newDemoWorld(t, 48)
	base := w.recipe("", OnPolicyTerm{Loss: "reverse_kl_pg", Lambda: ptr(0.6), Discount: 0.5, Temperature: ptr(0.9), TopP: 0.95, EvalSamples: ptr(4)})
	base.Objectives.SFT = &SFTTerm{Weight: 0.2}
	base.MaxSteps, base.LogEvery, base.SaveEvery, base.EvalEvery, base.GradAccum = 8, 1, 4, 4, 2

	straight := base
	straight.Output = filepath.Join(w.dir, "straight")
	run(t, straight, false)

	stopped := base
	stopped.Output = filepath.Join(w.dir, "stopped")
	ctx, cancel := context.WithCancel(context.Background())
	var log bytes.Buffer
	_, err := Run(ctx, cpu.New(), stopped, Options{Log: cancelAfter{&log, "step 4/8", cancel}})
	if err != ErrInterrupted {
		t.Fatalf("interrupted run: %v\n%s", err, log.String())
	}
	run(t, stopped, true)
	sameRun(t, straight.Output, stopped.Output)
}

// sameRun compares two runs' final weights, losses and samples.
func sameRun(t *testing.T, a, b string) {
	t.Helper()
	wa, _ := os.ReadFile(filepath.Join(a, "model.safetensors"))
	wb, _ := os.ReadFile(filepath.Join(b, "model.safetensors"))
	if len(wa) == 0 || !bytes.Equal(wa, wb) {
		t.Fatal("final weights differ between the resumed run and the straight one")
	}
	if la, lb := lossLines(t, filepath.Join(a, "metrics.jsonl")), lossLines(t, filepath.Join(b, "metrics.jsonl")); la != lb {
		t.Fatalf("losses differ:\nstraight %s\nresumed  %s", la, lb)
	}
	sa, _ := os.ReadFile(filepath.Join(a, "samples.jsonl"))
	sb, _ := os.ReadFile(filepath.Join(b, "samples.jsonl"))
	if len(sa) == 0 || !bytes.Equal(sa, sb) {
		t.Fatalf("samples differ:\n%s\n---\n%s", sa, sb)
	}
}

func init() {
	// Tests do not wait for the teacher endpoint's production backoff.
	endpointBackoff = time.Millisecond
}

// teacherServer serves the demo world's teacher with kdnative serve's
// handler; every request after the first okRequests gets 503.
func teacherServer(t *testing.T, w *demoWorld, okRequests int64) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	s, err := serve.New(cpu.New(), serve.Config{Model: w.teacher, ModelName: "teacher"})
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if n.Add(1) > okRequests {
			rw.Header().Set("Content-Type", "application/json")
			rw.WriteHeader(http.StatusServiceUnavailable)
			rw.Write([]byte(`{"error":{"message":"the teacher is down for maintenance","type":"server_error"}}`))
			return
		}
		s.ServeHTTP(rw, r)
	}))
	t.Cleanup(func() { ts.Close(); s.Close() })
	return ts, &n
}

// TestOnPolicyEndpointFailsThenResumes: with the teacher behind an
// endpoint (kdnative serve), a run whose endpoint stops answering retries
// with backoff, then stops with an error naming the endpoint, after
// writing a checkpoint of the last whole step; --resume against the
// endpoint back up (at another address) ends with the same weights, losses
// and samples as a run that never failed.
func TestOnPolicyEndpointFailsThenResumes(t *testing.T) {
	w := newDemoWorld(t, 48)
	term := OnPolicyTerm{Loss: "reverse_kl_pg", Lambda: ptr(0.75), TeacherModel: "teacher", EvalSamples: ptr(4)}
	base := w.recipe("", term)
	base.Teacher = ""
	base.MaxSteps, base.LogEvery, base.SaveEvery = 8, 1, 0

	healthy, _ := teacherServer(t, w, 1<<40)
	straight := base
	straight.Objectives.OnPolicy = ptr(*base.Objectives.OnPolicy)
	straight.Objectives.OnPolicy.TeacherEndpoint = healthy.URL + "/v1"
	straight.Output = filepath.Join(w.dir, "straight")
	run(t, straight, false)

	// 1 tokenizer probe, 1 evaluation, then a scoring request per step
	// whose batch the student sampled: the endpoint fails during step 5 or
	// later, whatever the data batches.
	failing, n := teacherServer(t, w, 6)
	stopped := base
	stopped.Objectives.OnPolicy = ptr(*base.Objectives.OnPolicy)
	stopped.Objectives.OnPolicy.TeacherEndpoint = failing.URL + "/v1"
	stopped.Output = filepath.Join(w.dir, "stopped")
	var log bytes.Buffer
	_, err := Run(context.Background(), cpu.New(), stopped, Options{Log: &log})
	if err == nil {
		t.Fatalf("the run did not fail\n%s", log.String())
	}
	msg := err.Error()
	t.Logf("the failing run said: %v", msg)
	for _, want := range []string{"teacher endpoint " + failing.URL, "503", "down for maintenance", "after 6 attempts", "--resume"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q: %v", want, msg)
		}
	}
	if got := n.Load(); got != 6+6 {
		t.Errorf("%d requests, want 6 answered and 6 attempts of the failing one", got)
	}
	ckpts, _ := filepath.Glob(filepath.Join(stopped.Output, "checkpoint-*"))
	if len(ckpts) != 1 || !strings.Contains(msg, ckpts[0]) {
		t.Fatalf("checkpoints %v; error %v", ckpts, msg)
	}

	back, _ := teacherServer(t, w, 1<<40)
	stopped.Objectives.OnPolicy.TeacherEndpoint = back.URL + "/v1"
	run(t, stopped, true)
	sameRun(t, straight.Output, stopped.Output)
}

// TestOnPolicyRefusesTeachers: an endpoint that cannot be reached, or that
// tokenizes otherwise than the student, and a local teacher with another
// tokenizer, are refused before training, saying why.
func TestOnPolicyRefusesTeachers(t *testing.T) {
	w := newDemoWorld(t, 16)
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	other := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		rw.Write([]byte(`{"choices":[{"index":0,"text":"","prompt_token_ids":[1, 2, 3],"prompt_logprobs":[null,{"2":{"logprob":-1,"rank":1}},{"3":{"logprob":-1,"rank":1}}]}]}`))
	}))
	defer other.Close()
	otherTok := filepath.Join(w.dir, "other-teacher")
	os.MkdirAll(otherTok, 0o755)
	for _, f := range []string{"config.json", "model.safetensors"} {
		copyTestFile(t, filepath.Join(w.teacher, f), filepath.Join(otherTok, f))
	}
	// the same tokenizer with a special token renamed: another tokenizer
	raw, _ := os.ReadFile(filepath.Join(w.teacher, "tokenizer.json"))
	os.WriteFile(filepath.Join(otherTok, "tokenizer.json"), []byte(strings.ReplaceAll(string(raw), "<|im_start|>", "<|start|>")), 0o644)
	copyTestFile(t, filepath.Join(w.teacher, "tokenizer_config.json"), filepath.Join(otherTok, "tokenizer_config.json"))
	for _, c := range []struct {
		name string
		term OnPolicyTerm
		want string
	}{
		{"unreachable", OnPolicyTerm{Loss: "reverse_kl_pg", TeacherEndpoint: gone.URL, TeacherModel: "t"}, "cannot reach"},
		{"tokenizer", OnPolicyTerm{Loss: "reverse_kl_pg", TeacherEndpoint: other.URL, TeacherModel: "t"}, "tokenizes differently"},
		{"local tokenizer", OnPolicyTerm{Loss: "jsd", Teacher: otherTok}, "another tokenizer"},
		{"key", OnPolicyTerm{Loss: "reverse_kl_pg", TeacherEndpoint: other.URL, TeacherModel: "t", TeacherAPIKeyEnv: "KDNATIVE_TEST_NO_SUCH_KEY"}, "KDNATIVE_TEST_NO_SUCH_KEY is empty or not set"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := w.recipe(filepath.Join(w.dir, strings.ReplaceAll(c.name, " ", "-")), c.term)
			r.Teacher = ""
			var log bytes.Buffer
			_, err := Run(context.Background(), cpu.New(), r, Options{Log: &log})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v, want an error saying %q\n%s", err, c.want, log.String())
			}
		})
	}
}

// TestOnPolicyNeedsPrompts: rows learnt whole ({"text"}) have no prompt to
// sample from: refused, naming prompt_tokens (with it they train: the
// other tests).
func TestOnPolicyNeedsPrompts(t *testing.T) {
	w := newDemoWorld(t, 16)
	r := w.recipe(filepath.Join(w.dir, "np"), OnPolicyTerm{Loss: "jsd"})
	r.Objectives.OnPolicy.PromptTokens = 0
	_, err := Run(context.Background(), cpu.New(), r, Options{})
	if err == nil || !strings.Contains(err.Error(), "16 of 16 rows") || !strings.Contains(err.Error(), "prompt_tokens") {
		t.Fatalf("%v", err)
	}
}

// TestOnPolicyRecipeChecks: every objectives.onpolicy key out of its domain
// is reported, naming the key.
func TestOnPolicyRecipeChecks(t *testing.T) {
	base := DefaultRecipe()
	base.Student, base.Data.Train, base.Output, base.MaxSteps = "s", "d.jsonl", "o", 1
	for _, c := range []struct {
		edit func(r *Recipe, o *OnPolicyTerm)
		want string
	}{
		{func(r *Recipe, o *OnPolicyTerm) {}, "objectives.onpolicy: needs a teacher"},
		{func(r *Recipe, o *OnPolicyTerm) { o.Weight = 0 }, "objectives.onpolicy.weight: 0 must be positive"},
		{func(r *Recipe, o *OnPolicyTerm) { o.Lambda = ptr(1.5) }, "objectives.onpolicy.lambda: 1.5 must be in [0, 1]"},
		{func(r *Recipe, o *OnPolicyTerm) { o.Loss = "kl" }, `objectives.onpolicy.loss: "kl" is not one of`},
		{func(r *Recipe, o *OnPolicyTerm) { o.Temperature = ptr(0.0) }, "objectives.onpolicy.temperature: 0 must be positive"},
		{func(r *Recipe, o *OnPolicyTerm) { o.TopP = 2 }, "objectives.onpolicy.top_p: 2 must be in (0, 1]"},
		{func(r *Recipe, o *OnPolicyTerm) { o.MaxNewTokens = -1 }, "objectives.onpolicy.max_new_tokens"},
		{func(r *Recipe, o *OnPolicyTerm) { o.Beta = ptr(-0.5) }, "objectives.onpolicy.beta: -0.5 must be in [0, 1]"},
		{func(r *Recipe, o *OnPolicyTerm) { o.Loss, o.Beta = "reverse_kl_pg", ptr(0.5) }, "objectives.onpolicy.beta: is JSD's β"},
		{func(r *Recipe, o *OnPolicyTerm) { o.Discount = 0.5 }, "objectives.onpolicy.discount: applies to loss reverse_kl_pg only"},
		{func(r *Recipe, o *OnPolicyTerm) { o.Loss, o.Discount = "reverse_kl_pg", 2 }, "objectives.onpolicy.discount: 2 must be in [0, 1]"},
		{func(r *Recipe, o *OnPolicyTerm) { o.TeacherEndpoint, o.TeacherModel = "http://x/v1", "m" }, "objectives.onpolicy.loss: jsd compares"},
		{func(r *Recipe, o *OnPolicyTerm) { o.Loss, o.TeacherEndpoint = "reverse_kl_pg", "http://x/v1" }, "objectives.onpolicy.teacher_model: required"},
		{func(r *Recipe, o *OnPolicyTerm) {
			o.Loss, o.TeacherEndpoint, o.TeacherModel = "reverse_kl_pg", "x:8000", "m"
		}, "not an http:// or https:// URL"},
		{func(r *Recipe, o *OnPolicyTerm) {
			o.Loss, o.TeacherEndpoint, o.TeacherModel, o.SeqKD = "reverse_kl_pg", "http://x/v1", "m", true
		}, "objectives.onpolicy.seq_kd"},
		{func(r *Recipe, o *OnPolicyTerm) { o.Teacher, o.TeacherEndpoint = "self", "http://x/v1" }, "either teacher_endpoint or teacher"},
		{func(r *Recipe, o *OnPolicyTerm) { o.Teacher, o.TeacherModel = "self", "m" }, "go with teacher_endpoint"},
		{func(r *Recipe, o *OnPolicyTerm) { o.Teacher, r.Data.Pack = "self", true }, "set data.pack false"},
		{func(r *Recipe, o *OnPolicyTerm) { o.Teacher, o.PromptTokens = "self", -1 }, "objectives.onpolicy.prompt_tokens"},
		{func(r *Recipe, o *OnPolicyTerm) { o.Teacher, o.EvalSamples = "self", ptr(-1) }, "objectives.onpolicy.eval_samples"},
		{func(r *Recipe, o *OnPolicyTerm) { o.Teacher, r.Objectives.DPO = "self", &DPOTerm{Weight: 1} }, "cannot be mixed with sft, kd, feature, onpolicy or rl"},
	} {
		r := base
		o := &OnPolicyTerm{Weight: 1}
		r.Objectives.OnPolicy = o
		c.edit(&r, o)
		err := r.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, want an error saying %q", err, c.want)
		}
	}
	// A recipe file with the term parses strictly, and a typo is named.
	_, err := ParseRecipe([]byte("objectives:\n  onpolicy: {weight: 1, lamda: 0.5}\n"), "r.yaml")
	if err == nil || !strings.Contains(err.Error(), "unknown key objectives.onpolicy.lamda (did you mean lambda?)") {
		t.Fatalf("%v", err)
	}
	r, err := ParseRecipe([]byte("teacher: t\nobjectives:\n  onpolicy: {weight: 1, lambda: 0.5, loss: reverse_kl_pg, discount: 1}\n"), "r.yaml")
	if err != nil || *r.Objectives.OnPolicy.Lambda != 0.5 || r.Objectives.OnPolicy.lossName() != "reverse_kl_pg" {
		t.Fatalf("%+v %v", r.Objectives.OnPolicy, err)
	}
}
