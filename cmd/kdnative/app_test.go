package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/kdnative/kdnative/runtime"
)

// fakeBackend stands in for a usable backend; only Name and Describe are
// ever called on it.
type fakeBackend struct{ runtime.Backend }

func (fakeBackend) Name() string     { return "fake" }
func (fakeBackend) Describe() string { return "fake: for tests" }

func init() {
	// Above CUDA and the CPU, so that auto picks fake on any machine, GPU or
	// not; "broken" ranks first and always fails, with a two-line error.
	runtime.Register("fake", 15, func() (runtime.Backend, error) { return fakeBackend{}, nil })
	runtime.Register("broken", 20, func() (runtime.Backend, error) {
		return nil, errors.New("broken on purpose\nsecond line of a compile log")
	})
}

// runApp runs the app in process with an extra command that opens the
// backend and prints its name.
func runApp(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	app := newApp()
	var out, errw bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errw
	app.Commands = append(app.Commands, &cli.Command{
		Name: "which",
		Action: func(c *cli.Context) error {
			b, err := openBackend(c)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, b.Name())
			return nil
		},
	})
	err = app.Run(reorderArgs(app, append([]string{"kdnative"}, args...)))
	return out.String(), errw.String(), err
}

func TestOpenBackendAuto(t *testing.T) {
	t.Setenv("KDNATIVE_DEVICE", "")
	out, errOut, err := runApp(t, "which")
	if err != nil {
		t.Fatal(err)
	}
	if out != "fake\n" {
		t.Errorf("auto chose %q, want fake", out)
	}
	// One line per backend passed over, even for a multi-line error.
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if len(lines) != 1 ||
		lines[0] != "kdnative: broken unavailable (broken on purpose), using fake; kdnative doctor says more" {
		t.Errorf("stderr under auto:\n%s", errOut)
	}
}

func TestOpenBackendNamed(t *testing.T) {
	out, errOut, err := runApp(t, "--device", "cpu", "which")
	if err != nil || out != "cpu\n" || errOut != "" {
		t.Errorf("--device cpu: out %q, stderr %q, err %v", out, errOut, err)
	}
	t.Setenv("KDNATIVE_DEVICE", "cpu")
	if out, _, err := runApp(t, "which"); err != nil || out != "cpu\n" {
		t.Errorf("KDNATIVE_DEVICE=cpu: out %q, err %v", out, err)
	}
	if _, _, err := runApp(t, "--device", "broken", "which"); err == nil ||
		!strings.Contains(err.Error(), `device "broken": broken on purpose`) {
		t.Errorf("--device broken: %v", err)
	}
	if _, _, err := runApp(t, "--device", "cuda", "which"); err == nil || !strings.Contains(err.Error(), `device "cuda"`) {
		t.Errorf("--device cuda: %v", err)
	}
}

func TestUnknownDevice(t *testing.T) {
	out, _, err := runApp(t, "--device", "tpu", "which")
	if err == nil || !strings.Contains(err.Error(), `unknown --device "tpu"`) ||
		!strings.Contains(err.Error(), "cpu") {
		t.Errorf("--device tpu: %v", err)
	}
	if out != "" {
		t.Errorf("--device tpu ran the command: %q", out)
	}
}

func TestDoctorInProcess(t *testing.T) {
	var buf bytes.Buffer
	if err := runDoctor(&buf, doctorConfig{Device: "auto"}); err != nil {
		t.Fatal(err)
	}
	report := strings.Join(strings.Fields(buf.String()), " ")
	for _, want := range []string{"fake yes fake: for tests", "broken no broken on purpose",
		"cpu yes cpu:", "--device auto uses fake"} {
		if !strings.Contains(report, want) {
			t.Errorf("doctor report lacks %q:\n%s", want, report)
		}
	}
	buf.Reset()
	if err := runDoctor(&buf, doctorConfig{Device: "broken"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "--device broken  unusable here (see above)") {
		t.Errorf("doctor --device broken:\n%s", buf.String())
	}
}
