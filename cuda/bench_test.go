package cuda

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// TestBenchKernelsRuns runs the kernel benchmark at a tiny shape, so that
// its calls (shapes, dtypes, the sparse teacher it builds) are checked here
// rather than first on the GPU machine, and prints its table.
func TestBenchKernelsRuns(t *testing.T) {
	g := gpuOrSkip(t)
	sh := BenchShape{Tokens: 64, T: 32, Hidden: 48, FFN: 80, NH: 4, NKV: 2, HeadDim: 12, Vocab: 1000,
		AttnT: []int{32}, AttnHD: []int{12, 64}} // the scalar and the tensor-core BF16 kernels
	ceil := Ceilings{CopyGBs: 1000, BF16TFLOPs: 100}
	rows, err := g.BenchKernels(sh, ceil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 15 {
		t.Errorf("the benchmark measured %d ops", len(rows))
	}
	var buf bytes.Buffer
	if err := WriteKernelTable(&buf, g.Device(), ceil, rows); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Seconds <= 0 || r.Rate <= 0 || r.Fraction <= 0 {
			t.Errorf("%s: %+v", r.Op, r)
		}
		if !strings.Contains(buf.String(), r.Op) {
			t.Errorf("the table lacks %s", r.Op)
		}
	}
	t.Logf("\n%s", buf.String())
}

// BenchmarkKDFusedVsPlainGPU is kd/loss's BenchmarkKDFusedVsPlain on the GPU:
// the forward-KL KD loss and its backward (to the hidden states and the
// lm_head) against an online teacher at Qwen2.5-0.5B's width and vocabulary,
// fused and chunked under the default memory budget versus plain (every
// [N × V] logit in memory at once), with the peak GPU memory the call added
// (the allocator's counter) and tokens/s. N is 4,096 tokens, or
// KDNATIVE_BENCH_TOKENS (the GPU check sets 8,192: a batch of 8 × 1024). It
// needs a real GPU (the emulator would take hours); scripts/gpu-check.sh
// runs it:
//
//	./cuda.test -test.run '^$' -test.bench KDFusedVsPlainGPU -test.benchtime 3x
func BenchmarkKDFusedVsPlainGPU(b *testing.B) {
	g, err := Open()
	if err != nil {
		b.Skipf("needs an NVIDIA GPU: %v", err)
	}
	const C, V = 896, 151936
	N := 4096
	if n, err := strconv.Atoi(os.Getenv("KDNATIVE_BENCH_TOKENS")); err == nil && n > 0 {
		N = n
	}
	for _, variant := range []struct {
		name string
		opt  loss.Options
	}{{"fused", loss.Options{}}, {"plain", loss.Options{ChunkRows: N}}} {
		b.Run(fmt.Sprintf("%s/N=%d,C=%d,V=%d", variant.name, N, C, V), func(b *testing.B) {
			s := &benchSet{b: g, r: rand.New(rand.NewPCG(1, 1))}
			defer s.free()
			hidden, th := s.rand("h", kdrt.F32, 1, N, C), s.rand("th", kdrt.F32, 1, N, C)
			head := loss.Head{W: s.rand("w", kdrt.F32, 0.05, V, C), G: s.rand("gw", kdrt.F32, 0, V, C)}
			teacher := loss.TeacherHidden{Hidden: th, Head: s.rand("tw", kdrt.F32, 0.05, V, C)}
			dHidden := s.rand("dh", kdrt.F32, 0, N, C)
			if s.err != nil {
				b.Fatal(s.err)
			}
			cfg := loss.KDConfig{Divergence: kdrt.ForwardKL, Temperature: 1}
			var peak uint64
			for b.Loop() {
				g.ResetPeak()
				base := g.Memory().InUse
				if _, err := loss.KD(g, hidden, head, dHidden, teacher, nil, cfg, 1, variant.opt); err != nil {
					b.Fatal(err)
				}
				if err := g.Sync(); err != nil {
					b.Fatal(err)
				}
				peak = max(peak, g.Memory().PeakInUse-base)
			}
			b.ReportMetric(float64(peak)/1e6, "peak-MB")
			b.ReportMetric(float64(N)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

// BenchmarkDecodeGPU: the engine's steps that only decode (kdnative
// generate, serve, on-policy and RL sampling) at the Qwen2.5-0.5B shape
// (scripts/gpu/qwen2.5-0.5b.json, or the config.json KDNATIVE_BENCH_CONFIG
// names) with random BF16 weights: 16 sequences with 128-token prompts,
// each step one new token for every sequence, with CUDA graphs and without.
// It reports tokens/s and launches per step (the graph's replay is one; a
// cache that grows makes a step run as usual and the next be captured). It
// needs a real GPU; scripts/gpu/run.sh runs it:
//
//	./cuda.test -test.run '^$' -test.bench DecodeGPU -test.benchtime 200x
func BenchmarkDecodeGPU(b *testing.B) {
	g, err := Open()
	if err != nil {
		b.Skipf("needs an NVIDIA GPU: %v", err)
	}
	benchDecode(b, g)
}

func benchDecode(b *testing.B, g *Backend) {
	path := os.Getenv("KDNATIVE_BENCH_CONFIG")
	if path == "" {
		path = filepath.Join("..", "scripts", "gpu", "qwen2.5-0.5b.json")
	}
	cfg, err := model.LoadConfig(path)
	if err != nil {
		b.Fatal(err)
	}
	m, err := model.New(cfg, g, model.Storage(kdrt.BF16))
	if err != nil {
		b.Fatal(err)
	}
	if err := m.InitRandom(1); err != nil {
		b.Fatal(err)
	}
	const rows, prompt = 16, 128
	r := rand.New(rand.NewPCG(2, 3))
	for _, graphs := range []string{"1", "0"} {
		b.Run(fmt.Sprintf("graphs=%s/rows=%d,prompt=%d", graphs, rows, prompt), func(b *testing.B) {
			b.Setenv("KDNATIVE_CUDA_GRAPHS", graphs)
			e, err := m.NewEngine(model.EngineConfig{MaxRows: rows, StepTokens: rows * prompt})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			for range rows {
				p := make([]int32, prompt)
				for i := range p {
					p[i] = int32(r.IntN(cfg.Vocab))
				}
				s := &model.Seq{Prompt: p, Params: model.GenerateParams{MaxTokens: cfg.MaxPositions - prompt}}
				if ok, err := e.Add(s); err != nil || !ok {
					b.Fatalf("adding a sequence: %v, %v", ok, err)
				}
			}
			for range 3 { // the prompts, then a step as usual and the captured one
				if _, err := e.Step(); err != nil {
					b.Fatal(err)
				}
			}
			g.ResetCounters()
			n := 0
			for b.Loop() {
				if _, err := e.Step(); err != nil {
					b.Fatal(err)
				}
				n++
			}
			c := g.Counters()
			b.ReportMetric(float64(rows*n)/b.Elapsed().Seconds(), "tokens/s")
			b.ReportMetric(float64(c.Launches)/float64(n), "launches/step")
			b.ReportMetric(float64(c.Syncs)/float64(n), "syncs/step")
		})
	}
}
