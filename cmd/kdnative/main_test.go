package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/cuda"
)

// TestBinary builds kdnative with CGO_ENABLED=0, as users will, and runs it.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "kdnative")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	run := func(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "KDNATIVE_DEVICE=")
		cmd.Env = append(cmd.Env, env...)
		var out, errw bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errw
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			code = exit.ExitCode()
		case err != nil:
			t.Fatalf("running %v: %v", args, err)
		}
		return out.String(), errw.String(), code
	}

	t.Run("version", func(t *testing.T) {
		out, errOut, code := run(t, nil, "version")
		if code != 0 || errOut != "" {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
		if !strings.HasPrefix(out, "kdnative ") || !strings.Contains(out, goruntime.Version()) {
			t.Errorf("version printed %q", out)
		}
	})

	t.Run("doctor", func(t *testing.T) {
		out, errOut, code := run(t, nil, "doctor")
		t.Logf("kdnative doctor:\n%s", out)
		if code != 0 {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
		var lines []string
		for _, l := range strings.Split(out, "\n") {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
		for _, want := range []string{"kdnative ", "go " + goruntime.Version(), "cpus GOMAXPROCS ",
			"backend usable details", "cpu yes cpu: ", "cuda ", "cuda driver ", "--device auto uses "} {
			if !hasPrefixLine(lines, want) {
				t.Errorf("doctor printed no line starting %q", want)
			}
		}
	})

	t.Run("doctor --device cpu", func(t *testing.T) {
		out, _, code := run(t, []string{"KDNATIVE_DEVICE=cpu"}, "doctor")
		if code != 0 || !strings.Contains(out, "--device cpu  uses cpu") {
			t.Errorf("exit %d:\n%s", code, out)
		}
	})

	t.Run("unknown device", func(t *testing.T) {
		for _, tc := range []struct {
			env  []string
			args []string
		}{
			{nil, []string{"--device", "tpu", "doctor"}},
			{[]string{"KDNATIVE_DEVICE=tpu"}, []string{"version"}},
		} {
			out, errOut, code := run(t, tc.env, tc.args...)
			if code != 1 || out != "" ||
				!strings.HasPrefix(errOut, `kdnative: unknown --device "tpu" (want auto or one of: `) {
				t.Errorf("%v %v: exit %d, stdout %q, stderr %q", tc.env, tc.args, code, out, errOut)
			}
		}
	})

	t.Run("forward", func(t *testing.T) {
		// The built-in model, then a real Hugging Face folder (the GPT-2 fixture).
		out, errOut, code := run(t, []string{"KDNATIVE_DEVICE=cpu"}, "forward")
		if code != 0 || !strings.Contains(out, "loss     ") || !strings.Contains(out, "built-in tiny model") {
			t.Errorf("forward: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		out, errOut, code = run(t, []string{"KDNATIVE_DEVICE=cpu"}, "forward", "--model", "../../model/testdata/fixtures/gpt2", "--ids", "4,5,6")
		if code != 0 || !strings.Contains(out, "gpt2: 2 layers, width 48") {
			t.Errorf("forward --model: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		_, errOut, code = run(t, []string{"KDNATIVE_DEVICE=cpu"}, "forward", "--ids", "1,999")
		if code != 1 || !strings.Contains(errOut, "token id 999 at index 1 is outside the vocabulary [0, 256)") {
			t.Errorf("bad id: exit %d, stderr %q", code, errOut)
		}
		_, errOut, code = run(t, []string{"KDNATIVE_DEVICE=cpu"}, "forward", "--model", "/nonexistent/model")
		if code != 1 || !strings.Contains(errOut, "/nonexistent/model") {
			t.Errorf("missing folder: exit %d, stderr %q", code, errOut)
		}
	})

	t.Run("auto falls back to the cpu", func(t *testing.T) {
		if _, err := cuda.Open(); err == nil {
			t.Skip("a GPU is here: auto uses it")
		}
		out, errOut, code := run(t, nil, "forward")
		lines := strings.Split(strings.TrimRight(errOut, "\n"), "\n")
		if code != 0 || !strings.Contains(out, "loss") || len(lines) != 1 ||
			!strings.HasPrefix(lines[0], "kdnative: cuda unavailable (") || !strings.HasSuffix(lines[0], "), using cpu; kdnative doctor says more") ||
			len(lines[0]) > 160 || strings.Contains(lines[0], "searched") {
			t.Errorf("forward under auto without a GPU: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		_, errOut, code = run(t, []string{"KDNATIVE_DEVICE=cpu"}, "bench", "--kernels")
		if code != 2 || !strings.Contains(errOut, "bench --kernels measures GPU kernels") {
			t.Errorf("bench --kernels on the cpu: exit %d, stderr %q", code, errOut)
		}
	})

	t.Run("unknown command", func(t *testing.T) {
		_, errOut, code := run(t, nil, "frobnicate")
		if code != 1 || errOut != "kdnative: unknown command \"frobnicate\" (see kdnative help)\n" {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})
}

func hasPrefixLine(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}
