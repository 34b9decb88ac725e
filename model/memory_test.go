package model

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// countingBackend is the CPU backend with a chosen amount of free memory,
// counting the bytes of every allocation.
type countingBackend struct {
	*cpu.Backend
	free      int64 // reported by FreeMemory; < 0: the real one
	allocated int64
}

func (b *countingBackend) Alloc(name string, dt kdrt.DType, shape ...int) (*kdrt.Tensor, error) {
	n, err := kdrt.TensorBytes(dt, shape...)
	if err == nil {
		b.allocated += n
	}
	return b.Backend.Alloc(name, dt, shape...)
}

func (b *countingBackend) FreeMemory() (free, total int64, ok bool) {
	if b.free < 0 {
		return b.Backend.FreeMemory()
	}
	return b.free, 2 * b.free, true
}

func gpt2Config(t *testing.T) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(`{"model_type":"gpt2","vocab_size":97,"n_embd":48,"n_layer":2,"n_head":4,"n_positions":16}`), "gpt2")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestMemoryEstimatesMatchAllocations: the weights', activations',
// inference forward's and generator's sizes are what New, a training
// forward's buffers, an inference forward's and a generation really
// allocate, for both architectures and both storage dtypes (the checks that
// refuse oversized plans rely on them).
func TestMemoryEstimatesMatchAllocations(t *testing.T) {
	for _, cfg := range []*Config{BuiltinTiny(), gpt2Config(t)} {
		for _, dt := range []kdrt.DType{kdrt.F32, kdrt.BF16} {
			be := &countingBackend{Backend: cpu.New(), free: -1}
			m, err := New(cfg, be, Storage(dt), MasterWeights())
			if err != nil {
				t.Fatal(err)
			}
			inv := int64(0)
			if m.invFreq != nil {
				inv = int64(m.invFreq.Bytes())
			}
			if got, want := be.allocated-inv, cfg.weightBytes(dt, true); got != want {
				t.Errorf("%s %s: New allocated %d bytes of weights, weightBytes says %d", cfg.ModelType, dt, got, want)
			}
			for _, bt := range [][2]int{{1, 1}, {3, 7}, {2, 16}} {
				be.allocated = 0
				if err := m.prepare(bt[0], bt[1]); err != nil {
					t.Fatal(err)
				}
				if got, want := be.allocated, cfg.activationBytes(dt, bt[0], bt[1]); got != want {
					t.Errorf("%s %s B=%d T=%d: the activations took %d bytes, activationBytes says %d", cfg.ModelType, dt, bt[0], bt[1], got, want)
				}
				be.allocated = 0
				if err := m.prepareInfer(bt[0], bt[1]); err != nil {
					t.Fatal(err)
				}
				if got, want := be.allocated, cfg.inferBytes(dt, bt[0], bt[1]); got != want {
					t.Errorf("%s %s B=%d T=%d: the inference forward took %d bytes, inferBytes says %d", cfg.ModelType, dt, bt[0], bt[1], got, want)
				}
				be.allocated = 0
				g, err := m.newGenerator(bt[0], bt[1])
				if err != nil {
					t.Fatal(err)
				}
				host := int64(len(g.host)) * 4
				// The decode attention's scores, a float32 for every row,
				// head and cache position, are taken by the backend in each
				// call, not by newGenerator.
				scores := int64(4 * bt[0] * cfg.Heads * bt[1])
				if got, want := be.allocated+host+scores, cfg.decoderBytes(dt, bt[0], bt[1]); got != want {
					t.Errorf("%s %s B=%d Tmax=%d: the generator took %d bytes, decoderBytes says %d", cfg.ModelType, dt, bt[0], bt[1], got, want)
				}
				g.free()
			}
		}
	}
}

// TestMemoryEstimatesSaturate: the estimates of absurd plans neither
// overflow nor wrap around to small numbers.
func TestMemoryEstimatesSaturate(t *testing.T) {
	c := BuiltinTiny()
	for _, bt := range [][2]int{{100_000_000_000_000, 512}, {math.MaxInt, math.MaxInt}, {1, math.MaxInt}} {
		if got := c.ActivationBytes(bt[0], bt[1]); got != math.MaxInt64 {
			t.Errorf("ActivationBytes(%d, %d) = %d, want saturation", bt[0], bt[1], got)
		}
	}
	// Just below saturation the estimate is still the product, not wrapped.
	if got, per := c.ActivationBytes(1_000_000_000_000, 512), c.ActivationBytes(1, 512); got != per*1_000_000_000_000 {
		t.Errorf("ActivationBytes(10¹², 512) = %d, want 10¹² × %d", got, per)
	}
	if got := c.inferBytes(kdrt.BF16, math.MaxInt, math.MaxInt); got != math.MaxInt64 {
		t.Errorf("inferBytes(MaxInt, MaxInt) = %d", got)
	}
	if got := c.KVCacheBytes(1, math.MaxInt); got != math.MaxInt64 {
		t.Errorf("KVCacheBytes(1, MaxInt) = %d", got)
	}
}

// TestNewRefusesWeightsOverFreeMemory: a model larger than the backend's
// free memory is an error giving both sizes, and nothing is allocated.
func TestNewRefusesWeightsOverFreeMemory(t *testing.T) {
	cfg := BuiltinTiny()
	be := &countingBackend{Backend: cpu.New(), free: cfg.WeightBytes() - 1}
	_, err := New(cfg, be)
	var oom *kdrt.OutOfMemoryError
	if !errors.As(err, &oom) || oom.Need != cfg.WeightBytes() || !strings.Contains(err.Error(), "parameters needs") {
		t.Fatalf("New with too little memory: %v", err)
	}
	if be.allocated != 0 {
		t.Errorf("%d bytes allocated before refusing", be.allocated)
	}
	be.free = cfg.WeightBytes() + 4096
	if _, err := New(cfg, be); err != nil {
		t.Errorf("New with enough memory: %v", err)
	}
}

