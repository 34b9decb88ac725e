package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestSummary runs the real `go test -json` on a sample package and checks
// that the summary shows what go test shows without -v (the ok/FAIL lines,
// a failing test's output, not a passing test's log) and then every skip
// with its reason, and exits as go test does.
func TestSummary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a sample package with go test")
	}
	t.Setenv("TESTSUM_SAMPLE_FAIL", "1")
	var out, errw bytes.Buffer
	code := run([]string{"-count=1", "./testdata/sample"}, &out, &errw)
	text := lineless(out.String())
	if code != 1 {
		t.Errorf("exit %d with a failing test, want 1\n%s%s", code, text, errw.String())
	}
	for _, want := range []string{
		"--- FAIL: TestFails",
		"the failure's message",
		"FAIL\tgithub.com/kdnative/kdnative/scripts/testsum/testdata/sample",
		"4 skipped:",
		"SKIP github.com/kdnative/kdnative/scripts/testsum/testdata/sample TestNeedsGPU: sample_test.go:N: no GPU here: libcuda.so.1 not found",
		"SKIP github.com/kdnative/kdnative/scripts/testsum/testdata/sample TestNoReason: (no reason given)",
		"SKIP github.com/kdnative/kdnative/scripts/testsum/testdata/sample TestSub/emulator: sample_test.go:N: no g++ (install it)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}
	for _, not := range []string{"a passing test's log line", "=== RUN", "--- PASS", "fails only when"} {
		if strings.Contains(text, not) {
			t.Errorf("summary shows %q:\n%s", not, text)
		}
	}

	// A test that times out gets no "fail" event of its own: its output
	// (the log, the timeout's panic) is still shown.
	t.Setenv("TESTSUM_SAMPLE_FAIL", "")
	t.Setenv("TESTSUM_SAMPLE_HANG", "1")
	out.Reset()
	code = run([]string{"-count=1", "-run", "TestHangs", "-timeout", "2s", "./testdata/sample"}, &out, &errw)
	if code != 1 || !strings.Contains(out.String(), "before the hang") || !strings.Contains(out.String(), "panic: test timed out after 2s") ||
		strings.Index(out.String(), "panic: test timed out") > strings.Index(out.String(), "FAIL\tgithub.com") {
		t.Errorf("a timed-out test: exit %d:\n%s", code, out.String())
	}

	// Passing: exit 0, the ok line, the skips.
	t.Setenv("TESTSUM_SAMPLE_HANG", "")
	out.Reset()
	if code := run([]string{"-count=1", "./testdata/sample"}, &out, &errw); code != 0 ||
		!strings.Contains(out.String(), "ok  \tgithub.com/kdnative/kdnative/scripts/testsum/testdata/sample") ||
		!strings.Contains(lineless(out.String()), "SKIP github.com/kdnative/kdnative/scripts/testsum/testdata/sample TestFails: sample_test.go:N: fails only when testsum's test asks") {
		t.Errorf("exit %d:\n%s", code, out.String())
	}
}

// lineless writes every "sample_test.go:17:" as "sample_test.go:N:", so
// that the sample can change without the expectations following its lines.
func lineless(s string) string {
	return regexp.MustCompile(`sample_test\.go:\d+:`).ReplaceAllString(s, "sample_test.go:N:")
}

// TestMakeTestUsesIt: `make test`, the command README.md gives and CI
// runs, goes through testsum, so its skips say why without -v.
func TestMakeTestUsesIt(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(mk), "\ntest:\n")
	recipe, _, _ := strings.Cut(rest, "\n\n")
	if !ok || !strings.Contains(recipe, "./scripts/testsum ./...") {
		t.Errorf("make test's recipe does not run scripts/testsum over ./...:\n%s", recipe)
	}
}
