package cuda

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/kdnative/kdnative/kd/demo"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestDemoMatchesCPU runs the built-in demo (online-teacher KD with the
// fused, chunked loss, AdamW, evaluation, checkpoints, and sampling through
// the KV cache) for a few steps on the GPU and on the CPU, both in bf16 (the
// GPU's default: BF16 weights and activations, the teacher's inference
// forward, F32 masters, logits and losses): the student's KL to the teacher
// before and after must agree, and must fall.
func TestDemoMatchesCPU(t *testing.T) {
	t.Setenv("KDNATIVE_CUDA_GRAPHS", "1") // the trainer's steps as graphs, as the GPU check runs them
	if testing.Short() {
		t.Skip("trains the demo twice")
	}
	g := gpuOrSkip(t)
	// The demo's first 8 validation pieces, so that the evaluations before
	// and after (which the emulator runs slowly) stay short.
	val := filepath.Join(t.TempDir(), "val.jsonl")
	if err := firstLines(filepath.Join("..", "kd", "demo", "assets", "data", "val.jsonl.gz"), val, 8); err != nil {
		t.Fatal(err)
	}
	kl := func(be kdrt.Backend) (before, after float64) {
		var log bytes.Buffer
		out := filepath.Join(t.TempDir(), "demo")
		err := demo.Run(context.Background(), be, demo.Options{Output: out, Log: &log,
			Sets: []string{"max_steps=6", "save_every=0", "eval_every=0", "batch_size=4", "data.max_len=64", "data.val=" + val, "precision=bf16"}})
		if err != nil {
			t.Fatalf("%s: %v\n%s", be.Name(), err, log.String())
		}
		m := regexp.MustCompile(`KL\(teacher‖student\)\s+([0-9.]+) → ([0-9.]+)`).FindStringSubmatch(log.String())
		if m == nil {
			t.Fatalf("%s: the demo printed no KL:\n%s", be.Name(), log.String())
		}
		before, _ = strconv.ParseFloat(m[1], 64)
		after, _ = strconv.ParseFloat(m[2], 64)
		return before, after
	}
	gb, ga := kl(g)

	cb, ca := kl(cpu.New())
	t.Logf("KL on the GPU %.4f → %.4f, on the CPU %.4f → %.4f", gb, ga, cb, ca)
	if math.Abs(gb-cb) > 1e-3*cb || math.Abs(ga-ca) > 1e-2*ca {
		t.Errorf("GPU KL %.4f → %.4f differs from the CPU's %.4f → %.4f", gb, ga, cb, ca)
	}
	if !(ga < gb) {
		t.Errorf("GPU KL did not fall: %.4f → %.4f", gb, ga)
	}
}

// firstLines writes the first n lines of a gzip-compressed file to dst.
func firstLines(src, dst string, n int) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 1<<24)
	var out []byte
	for i := 0; i < n && sc.Scan(); i++ {
		out = append(append(out, sc.Bytes()...), '\n')
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	return os.WriteFile(dst, out, 0o644)
}
