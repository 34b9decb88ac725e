// Command testsum runs `go test -json` with the given arguments and prints
// what `go test` prints without -v — each package's ok/FAIL line and the
// output of failing tests — followed by every skipped test with the reason
// it gave. `make test` runs it, so that a test that skips (no GPU, no g++,
// no NVRTC) says so without -v. The exit status is go test's.
//
//	go run ./scripts/testsum ./...
//	go run ./scripts/testsum -run TestX ./kd/train/
//
// The go command is $GO when set (as the Makefile sets it), else "go".
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs go test -json args and summarizes it to stdout; it returns the
// exit status.
func run(args []string, stdout, stderr io.Writer) int {
	goCmd := os.Getenv("GO")
	if goCmd == "" {
		goCmd = "go"
	}
	cmd := exec.Command(goCmd, append([]string{"test", "-json"}, args...)...)
	cmd.Stderr = stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(stderr, "testsum:", err)
		return 1
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(stderr, "testsum:", err)
		return 1
	}
	s := newSummary(stdout)
	if err := s.read(pipe); err != nil {
		fmt.Fprintln(stderr, "testsum: reading go test's output:", err)
	}
	err = cmd.Wait()
	s.printSkips()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode()
	case err != nil:
		fmt.Fprintln(stderr, "testsum:", err)
		return 1
	}
	return 0
}

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string // build-output events
}

// skip is one skipped test and what it said.
type skip struct{ pkg, test, reason string }

// summary turns the event stream into go test's quiet output.
type summary struct {
	w     io.Writer
	held  map[string][]string // a running test's output, by package and test
	order map[string][]string // each package's held tests, in the order they ran
	skips []skip
}

func newSummary(w io.Writer) *summary {
	return &summary{w: w, held: map[string][]string{}, order: map[string][]string{}}
}

// flush prints what the tests of pkg that never finished printed: a test
// that timed out or crashed the package gets no "fail" event of its own,
// and its output (the panic, the goroutines) is the only reason given.
func (s *summary) flush(pkg string) {
	for _, key := range s.order[pkg] {
		for _, l := range s.held[key] {
			if !strings.HasPrefix(l, "=== ") {
				fmt.Fprint(s.w, l)
			}
		}
		delete(s.held, key)
	}
	delete(s.order, pkg)
}

// read consumes the stream. Lines that are not JSON (go vet's or the
// build's, on some versions) are passed through.
func (s *summary) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Action == "" {
			fmt.Fprintln(s.w, sc.Text())
			continue
		}
		s.event(e)
	}
	for pkg := range s.order { // go test itself was stopped
		s.flush(pkg)
	}
	return sc.Err()
}

func (s *summary) event(e event) {
	key := e.Package + " " + e.Test
	switch {
	case e.Action == "build-output":
		fmt.Fprint(s.w, e.Output)
	case e.Test == "" && e.Action == "output":
		// The package's own lines: "ok  pkg 1.2s", "FAIL pkg", a panic, a
		// TestMain's prints. go test without -v leaves out the bare PASS.
		if strings.HasPrefix(e.Output, "FAIL") {
			s.flush(e.Package)
		}
		if e.Output != "PASS\n" {
			fmt.Fprint(s.w, e.Output)
		}
	case e.Test == "" && e.Action == "fail":
		s.flush(e.Package)
	case e.Test == "":
	case e.Action == "output":
		if _, ok := s.held[key]; !ok {
			s.order[e.Package] = append(s.order[e.Package], key)
		}
		s.held[key] = append(s.held[key], e.Output)
	case e.Action == "fail":
		for _, l := range s.held[key] {
			if !strings.HasPrefix(l, "=== ") { // -v's RUN/PAUSE/CONT lines
				fmt.Fprint(s.w, l)
			}
		}
		delete(s.held, key)
	case e.Action == "skip":
		s.skips = append(s.skips, skip{e.Package, e.Test, reason(s.held[key])})
		delete(s.held, key)
	case e.Action == "pass":
		delete(s.held, key)
	}
}

// reason is what a skipped test printed, less the framework's own lines.
func reason(lines []string) string {
	var out []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return "(no reason given)"
	}
	return strings.Join(out, " / ")
}

// printSkips lists the skipped tests, by package and name.
func (s *summary) printSkips() {
	if len(s.skips) == 0 {
		return
	}
	sort.SliceStable(s.skips, func(i, j int) bool {
		if s.skips[i].pkg != s.skips[j].pkg {
			return s.skips[i].pkg < s.skips[j].pkg
		}
		return s.skips[i].test < s.skips[j].test
	})
	fmt.Fprintf(s.w, "\n%d skipped:\n", len(s.skips))
	for _, k := range s.skips {
		fmt.Fprintf(s.w, "SKIP %s %s: %s\n", k.pkg, k.test, k.reason)
	}
}
