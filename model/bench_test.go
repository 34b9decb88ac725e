package model_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/optim"
	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// benchConfigs are the shapes the benchmarks name: a Llama-shaped
// student and GPT-2 124M, both with random weights.
var benchConfigs = map[string]string{
	"llama-8L-512": `{"model_type": "llama", "vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1536,
		"num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 2048,
		"rms_norm_eps": 1e-5, "tie_word_embeddings": false}`,
	"gpt2-124M": `{"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12,
		"n_positions": 1024, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}`,
}

// peakRSS is the process's peak resident set (VmHWM), in bytes.
func peakRSS() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb * 1024
		}
	}
	return 0
}

// BenchmarkTrainStep times one training step — forward, backward, clipping
// and AdamW — and reports tokens/s, the model GFLOP/s it achieves, the memory
// the step's tensors take (parameters, gradients, moments, activations) and
// the process's peak RSS. Run one at a time for a clean peak-RSS figure:
//
//	go test -run '^$' -bench 'TrainStep/gpt2' -benchtime 3x ./model/
func BenchmarkTrainStep(b *testing.B) {
	for _, bc := range []struct {
		name string
		B, T int
		prec kdrt.Precision
	}{{"gpt2-124M", 4, 64, kdrt.PrecisionFP32}, {"llama-8L-512", 1, 256, kdrt.PrecisionFP32},
		{"gpt2-124M", 4, 64, kdrt.PrecisionBF16}, {"llama-8L-512", 1, 256, kdrt.PrecisionBF16}} {
		b.Run(fmt.Sprintf("%s/B=%d,T=%d/%s", bc.name, bc.B, bc.T, bc.prec), func(b *testing.B) {
			cfg, err := model.ParseConfig([]byte(benchConfigs[bc.name]), bc.name)
			if err != nil {
				b.Fatal(err)
			}
			be := cpu.New()
			m, err := model.New(cfg, be, model.ForPrecision(bc.prec, true)...)
			if err != nil {
				b.Fatal(err)
			}
			if err := m.InitRandom(1); err != nil {
				b.Fatal(err)
			}
			if err := m.ZeroGrad(); err != nil {
				b.Fatal(err)
			}
			var slots []optim.Slot
			for _, p := range m.Params() {
				slots = append(slots, optim.Slot{Name: p.Name, W: p.W, G: p.G, Master: p.Master, Decay: !p.NoDecay})
			}
			opt, err := optim.NewAdamW(be, slots, optim.DefaultAdamW)
			if err != nil {
				b.Fatal(err)
			}
			r := rand.New(rand.NewPCG(2, 2))
			batch := model.Batch{B: bc.B, T: bc.T, IDs: make([]int32, bc.B*bc.T), Targets: make([]int32, bc.B*bc.T)}
			for i := range batch.IDs {
				batch.IDs[i] = int32(r.IntN(cfg.Vocab))
				batch.Targets[i] = int32(r.IntN(cfg.Vocab))
			}
			step := func() {
				if err := m.ZeroGrad(); err != nil {
					b.Fatal(err)
				}
				if _, err := m.Forward(batch); err != nil {
					b.Fatal(err)
				}
				if err := m.Backward(); err != nil {
					b.Fatal(err)
				}
				if _, err := opt.Step(1e-4); err != nil {
					b.Fatal(err)
				}
			}
			step() // allocate activations and warm the caches outside the timing
			b.ResetTimer()
			for b.Loop() {
				step()
			}
			sec := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(float64(bc.B*bc.T)/sec, "tokens/s")
			b.ReportMetric(cfg.TrainingFLOPs(bc.B, bc.T)/sec/1e9, "GFLOP/s")
			b.ReportMetric(float64(m.TensorBytes()+opt.TensorBytes())/1e6, "tensor-MB")
			b.ReportMetric(peakRSS()/1e6, "peakRSS-MB")
		})
	}
}

// BenchmarkMatMul measures the backend's matrix product at the shapes one
// GPT-2 124M step at 256 tokens uses (forward y = x·Wᵀ, input gradient
// dx = dy·W, weight gradient dW = dyᵀ·x).
func BenchmarkMatMul(b *testing.B) {
	be := cpu.New()
	N := 256
	for _, s := range []struct {
		name    string
		out, in int
		transA  bool
		transB  bool
		m, n, k int
		aRows   int
		aCols   int
		bRows   int
		bCols   int
	}{
		{name: "fwd-qkv", m: N, n: 2304, k: 768, aRows: N, aCols: 768, bRows: 2304, bCols: 768, transB: true},
		{name: "fwd-mlp-up", m: N, n: 3072, k: 768, aRows: N, aCols: 768, bRows: 3072, bCols: 768, transB: true},
		{name: "fwd-mlp-down", m: N, n: 768, k: 3072, aRows: N, aCols: 3072, bRows: 768, bCols: 3072, transB: true},
		{name: "fwd-lm-head", m: N, n: 50257, k: 768, aRows: N, aCols: 768, bRows: 50257, bCols: 768, transB: true},
		{name: "dx-mlp-up", m: N, n: 768, k: 3072, aRows: N, aCols: 3072, bRows: 3072, bCols: 768},
		{name: "dx-lm-head", m: N, n: 768, k: 50257, aRows: N, aCols: 50257, bRows: 50257, bCols: 768},
		{name: "dW-mlp-up", m: 3072, n: 768, k: N, aRows: N, aCols: 3072, bRows: N, bCols: 768, transA: true},
		{name: "dW-lm-head", m: 50257, n: 768, k: N, aRows: N, aCols: 50257, bRows: N, bCols: 768, transA: true},
	} {
		b.Run(fmt.Sprintf("%s/%dx%dx%d", s.name, s.m, s.n, s.k), func(b *testing.B) {
			a, _ := be.Alloc("a", kdrt.F32, s.aRows, s.aCols)
			bb, _ := be.Alloc("b", kdrt.F32, s.bRows, s.bCols)
			c, _ := be.Alloc("c", kdrt.F32, s.m, s.n)
			r := rand.New(rand.NewPCG(3, 3))
			for _, t := range []*kdrt.Tensor{a, bb} {
				v := cpu.Float32s(t)
				for i := range v {
					v[i] = float32(r.NormFloat64())
				}
			}
			be.MatMul(c, a, bb, s.transA, s.transB, 1, 0)
			b.ResetTimer()
			for b.Loop() {
				be.MatMul(c, a, bb, s.transA, s.transB, 1, 0)
			}
			b.ReportMetric(2*float64(s.m)*float64(s.n)*float64(s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