// TestLoadDirChecksShapesBeforeAllocating: a config.json whose sizes are in
// bounds but disagree with the weights (vocab_size 16,777,216 beside a
// 256-row embedding: 4 GB for the embedding alone) fails on the shape without
// allocating anything.
func TestLoadDirChecksShapesBeforeAllocating(t *testing.T) {
	dir := t.TempDir()
	m, err := New(BuiltinTiny(), cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.InitRandom(1); err != nil {
		t.Fatal(err)
	}
	if err := m.SaveDir(dir, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDir(dir, cpu.New()); err != nil {
		t.Fatalf("the saved model does not load: %v", err)
	}
	var raw map[string]any
	data, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	json.Unmarshal(data, &raw)
	raw["vocab_size"] = MaxVocab
	data, _ = json.Marshal(raw)
	os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644)

	be := &countingBackend{Backend: cpu.New(), free: -1}
	_, err = LoadDir(dir, be)
	if err == nil || !strings.Contains(err.Error(), "model.embed_tokens.weight") || !strings.Contains(err.Error(), "[16777216 64]") {
		t.Fatalf("LoadDir with vocab_size %d: %v", MaxVocab, err)
	}
	if be.allocated != 0 {
		t.Errorf("LoadDir allocated %d bytes before finding the shapes disagree", be.allocated)
	}
}

// TestParseConfigBounds: every size key is bounded, with the key and the
// limit in the message (the head_dim 2⁴⁰ panicked in make, and
// num_hidden_layers 2⁶² in ParseConfig itself).
func TestParseConfigBounds(t *testing.T) {
	llama := map[string]any{"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 176,
		"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 128}
	gpt2 := map[string]any{"model_type": "gpt2", "vocab_size": 97, "n_embd": 48, "n_layer": 2, "n_head": 4, "n_positions": 16, "n_inner": 192}
	for key, limit := range sizeLimits {
		base := llama
		if _, ok := gpt2[key]; ok && key != "vocab_size" {
			base = gpt2
		}
		for _, v := range []int{limit + 1, 1 << 40, 1 << 62, math.MaxInt64} {
			c := map[string]any{}
			for k, x := range base {
				c[k] = x
			}
			c[key] = v
			data, _ := json.Marshal(c)
			_, err := ParseConfig(data, "config.json")
			if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "larger than kdnative supports") {
				t.Errorf("%s = %d: %v", key, v, err)
			}
		}
	}
	// A head size that comes out too large from hidden_size / heads.
	c := map[string]any{}
	for k, x := range llama {
		c[k] = x
	}
	delete(c, "head_dim")
	c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"] = MaxHidden, 2, 2
	data, _ := json.Marshal(c)
	if _, err := ParseConfig(data, "config.json"); err == nil || !strings.Contains(err.Error(), "head size of 65536") {
		t.Errorf("hidden_size %d over 2 heads: %v", MaxHidden, err)
	}
	// qwen2's max_window_layers < 0 indexed the layer list out of range.
	c = map[string]any{}
	for k, x := range llama {
		c[k] = x
	}
	c["model_type"], c["use_sliding_window"], c["sliding_window"], c["max_window_layers"] = "qwen2", true, 64, -5
	data, _ = json.Marshal(c)
	if _, err := ParseConfig(data, "config.json"); err == nil || !strings.Contains(err.Error(), "max_window_layers -5") {
		t.Errorf("max_window_layers -5: %v", err)
	}
}

// TestGenerateRefusesHugeKVCache is the generate --max-tokens 10⁹ on
// a model that allows that many positions: the key/value cache (512 GB for
// the tiny model) is refused with its size and the free memory, before any
// allocation; before, the first cache tensor killed the process.
func TestGenerateRefusesHugeKVCache(t *testing.T) {
	cfg := BuiltinTiny()
	cfg.MaxPositions = MaxPositionsLimit
	be := &countingBackend{Backend: cpu.New(), free: 16e9}
	m, err := New(cfg, be)
	if err != nil {
		t.Fatal(err)
	}
	be.allocated = 0
	_, err = m.Generate([]int32{1, 2, 3}, GenerateParams{MaxTokens: 1_000_000_000})
	var oom *kdrt.OutOfMemoryError
	if !errors.As(err, &oom) || !strings.Contains(err.Error(), "key/value cache of 512.0 GB") ||
		!strings.Contains(err.Error(), "16.0 GB free") || !strings.Contains(err.Error(), "fewer new tokens") {
		t.Fatalf("Generate of 10⁹ tokens: %v", err)
	}
	if be.allocated != 0 {
		t.Errorf("%d bytes allocated before refusing", be.allocated)
	}
	// A max tokens near MaxInt wrapped the position count around.
	if _, err := m.Generate([]int32{1, 2, 3}, GenerateParams{MaxTokens: math.MaxInt}); err == nil || !strings.Contains(err.Error(), "longer than the model allows") {
		t.Errorf("Generate of MaxInt tokens: %v", err)
	}
	// Within memory it generates.
	if _, err := m.Generate([]int32{1, 2, 3}, GenerateParams{MaxTokens: 4}); err != nil {
		t.Errorf("Generate of 4 tokens: %v", err)
	}
}
