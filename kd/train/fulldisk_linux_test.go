package train

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestFullDiskLeavesNoPartialCheckpoint: a checkpoint that cannot be written
// (the disk is full) fails the run with the reason, and its partial folder is
// removed rather than left to hold the space. The binary runs under a
// file-size limit (RLIMIT_FSIZE) that lets the student's weights be written
// but not the optimizer state, twice their size: writes past it fail as on a
// full disk (EFBIG; Go ignores SIGXFSZ).
func TestFullDiskLeavesNoPartialCheckpoint(t *testing.T) {
	w := newWorld(t)
	bin := kdnativeBinary(t)
	r := w.recipe(filepath.Join(w.dir, "run"))
	r.Objectives.SFT = &SFTTerm{Weight: 1}
	r.MaxSteps, r.SaveEvery = 4, 2
	recipe := saveRecipeFile(t, r, filepath.Join(w.dir, "recipe.yaml"))
	weights, err := os.Stat(filepath.Join(w.student, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	limit := uint64(weights.Size()) * 3 / 2 // the state file holds two moments per weight

	log := logFile(t, filepath.Join(w.dir, "run.log"))
	cmd := exec.Command(bin, "--device", "cpu", "train", recipe)
	cmd.Stdout, cmd.Stderr = log, log
	// The child inherits the limit at fork; the test process keeps it only
	// for the start.
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: old.Max}); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	err = cmd.Start()
	syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	text := readLog(log)
	if exitCode(cmd) != 1 || !strings.Contains(text, "checkpoint at step 2") || !strings.Contains(text, "file too large") {
		t.Fatalf("exit %d\n%s", exitCode(cmd), text)
	}
	for _, name := range entries(t, r.Output) {
		if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "checkpoint-") {
			t.Errorf("the failed checkpoint left %s in the output folder", name)
		}
	}
}
