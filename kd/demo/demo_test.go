package demo

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestDemoDistills runs the built-in demo, shortened, and checks what it
// promises: the student's KL to the teacher falls well below where it
// started, the drop is printed, samples are shown, and the student it saves
// loads.
func TestDemoDistills(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for a minute")
	}
	out := filepath.Join(t.TempDir(), "demo")
	var log bytes.Buffer
	err := Run(context.Background(), cpu.New(), Options{Output: out, Log: &log, Sets: []string{"max_steps=80", "save_every=0"}})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	text := log.String()
	m := regexp.MustCompile(`KL\(teacher‖student\)\s+([0-9.]+) → ([0-9.]+)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("the demo did not print the KL drop:\n%s", text)
	}
	before, _ := strconv.ParseFloat(m[1], 64)
	after, _ := strconv.ParseFloat(m[2], 64)
	if !(after < 0.6*before) {
		t.Fatalf("KL %g → %g: not well below where it started\n%s", before, after, text)
	}
	for _, want := range []string{"teacher:", "student before:", "student after:"} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q sample in:\n%s", want, text)
		}
	}
	if _, err := model.LoadDir(out, cpu.New()); err != nil {
		t.Fatal(err)
	}
	t.Logf("KL %g → %g", before, after)
}
