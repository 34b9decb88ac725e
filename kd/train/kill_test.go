package train

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
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
	w := newWorld(t)
	bin := kdnativeBinary(t)
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

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// kdnativeBinary builds cmd/kdnative once per test process, as users build
// it (CGO_ENABLED=0); TestMain removes it. It skips under -short.
func kdnativeBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the kdnative binary")
	}
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "kdnative-train-test-*"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "kdnative")
		build := exec.Command("go", "build", "-o", binPath, "../../cmd/kdnative")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// waitFor polls f until it holds want, or fails after a minute (a hang
// guard, not a timing check).
func waitFor(t *testing.T, cmd *exec.Cmd, f *os.File, want string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(readLog(f), want) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("no %q in the output after 2 minutes:\n%s", want, readLog(f))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// saveRecipeFile writes r where the binary can read it.
func saveRecipeFile(t *testing.T, r Recipe, path string) string {
	t.Helper()
	data, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// exitCode is a finished command's exit code, -1 when a signal killed it.
func exitCode(cmd *exec.Cmd) int { return cmd.ProcessState.ExitCode() }

// TestSignalsStopLikeCtrlC: SIGTERM and SIGPIPE (the reader of the output
// went away, as in `kdnative train | head`) stop a run as Ctrl-C does: a
// checkpoint that loads, a line saying so, and the exit code a shell gives a
// process killed by that signal (143 and 141; Ctrl-C's is 130).
func TestSignalsStopLikeCtrlC(t *testing.T) {
	w := newWorld(t)
	bin := kdnativeBinary(t)
	long := func(name string) (string, string) {
		r := w.recipe(filepath.Join(w.dir, name))
		r.Objectives.SFT = &SFTTerm{Weight: 1}
		r.MaxSteps, r.SaveEvery, r.LogEvery = 100000, 0, 1
		return saveRecipeFile(t, r, filepath.Join(w.dir, name+".yaml")), r.Output
	}

	recipe, out := long("term")
	log := logFile(t, filepath.Join(w.dir, "term.log"))
	cmd := exec.Command(bin, "--device", "cpu", "train", recipe)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, cmd, log, "step 2/")
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	m := regexp.MustCompile(`interrupted at step (\d+): checkpoint (\S+);`).FindStringSubmatch(readLog(log))
	if code := exitCode(cmd); code != 143 || m == nil || !strings.Contains(readLog(log), "training interrupted (SIGTERM); resume with --resume") {
		t.Fatalf("SIGTERM: exit %d\n%s", code, readLog(log))
	}
	if _, err := model.LoadDir(m[2], cpu.New()); err != nil || filepath.Dir(m[2]) != out {
		t.Fatalf("the checkpoint %s: %v", m[2], err)
	}

	recipe, out = long("pipe")
	errLog := logFile(t, filepath.Join(w.dir, "pipe.log"))
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(bin, "--device", "cpu", "train", recipe)
	cmd.Stdout, cmd.Stderr = pw, errLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	sc := bufio.NewScanner(pr)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "step 2/") {
	}
	pr.Close() // the reader goes away
	cmd.Wait()
	if code := exitCode(cmd); code != 141 || !strings.Contains(readLog(errLog), "training interrupted (SIGPIPE") {
		t.Fatalf("SIGPIPE: exit %d\n%s", code, readLog(errLog))
	}
	last, err := latestCheckpoint(out)
	if err != nil {
		t.Fatalf("no checkpoint after SIGPIPE: %v", err)
	}
	if _, err := model.LoadDir(last, cpu.New()); err != nil {
		t.Fatal(err)
	}
}

// TestDemoStopsCleanly: the demo stopped by SIGTERM or SIGPIPE saves its
// checkpoint and removes the temporary folder it unpacked its assets to.
func TestDemoStopsCleanly(t *testing.T) {
	w := newWorld(t)
	bin := kdnativeBinary(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGPIPE} {
		tmp := filepath.Join(w.dir, "tmp-"+sig.String())
		os.MkdirAll(tmp, 0o755)
		out := filepath.Join(w.dir, "demo-"+strings.ReplaceAll(sig.String(), " ", "-"))
		log := logFile(t, filepath.Join(w.dir, "demo.log"))
		cmd := exec.Command(bin, "--device", "cpu", "train", "--output", out, "--set", "save_every=0", "--set", "log_every=1")
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
		cmd.Stderr = log
		var pr *os.File
		if sig == syscall.SIGTERM {
			cmd.Stdout = log
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, cmd, log, "step 1/")
			cmd.Process.Signal(sig)
		} else {
			var pw *os.File
			var err error
			if pr, pw, err = os.Pipe(); err != nil {
				t.Fatal(err)
			}
			cmd.Stdout = pw
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pw.Close()
			sc := bufio.NewScanner(pr)
			for sc.Scan() && !strings.HasPrefix(sc.Text(), "step 1/") {
			}
			pr.Close()
		}
		cmd.Wait()
		if code := exitCode(cmd); code != 128+int(sig) || !strings.Contains(readLog(log), "demo interrupted") {
			t.Fatalf("%v: exit %d\n%s", sig, code, readLog(log))
		}
		if left, _ := filepath.Glob(filepath.Join(tmp, "kdnative-demo-*")); len(left) > 0 {
			t.Errorf("%v: the demo left %v", sig, left)
		}
		if _, err := latestCheckpoint(out); err != nil {
			t.Errorf("%v: %v", sig, err)
		}
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
