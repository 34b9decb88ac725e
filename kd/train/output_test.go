package train

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// runErr runs a recipe and returns its error and log.
func runErr(r Recipe, opt Options) (string, error) {
	var log bytes.Buffer
	opt.Log = &log
	_, err := Run(context.Background(), cpu.New(), r, opt)
	return log.String(), err
}

// entries lists a folder's names.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// TestTrainRefusesUsedOutput: a run into a folder that holds anything is
// refused without --resume or --overwrite, leaving it as it was;
// --overwrite replaces the earlier run — none of its checkpoints survive to
// be resumed later — and leaves files that are not kdnative's.
func TestTrainRefusesUsedOutput(t *testing.T) {
	w := newWorld(t)
	r := w.recipe(filepath.Join(w.dir, "run"))
	r.Objectives.SFT = &SFTTerm{Weight: 1}
	r.MaxSteps, r.SaveEvery = 4, 2
	run(t, r, false)
	mine := filepath.Join(r.Output, "notes.txt")
	os.WriteFile(mine, []byte("mine"), 0o644)
	before := entries(t, r.Output)
	metrics, _ := os.ReadFile(filepath.Join(r.Output, "metrics.jsonl"))

	again := r
	again.MaxSteps, again.SaveEvery = 3, 0
	_, err := runErr(again, Options{})
	if err == nil || !strings.Contains(err.Error(), r.Output+" is not empty") || !strings.Contains(err.Error(), "--resume") || !strings.Contains(err.Error(), "--overwrite") {
		t.Fatalf("a second run into the used folder: %v", err)
	}
	if m, _ := os.ReadFile(filepath.Join(r.Output, "metrics.jsonl")); !slices.Equal(entries(t, r.Output), before) || !bytes.Equal(m, metrics) {
		t.Fatal("the refused run changed the folder")
	}

	if _, err := runErr(again, Options{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	got := entries(t, r.Output)
	for _, gone := range []string{"checkpoint-2", "checkpoint-4"} {
		if slices.Contains(got, gone) {
			t.Errorf("the earlier run's %s survived --overwrite: %v", gone, got)
		}
	}
	if !slices.Contains(got, "checkpoint-3") || !slices.Contains(got, "notes.txt") {
		t.Errorf("after --overwrite the folder holds %v", got)
	}
	if last, _ := latestCheckpoint(r.Output); filepath.Base(last) != "checkpoint-3" {
		t.Errorf("--resume would pick %s", last)
	}

	if _, err := runErr(again, Options{Overwrite: true, Resume: true}); err == nil || !strings.Contains(err.Error(), "choose one") {
		t.Errorf("--resume with --overwrite: %v", err)
	}
	onStudent := r
	onStudent.Output = w.student
	if _, err := runErr(onStudent, Options{Overwrite: true}); err == nil || !strings.Contains(err.Error(), "is the student folder") {
		t.Errorf("output = student: %v", err)
	}
	if _, err := model.LoadDir(w.student, cpu.New()); err != nil {
		t.Fatalf("the student folder was spoilt: %v", err)
	}
}

// TestInitModelRefusesNonEmpty: init-model does not replace a model folder
// unless told to, and when told to it replaces the model whole (no shard of
// the old one left for a loader to mix in) and keeps other files.
func TestInitModelRefusesNonEmpty(t *testing.T) {
	w := newWorld(t)
	cfg := filepath.Join(w.teacher, "config.json")
	out := filepath.Join(w.dir, "model")
	be := cpu.New()
	if err := InitModel(be, cfg, w.teacher, 1, out, false); err != nil {
		t.Fatal(err)
	}
	weights, _ := os.ReadFile(filepath.Join(out, "model.safetensors"))
	os.WriteFile(filepath.Join(out, "README.md"), []byte("mine"), 0o644)
	// Shards of an earlier, larger save.
	for _, f := range []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"} {
		os.WriteFile(filepath.Join(out, f), []byte("old"), 0o644)
	}
	err := InitModel(be, filepath.Join(w.student, "config.json"), w.teacher, 2, out, false)
	if err == nil || !strings.Contains(err.Error(), out+" is not empty") || !strings.Contains(err.Error(), "--overwrite") {
		t.Fatalf("init-model into a model folder: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(out, "model.safetensors")); !bytes.Equal(got, weights) {
		t.Fatal("the refused init-model changed the weights")
	}
	if err := InitModel(be, filepath.Join(w.student, "config.json"), w.teacher, 2, out, true); err != nil {
		t.Fatal(err)
	}
	m, err := model.LoadDir(out, be)
	if err != nil {
		t.Fatalf("the overwritten folder does not load: %v", err)
	}
	if m.Config.Hidden != 32 || slices.Contains(entries(t, out), "model-00001-of-00002.safetensors") || !slices.Contains(entries(t, out), "README.md") {
		t.Fatalf("after --overwrite: width %d, files %v", m.Config.Hidden, entries(t, out))
	}
}

// TestResumeChecksTheRecipe: --resume refuses a recipe that changed outside
// ResumableKeys, naming each changed key with its old and new value, and
// accepts a longer run (the schedule follows it) with other intervals.
func TestResumeChecksTheRecipe(t *testing.T) {
	w := newWorld(t)
	r := w.recipe(filepath.Join(w.dir, "run"))
	r.Objectives.SFT = &SFTTerm{Weight: 1}
	r.MaxSteps, r.SaveEvery = 4, 2
	run(t, r, false)

	changed := r
	changed.Optim.LR, changed.Seed = 1e-3, 4
	changed.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1}
	changed.Teacher = w.teacher
	_, err := runErr(changed, Options{Resume: true})
	if err == nil {
		t.Fatal("a changed recipe was resumed")
	}
	for _, want := range []string{"differs from the one checkpoint-4 was made with", "optim.lr: 0.003 → 0.001", "seed: 3 → 4",
		"objectives.kd.weight: (off) → 1", "only max_steps, epochs, eval_every, save_every, log_every, device, precision, output may change"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not say %q:\n%v", want, err)
		}
	}

	longer := r
	longer.MaxSteps, longer.SaveEvery, longer.LogEvery = 6, 0, 1
	// The data moved: the same file under another name.
	moved := filepath.Join(w.dir, "moved.jsonl")
	raw, _ := os.ReadFile(w.sft)
	os.WriteFile(moved, raw, 0o644)
	longer.Data.Train = moved
	sum, log := run(t, longer, true)
	if sum.Steps != 6 {
		t.Fatalf("resumed to step %d, want 6\n%s", sum.Steps, log)
	}
	for _, want := range []string{"resume: changed since checkpoint-4: log_every: 5 → 1; max_steps: 4 → 6; save_every: 2 → 0",
		"resume: paths changed since checkpoint-4: data.train: " + w.sft + " → " + moved,
		"the run now has 6 steps (it had 4)", "resumed from " + filepath.Join(r.Output, "checkpoint-4") + " at step 4 of 6"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not say %q:\n%s", want, log)
		}
	}
}

