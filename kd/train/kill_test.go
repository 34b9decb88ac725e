package train

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestKilledRunLeavesCheckpoint kills `kdnative train` with SIGKILL while it
// runs: the last checkpoint written before the kill loads as a model, no
// half-written checkpoint is taken for a whole one, and --resume finishes the
// run.
func TestKilledRunLeavesCheckpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the kdnative binary")
	}
	w := newWorld(t)
	bin := filepath.Join(w.dir, "kdnative")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/kdnative")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out := filepath.Join(w.dir, "run")
	r := w.recipe(out)
	r.Objectives.SFT = &SFTTerm{Weight: 1}
	r.MaxSteps, r.SaveEvery = 100000, 3 // long enough to be killed
	data, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	recipe := filepath.Join(w.dir, "recipe.yaml")
	os.WriteFile(recipe, data, 0o644)
	log := logFile(t, filepath.Join(w.dir, "run.log"))
	cmd := exec.Command(bin, "--device", "cpu", "train", recipe)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(out, "checkpoint-6")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no checkpoint-6 after 60 s\n%s", readLog(log))
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Kill() // SIGKILL: no chance to clean up
	cmd.Wait()
	last, err := latestCheckpoint(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := model.LoadDir(last, cpu.New()); err != nil {
		t.Fatalf("the last checkpoint %s does not load: %v", last, err)
	}
	// A crash mid-write leaves only a hidden temporary folder, never a
	// checkpoint-N that resume would pick.
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "checkpoint-") {
			if _, err := os.Stat(filepath.Join(out, e.Name(), stateFile)); err != nil {
				t.Errorf("%s has no training state: a partial checkpoint", e.Name())
			}
		}
	}
	// Resume: it starts from that checkpoint; interrupted (Ctrl-C), it saves
	// another and exits.
	log2 := logFile(t, filepath.Join(w.dir, "resume.log"))
	resume := exec.Command(bin, "--device", "cpu", "train", recipe, "--resume", "--set", "save_every=0")
	resume.Stdout, resume.Stderr = log2, log2
	if err := resume.Start(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(60 * time.Second)
	for !strings.Contains(readLog(log2), "resumed from "+last) || !strings.Contains(readLog(log2), "step ") {
		if time.Now().After(deadline) {
			resume.Process.Kill()
			t.Fatalf("resume did not start from %s:\n%s", last, readLog(log2))
		}
		time.Sleep(10 * time.Millisecond)
	}
	resume.Process.Signal(os.Interrupt)
	err = resume.Wait()
	if code := resume.ProcessState.ExitCode(); code != 130 || !strings.Contains(readLog(log2), "interrupted at step") {
		t.Fatalf("interrupted resume: exit %d (%v)\n%s", code, err, readLog(log2))
	}
	// The interrupt saved a checkpoint at the step it stopped at (which may
	// still be the resumed one, if no step had finished).
	m := regexp.MustCompile(`interrupted at step (\d+): checkpoint (\S+);`).FindStringSubmatch(readLog(log2))
	if m == nil {
		t.Fatalf("no checkpoint line:\n%s", readLog(log2))
	}
	if newest, _ := latestCheckpoint(out); newest != m[2] {
		t.Fatalf("newest checkpoint %s, the interrupt reported %s", newest, m[2])
	}
	if _, err := model.LoadDir(m[2], cpu.New()); err != nil {
		t.Fatal(err)
	}
}

func logFile(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func readLog(f *os.File) string {
	data, _ := os.ReadFile(f.Name())
	return string(data)
}
