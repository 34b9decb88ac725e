package elicit

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func words(r *rand.Rand, n int) []string {
	w := make([]string, n)
	for i := range w {
		w[i] = fmt.Sprintf("w%d", r.IntN(5000))
	}
	return w
}

func TestCurate(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	long := words(r, 200)
	edited := append([]string(nil), long...)
	edited[100] = "changed" // 5-gram Jaccard ≈ 0.95
	other := words(r, 200)
	recs := []map[string]string{
		{"prompt": "q1", "response": strings.Join(long, " ")},
		{"prompt": "q1", "response": strings.Join(long, " ")},                          // exact
		{"prompt": "Q1", "response": "  " + strings.ToUpper(strings.Join(long, "  "))}, // exact after normalizing
		{"prompt": "q1", "response": strings.Join(edited, " ")},                        // near
		{"prompt": "q2", "response": strings.Join(other, " ")},                         // kept
		{"prompt": "q3", "response": "tiny"},                                           // too short
		{"prompt": "вопрос", "response": "это ответ на русском языке, довольно длинный ответ"}, // other script
		{"prompt": "", "response": ""}, // empty
	}
	dir := t.TempDir()
	in, out, dropped := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "out.jsonl"), filepath.Join(dir, "dropped.jsonl")
	var b strings.Builder
	for _, rec := range recs {
		js, _ := json.Marshal(rec)
		b.Write(append(js, '\n'))
	}
	os.WriteFile(in, []byte(b.String()), 0o644)
	rep, err := Curate(CurateConfig{Input: in, Output: out, Dropped: dropped, MinChars: 10, Script: "latin", NearDup: 0.8})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"exact duplicate": 2, "near duplicate": 1, "too short": 1, "other script": 1, "empty": 1}
	for k, v := range want {
		if rep.Dropped[k] != v {
			t.Errorf("%s: dropped %d, want %d (%s)", k, rep.Dropped[k], v, rep)
		}
	}
	if rep.Read != 8 || rep.Kept != 2 {
		t.Fatalf("%s", rep)
	}
	data, _ := os.ReadFile(out)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"q1"`) || !strings.Contains(lines[1], `"q2"`) {
		t.Fatalf("kept, in order: %s", data)
	}
	dd, _ := os.ReadFile(dropped)
	if strings.Count(string(dd), `"reason"`) != 6 {
		t.Fatalf("dropped file: %s", dd)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".*.tmp*")); len(m) != 0 {
		t.Fatalf("temporary files left: %v", m)
	}
	for _, p := range []string{out, dropped} {
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o644 {
			t.Errorf("%s has mode %v, want 0644 like every other output", p, st.Mode().Perm())
		}
	}
	// Without near-duplicate removal the edited copy stays.
	rep, err = Curate(CurateConfig{Input: in, Output: out})
	if err != nil || rep.Dropped["near duplicate"] != 0 || rep.Dropped["exact duplicate"] != 2 {
		t.Fatalf("exact only: %s %v", rep, err)
	}
}

// TestMinHashThreshold: pairs whose true 5-gram Jaccard similarity is well
// above the threshold are caught and pairs well below are not.
func TestMinHashThreshold(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	for trial := range 20 {
		base := words(r, 300)
		near := append([]string(nil), base...)
		for range 3 { // three edits: Jaccard ≈ 0.9
			near[r.IntN(len(near))] = fmt.Sprintf("edit%d", r.IntN(1000))
		}
		far := append([]string(nil), base[:90]...) // a shared 30% prefix: Jaccard ≈ 0.18
		far = append(far, words(r, 210)...)
		l := newLSH(0.7)
		l.add(strings.Join(base, " "))
		if !l.nearDuplicate(strings.Join(near, " ")) {
			t.Errorf("trial %d: a near copy (Jaccard ≈ 0.9) was not caught", trial)
		}
		if l.nearDuplicate(strings.Join(far, " ")) {
			t.Errorf("trial %d: a different text (Jaccard ≈ 0.2) was called a duplicate", trial)
		}
	}
}

// TestCurateBadInput: a bad line is an error naming the file and line; the
// outputs of an earlier run are left as they were, though more than the
// write buffer of kept and dropped records reached the temporary files
// before the bad line, and no temporary file stays.
func TestCurateBadInput(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	var b strings.Builder
	for i := range 200 {
		fmt.Fprintf(&b, "{\"prompt\": \"a kept record number %d, long enough\"}\n{\"prompt\": \"\"}\n", i)
	}
	os.WriteFile(in, []byte(b.String()+"not json\n"), 0o644)
	out, dropped := filepath.Join(dir, "out.jsonl"), filepath.Join(dir, "dropped.jsonl")
	os.WriteFile(out, []byte("previous"), 0o644)
	os.WriteFile(dropped, []byte("previous dropped"), 0o644)
	if _, err := Curate(CurateConfig{Input: in, Output: out, Dropped: dropped}); err == nil || !strings.Contains(err.Error(), "in.jsonl:401") {
		t.Fatalf("bad line: %v", err)
	}
	if data, _ := os.ReadFile(out); string(data) != "previous" {
		t.Fatalf("a failed run touched the output: %q", data)
	}
	if data, _ := os.ReadFile(dropped); string(data) != "previous dropped" {
		t.Fatalf("a failed run touched the dropped file: %q", data)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".*")); len(m) != 0 {
		t.Fatalf("temporary files left: %v", m)
	}
	if _, err := Curate(CurateConfig{Input: in, Output: out, Script: "klingon"}); err == nil || !strings.Contains(err.Error(), "unknown script") {
		t.Fatalf("unknown script: %v", err)
	}
}

// TestCurateReportWords: the report says what was dropped, per reason, and
// says so when nothing was (no empty "dropped: ").
func TestCurateReportWords(t *testing.T) {
	if got := (CurateReport{Read: 5, Kept: 5, Dropped: map[string]int{}}).String(); got != "5 records read, 5 kept, none dropped" {
		t.Fatalf("%q", got)
	}
	if got := (CurateReport{Read: 9, Kept: 5, Dropped: map[string]int{"too short": 1, "exact duplicate": 3}}).String(); got != "9 records read, 5 kept, 4 dropped (3 exact duplicate, 1 too short)" {
		t.Fatalf("%q", got)
	}
}

// TestCurateLongLine: an input line past the line limit is an error naming
// the file and the line, not bufio's "token too long"; the output is left as
// it was.
func TestCurateLongLine(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	long := `{"prompt": "` + strings.Repeat("a", maxCurateLine) + `"}`
	os.WriteFile(in, []byte("{\"prompt\": \"a\"}\n\n"+long+"\n{\"prompt\": \"b\"}\n"), 0o644)
	out := filepath.Join(dir, "out.jsonl")
	_, err := Curate(CurateConfig{Input: in, Output: out})
	if err == nil || !strings.Contains(err.Error(), "in.jsonl:3: ") || !strings.Contains(err.Error(), "longer than 64 MiB") {
		t.Fatalf("got %v, want in.jsonl:3: … longer than 64 MiB", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a failed run wrote %s: %v", out, err)
	}
}