// TestResumeFallsBackFromDamagedCheckpoint: with its newest checkpoint
// damaged, --resume says so, resumes from the newest intact one, and ends
// with the weights of a run that never stopped.
func TestResumeFallsBackFromDamagedCheckpoint(t *testing.T) {
	w := newWorld(t)
	base := w.recipe("")
	base.Objectives.SFT = &SFTTerm{Weight: 1}
	base.MaxSteps, base.SaveEvery = 8, 4
	straight := base
	straight.Output = filepath.Join(w.dir, "straight")
	run(t, straight, false)
	want, _ := os.ReadFile(filepath.Join(straight.Output, "model.safetensors"))

	for _, c := range []struct {
		name   string
		damage func(dir string)
		says   string
	}{
		{"truncated weights", func(dir string) { os.Truncate(filepath.Join(dir, "model.safetensors"), 1000) }, "model.safetensors"},
		{"no training state", func(dir string) { os.Remove(filepath.Join(dir, stateFile)) }, stateFile},
		{"torn training state", func(dir string) { os.Truncate(filepath.Join(dir, stateFile), 20) }, stateFile},
		{"bad config", func(dir string) { os.WriteFile(filepath.Join(dir, "config.json"), []byte("{"), 0o644) }, "config.json"},
	} {
		r := base
		r.Output = filepath.Join(w.dir, strings.ReplaceAll(c.name, " ", "-"))
		run(t, r, false)
		c.damage(filepath.Join(r.Output, "checkpoint-8"))
		_, log := run(t, r, true)
		if !strings.Contains(log, "resume: checkpoint-8 (") || !strings.Contains(log, c.says) || !strings.Contains(log, "is damaged; resuming from checkpoint-4, the newest intact checkpoint") {
			t.Errorf("%s: the log does not name the damage and the fallback:\n%s", c.name, log)
		}
		got, _ := os.ReadFile(filepath.Join(r.Output, "model.safetensors"))
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the resumed run's weights differ from the straight run's", c.name)
		}
		if err := checkIntact(filepath.Join(r.Output, "checkpoint-8")); err != nil {
			t.Errorf("%s: checkpoint-8 was not rewritten whole: %v", c.name, err)
		}
	}

	r := base
	r.Output = filepath.Join(w.dir, "all-damaged")
	run(t, r, false)
	for _, s := range []string{"checkpoint-4", "checkpoint-8"} {
		os.Remove(filepath.Join(r.Output, s, stateFile))
	}
	if _, err := runErr(r, Options{Resume: true}); err == nil || !strings.Contains(err.Error(), "no intact checkpoint") ||
		!strings.Contains(err.Error(), "checkpoint-8 (") || !strings.Contains(err.Error(), "checkpoint-4 (") {
		t.Fatalf("every checkpoint damaged: %v", err)
	}
}

