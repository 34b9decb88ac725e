package elicit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLabelSurvivesSIGKILL kills `kdnative elicit label` with SIGKILL while it
// writes: a second run of the same command keeps every whole record already
// written, byte for byte, cuts a torn last line, and writes each prompt's
// answer exactly once.
func TestLabelSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the kdnative binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "kdnative")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/kdnative")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	mdl := demoModel(t)
	const nPrompts = 40
	var pb strings.Builder
	for i := range nPrompts {
		fmt.Fprintf(&pb, `{"prompt":"Call me Ishmael, number %d. "}`+"\n", i)
	}
	prompts := filepath.Join(dir, "prompts.jsonl")
	if err := os.WriteFile(prompts, []byte(pb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.jsonl")
	args := []string{"--device", "cpu", "elicit", "label", "--local", mdl, "--prompts", prompts, "--output", out,
		"--n", "1", "--max-tokens", "8", "--concurrency", "1", "--quiet"}

	logPath := filepath.Join(dir, "run1.log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		data, _ := os.ReadFile(out)
		if bytes.Count(data, []byte("\n")) >= 8 {
			break
		}
		select {
		case err := <-exited:
			logData, _ := os.ReadFile(logPath)
			t.Fatalf("label exited (%v) before 8 records were written\n%s", err, logData)
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			logData, _ := os.ReadFile(logPath)
			t.Fatalf("fewer than 8 records after 60 s\n%s", logData)
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Kill() // SIGKILL: no chance to clean up
	<-exited
	if cmd.ProcessState.Success() {
		t.Log("the first run finished before the kill landed")
	}
	before, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// The whole lines present at the kill (a torn tail is not one).
	var kept [][]byte
	if i := bytes.LastIndexByte(before, '\n'); i >= 0 {
		kept = bytes.SplitAfter(before[:i+1], []byte("\n"))
		kept = kept[:len(kept)-1] // SplitAfter leaves an empty tail
	}
	if len(kept) < 8 {
		t.Fatalf("%d whole lines after the kill, want at least 8", len(kept))
	}

	logPath2 := filepath.Join(dir, "run2.log")
	log2, err := os.Create(logPath2)
	if err != nil {
		t.Fatal(err)
	}
	defer log2.Close()
	cmd2 := exec.Command(bin, args...)
	cmd2.Stdout, cmd2.Stderr = log2, log2
	if err := cmd2.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(60*time.Second, func() { cmd2.Process.Kill() })
	err = cmd2.Wait()
	timedOut := !timer.Stop()
	if timedOut || err != nil {
		logData, _ := os.ReadFile(logPath2)
		t.Fatalf("second run (timed out after 60 s: %v): %v\n%s", timedOut, err, logData)
	}

	final, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(final) == 0 || final[len(final)-1] != '\n' {
		t.Fatalf("final output does not end in a newline")
	}
	lines := bytes.SplitAfter(final, []byte("\n"))
	lines = lines[:len(lines)-1]
	if len(lines) != nPrompts {
		logData, _ := os.ReadFile(logPath2)
		t.Fatalf("%d lines, want %d\n%s", len(lines), nPrompts, logData)
	}
	seen := map[string]bool{}
	for i, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("line %d %q: %v", i+1, line, err)
		}
		id, _ := rec["id"].(string)
		if seen[id] {
			t.Fatalf("id %q written twice", id)
		}
		seen[id] = true
		if _, ok := rec["prompt"].(string); !ok {
			t.Fatalf("line %d has no prompt: %s", i+1, line)
		}
		if _, ok := rec["response"].(string); !ok {
			t.Fatalf("line %d has no response: %s", i+1, line)
		}
	}
	for p := 1; p <= nPrompts; p++ {
		if id := fmt.Sprintf("p%d.s0", p); !seen[id] {
			t.Fatalf("%s missing", id)
		}
	}
	for i, line := range kept {
		if !bytes.Equal(lines[i], line) {
			t.Fatalf("line %d changed across the kill:\nbefore %s\nafter  %s", i+1, line, lines[i])
		}
	}
	t.Logf("%d records survived the kill, %d written after", len(kept), nPrompts-len(kept))
}

// TestSelfSurvivesSIGKILL kills `kdnative elicit self` with SIGKILL in the
// middle of a run: a second run of the same command keeps every whole line
// of the output and the journal, samples and judges only what is missing,
// and ends with the output an uninterrupted run writes, byte for byte —
// every kept answer exactly once, in the prompts' order.
func TestSelfSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the kdnative binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "kdnative")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/kdnative")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const nPrompts, n = 60, 4
	var pb strings.Builder
	for i := range nPrompts {
		fmt.Fprintf(&pb, `{"prompt":"Call me Ishmael, number %d."}`+"\n", i)
	}
	prompts := filepath.Join(dir, "prompts.jsonl")
	if err := os.WriteFile(prompts, []byte(pb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	args := func(out string) []string {
		return []string{"--device", "cpu", "elicit", "self", "--student", demoModel(t), "--student-template", "chatml",
			"--prompts", prompts, "--output", out, "--must-match", ",", "--n", fmt.Sprint(n), "--max-tokens", "32",
			"--temperature", "1", "--seed", "3", "--batch-size", "2", "--quiet"}
	}
	runToEnd := func(out, logName string) {
		t.Helper()
		cmd := exec.Command(bin, args(out)...)
		logData, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", logName, err, logData)
		}
	}
	whole := filepath.Join(dir, "whole.jsonl")
	runToEnd(whole, "the uninterrupted run")

	out := filepath.Join(dir, "out.jsonl")
	journal := strings.TrimSuffix(out, ".jsonl") + ".samples.jsonl"
	cmd := exec.Command(bin, args(out)...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(120 * time.Second)
	for {
		data, _ := os.ReadFile(journal)
		if bytes.Count(data, []byte("\n")) >= nPrompts*n/2 { // a quarter of the answers, judged
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("self exited (%v) before the kill\n%s", err, log.String())
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			t.Fatalf("too few journal lines after 120 s\n%s", log.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Kill() // SIGKILL: no chance to clean up
	<-exited
	if cmd.ProcessState.Success() {
		t.Log("the first run finished before the kill landed")
	}
	wholeLines := func(path string) [][]byte {
		b, _ := os.ReadFile(path)
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			lines := bytes.SplitAfter(b[:i+1], []byte("\n"))
			return lines[:len(lines)-1]
		}
		return nil
	}
	keptOut, keptJournal := wholeLines(out), wholeLines(journal)

	runToEnd(out, "the second run")
	want, _ := os.ReadFile(whole)
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatalf("the output after a kill and a resume differs from an uninterrupted run's:\n%s\nvs\n%s", got, want)
	}
	if bytes.Count(want, []byte("\n")) == 0 {
		t.Fatal("nothing was kept: the test needs some answers to match")
	}
	for i, line := range keptOut {
		if !bytes.HasPrefix(got, bytes.Join(keptOut[:i+1], nil)) {
			t.Fatalf("output line %d changed across the kill: %s", i+1, line)
		}
	}
	final := wholeLines(journal)
	for i, line := range keptJournal {
		if !bytes.Equal(final[i], line) {
			t.Fatalf("journal line %d changed across the kill:\nbefore %s\nafter  %s", i+1, line, final[i])
		}
	}
	seen := map[string]bool{}
	for _, line := range final {
		var rec struct{ ID string }
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("journal line %q: %v", line, err)
		}
		if seen[rec.ID] {
			t.Fatalf("journal: %s written twice", rec.ID)
		}
		seen[rec.ID] = true
	}
	if len(final) != 2*nPrompts*n {
		t.Fatalf("journal has %d lines, want an answer and a judgement for each of %d answers", len(final), nPrompts*n)
	}
	t.Logf("%d journal lines and %d output lines survived the kill; %d output lines in all", len(keptJournal), len(keptOut), bytes.Count(got, []byte("\n")))
}
