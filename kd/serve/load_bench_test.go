package serve

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// benchModel writes a random-weight model of SmolLM2-135M's shape (30
// layers, width 576, 9 heads / 3 key-value heads, MLP 1536, vocabulary
// 49,152; 2,048 positions) with the demo's tokenizer into a folder. The
// load sends token-id prompts, so the tokenizer only decodes (ids it does
// not know decode to nothing). KDNATIVE_BENCH_SERVE_MODEL=small takes a
// 4-layer model of width 256 instead, for a quick run.
//
// KDNATIVE_BENCH_SERVE_DIR names a folder to keep the model in between runs
// (it is made when it has no config.json).
func benchModel(b *testing.B) string {
	b.Helper()
	dir := os.Getenv("KDNATIVE_BENCH_SERVE_DIR")
	if dir == "" {
		dir = b.TempDir()
	} else if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		return dir
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	cfg := map[string]any{"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama", "hidden_size": 576,
		"intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3, "num_hidden_layers": 30,
		"vocab_size": 49152, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
		"tie_word_embeddings": true, "eos_token_id": 256, "torch_dtype": "float32"}
	if os.Getenv("KDNATIVE_BENCH_SERVE_MODEL") == "small" {
		cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["num_hidden_layers"], cfg["vocab_size"] = 256, 704, 4, 2, 4, 8192
	}
	js, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), js, 0o644); err != nil {
		b.Fatal(err)
	}
	c, err := model.ParseConfig(js, "config.json")
	if err != nil {
		b.Fatal(err)
	}
	m, err := model.New(c, cpu.New())
	if err != nil {
		b.Fatal(err)
	}
	if err := m.InitRandom(1); err != nil {
		b.Fatal(err)
	}
	if err := m.SaveDir(dir, 0); err != nil {
		b.Fatal(err)
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		data, err := os.ReadFile(filepath.Join("../demo/assets/tokenizer", f))
		if err != nil {
			b.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), data, 0o644)
	}
	return dir
}

// loadResult is one load run's numbers.
type loadResult struct {
	requests, tokens int
	wall             time.Duration
	latencies        []time.Duration // sorted
}

func (r loadResult) quantile(q float64) time.Duration {
	return r.latencies[min(len(r.latencies)-1, int(q*float64(len(r.latencies))))]
}

// runLoad is the load generator: clients closed-loop clients each send
// perClient completion requests one after another — token-id prompts of
// 16 to 112 tokens, 32 new tokens each, greedy — and it measures every
// request's latency (queueing included) and the wall time of the whole.
func runLoad(b *testing.B, url string, clients, perClient, vocab int) loadResult {
	var mu sync.Mutex
	var res loadResult
	var wg sync.WaitGroup
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range perClient {
				n := 16 + (c*7+r*13)%97
				ids := make([]string, n)
				for i := range ids {
					ids[i] = fmt.Sprint((c*1009 + r*31 + i*17) % vocab)
				}
				body := `{"model":"m","prompt":[` + strings.Join(ids, ",") + `],"max_tokens":32,"temperature":0}`
				t0 := time.Now()
				resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
				if err != nil {
					b.Error(err)
					return
				}
				var out struct {
					Usage struct {
						CompletionTokens int `json:"completion_tokens"`
					}
				}
				json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
				mu.Lock()
				res.latencies = append(res.latencies, time.Since(t0))
				res.tokens += out.Usage.CompletionTokens
				res.requests++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.wall = time.Since(start)
	slices.Sort(res.latencies)
	return res
}

// BenchmarkServeLoad is the load generator behind docs/serving.md: 1, 4
// and 16 concurrent clients against the server decoding one sequence at a
// time (batch=1, what serve did before continuous batching) and 16
// together (the default), in the same process. It reports requests/s,
// generated tokens/s, and the p50/p95 latency of a request. Run with
// -benchtime 1x:
//
//	go test -run '^$' -bench ServeLoad -benchtime 1x -timeout 60m ./kd/serve/
func BenchmarkServeLoad(b *testing.B) {
	dir := benchModel(b)
	per := map[int]int{1: 4, 4: 3, 16: 2}
	for _, batch := range []int{1, 16} {
		s, err := New(cpu.New(), Config{Model: dir, ModelName: "m", MaxBatch: batch, MaxQueue: 64})
		if err != nil {
			b.Fatal(err)
		}
		ts := httptest.NewServer(s)
		vocab := s.m.Config.Vocab
		for _, clients := range []int{1, 4, 16} {
			b.Run(fmt.Sprintf("batch=%d/clients=%d", batch, clients), func(b *testing.B) {
				var r loadResult
				for range b.N {
					r = runLoad(b, ts.URL, clients, per[clients], vocab)
				}
				b.ReportMetric(float64(r.requests)/r.wall.Seconds(), "req/s")
				b.ReportMetric(float64(r.tokens)/r.wall.Seconds(), "tok/s")
				b.ReportMetric(r.quantile(0.5).Seconds(), "p50-s")
				b.ReportMetric(r.quantile(0.95).Seconds(), "p95-s")
				b.ReportMetric(0, "ns/op")
			})
		}
		ts.Close()
		s.Close()
	}
}