// TestResumeCleansTemporaryFiles: what a killed run left — a final save cut
// short, a half-written checkpoint, a temporary config — is removed when the
// run resumes, and a checkpoint a kill left only as checkpoint-N.old is put
// back and resumed from.
func TestResumeCleansTemporaryFiles(t *testing.T) {
	w := newWorld(t)
	r := w.recipe(filepath.Join(w.dir, "run"))
	r.Objectives.SFT = &SFTTerm{Weight: 1}
	r.MaxSteps, r.SaveEvery = 4, 2
	run(t, r, false)
	out := r.Output
	stale := []string{".model.safetensors.tmp-123456", ".config.json.tmp7890", ".checkpoint-6.tmp", ".tokenizer.json.tmp-42"}
	os.WriteFile(filepath.Join(out, stale[0]), make([]byte, 1<<20), 0o644)
	os.WriteFile(filepath.Join(out, stale[1]), []byte("{"), 0o644)
	os.MkdirAll(filepath.Join(out, stale[2]), 0o755)
	os.WriteFile(filepath.Join(out, stale[2], "model.safetensors"), make([]byte, 1<<20), 0o644)
	os.WriteFile(filepath.Join(out, stale[3]), []byte("{"), 0o644)
	// A kill between moving checkpoint-4 aside and putting its replacement
	// in place.
	os.Rename(filepath.Join(out, "checkpoint-4"), filepath.Join(out, "checkpoint-4.old"))

	longer := r
	longer.MaxSteps = 6
	_, log := run(t, longer, true)
	got := entries(t, out)
	for _, name := range append(stale, "checkpoint-4.old") {
		if slices.Contains(got, name) {
			t.Errorf("%s is still in the output folder: %v", name, got)
		}
	}
	if !strings.Contains(log, "removed what an interrupted run left in "+out) || !strings.Contains(log, "resumed from "+filepath.Join(out, "checkpoint-4")) {
		t.Errorf("log:\n%s", log)
	}
}

// TestResumeRewritesMetricsAtomically: on resume, metrics.jsonl is replaced
// by a new file (a rename), never truncated in place — a hard link to the old
// one still reads every record — and holds the records up to the checkpoint
// followed by the resumed ones.
func TestResumeRewritesMetricsAtomically(t *testing.T) {
	w := newWorld(t)
	r := w.recipe(filepath.Join(w.dir, "run"))
	r.Objectives.SFT = &SFTTerm{Weight: 1}
	r.MaxSteps, r.SaveEvery, r.LogEvery = 6, 3, 1
	run(t, r, false)
	path := filepath.Join(r.Output, "metrics.jsonl")
	old, _ := os.ReadFile(path)
	link := filepath.Join(w.dir, "metrics.link")
	if err := os.Link(path, link); err != nil {
		t.Skipf("hard links: %v", err)
	}
	// Resume from step 3 (checkpoint-6 removed), as after a crash.
	os.RemoveAll(filepath.Join(r.Output, "checkpoint-6"))
	run(t, r, true)
	if got, _ := os.ReadFile(link); !bytes.Equal(got, old) {
		t.Fatal("metrics.jsonl was rewritten in place")
	}
	if a, b := lossLines(t, link), lossLines(t, path); a != b {
		t.Fatalf("losses differ after resume:\n%s\n%s", a, b)
	}
}
