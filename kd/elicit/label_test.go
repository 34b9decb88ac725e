package elicit

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/serve"
	"github.com/kdnative/kdnative/model/tokenizer"
	"github.com/kdnative/kdnative/runtime/cpu"
)

const chatML = `{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}`

var (
	demoOnce sync.Once
	demoDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if demoDir != "" {
		os.RemoveAll(filepath.Dir(demoDir))
	}
	os.Exit(code)
}

// demoModel is the demo teacher with its tokenizer and a ChatML template.
func demoModel(t *testing.T) string {
	t.Helper()
	demoOnce.Do(func() {
		dir, err := os.MkdirTemp("", "elicit-demo")
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(dir, "demo-teacher")
		os.Mkdir(dir, 0o755)
		for src, dst := range map[string]string{
			"../demo/assets/teacher/config.json":             "config.json",
			"../demo/assets/teacher/model.safetensors":       "model.safetensors",
			"../demo/assets/tokenizer/tokenizer.json":        "tokenizer.json",
			"../demo/assets/tokenizer/tokenizer_config.json": "tokenizer_config.json",
		} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if dst == "tokenizer_config.json" {
				var cfg map[string]any
				if err := json.Unmarshal(b, &cfg); err != nil {
					t.Fatal(err)
				}
				cfg["chat_template"] = chatML
				b, _ = json.Marshal(cfg)
			}
			if err := os.WriteFile(filepath.Join(dir, dst), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		demoDir = dir
	})
	if demoDir == "" {
		t.Fatal("no demo model")
	}
	return demoDir
}

// teacher starts kdnative serve with the demo model on loopback.
func teacher(t *testing.T) *httptest.Server {
	t.Helper()
	s, err := serve.New(cpu.New(), serve.Config{Model: demoModel(t), MaxQueue: 64})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(func() { ts.Close(); s.Close() })
	return ts
}

func client(url string) *Client {
	return &Client{BaseURL: url + "/v1", Model: "demo-teacher", Timeout: 20 * time.Second, Backoff: time.Millisecond, MaxRetries: 8}
}

func writePrompts(t *testing.T, n int, extra ...string) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		if i%3 == 2 {
			fmt.Fprintf(&b, `{"messages":[{"role":"user","content":"Tell me about whale %d."}]}`+"\n", i)
		} else {
			fmt.Fprintf(&b, `{"prompt":"Call me Ishmael, number %d. "}`+"\n", i)
		}
	}
	for _, e := range extra {
		b.WriteString(e + "\n")
	}
	p := filepath.Join(t.TempDir(), "prompts.jsonl")
	os.WriteFile(p, []byte(b.String()), 0o644)
	return p
}

// readOutput reads an output file's records, failing on a repeated id.
func readOutput(t *testing.T, path string) map[string]map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs := map[string]map[string]any{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		id := rec["id"].(string)
		if recs[id] != nil {
			t.Fatalf("id %s written twice", id)
		}
		recs[id] = rec
	}
	return recs
}

func wantAll(t *testing.T, recs map[string]map[string]any, prompts, n int) {
	t.Helper()
	if len(recs) != prompts*n {
		t.Fatalf("%d records, want %d", len(recs), prompts*n)
	}
	for p := 1; p <= prompts; p++ {
		for s := range n {
			if recs[fmt.Sprintf("p%d.s%d", p, s)] == nil {
				t.Fatalf("p%d.s%d missing", p, s)
			}
		}
	}
}

func temp(v float64) *float64 { return &v }

func TestLabelEndToEnd(t *testing.T) {
	ts := teacher(t)
	prompts := writePrompts(t, 6, `not json`, `{"text":"no prompt"}`, `{"messages":[{"role":"assistant","content":"x"}]}`)
	out := filepath.Join(t.TempDir(), "out.jsonl")
	var log strings.Builder
	sum, err := Label(context.Background(), LabelConfig{Client: client(ts.URL), Prompts: prompts, Output: out, N: 2,
		System: "You are terse.", Temperature: temp(0.7), MaxTokens: 6, TopLogprobs: 3, StudentTokenizer: demoModel(t), Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Records != 12 || sum.BadLines != 3 || sum.Failures != 0 || sum.CompletionTokens == 0 || sum.PromptTokens == 0 {
		t.Fatalf("summary %+v", sum)
	}
	if strings.Count(log.String(), "skipped") != 3 || !strings.Contains(log.String(), "line 7") {
		t.Fatalf("log: %s", log.String())
	}
	t.Log(sum)
	recs := readOutput(t, out)
	wantAll(t, recs, 6, 2)
	r := recs["p1.s0"]
	msgs := r["messages"].([]any)
	if r["prompt"] != "Call me Ishmael, number 0. " || len(msgs) != 3 || msgs[0].(map[string]any)["role"] != "system" || msgs[2].(map[string]any)["content"] != r["response"] {
		t.Fatalf("record %v", r)
	}
	toks, tops := r["teacher_tokens"].([]any), r["teacher_top_logprobs"].([]any)
	if len(toks) == 0 || len(toks) != len(tops) || len(tops[0].([]any)) != 3 {
		t.Fatalf("logprobs %v %v", toks, tops)
	}
	// Same tokenizer: every token maps to an id, and the tokens' ids spell
	// the response.
	if sum.Unmapped != 0 {
		t.Fatalf("%d unmapped", sum.Unmapped)
	}
	tok, err := tokenizer.LoadDir(demoModel(t))
	if err != nil {
		t.Fatal(err)
	}
	var ids []int32
	for _, x := range toks {
		ids = append(ids, int32(x.(map[string]any)["id"].(float64)))
	}
	if got := tok.Decode(ids); !strings.HasPrefix(got, r["response"].(string)) {
		t.Fatalf("ids decode to %q, response %q", got, r["response"])
	}
	// kdnative train reads it.
	train, val, rep, err := data.LoadSFT(out, tok, data.Options{Template: "chatml", MaxLen: 512})
	if err != nil || len(train)+len(val) != 12 {
		t.Fatalf("LoadSFT: %d+%d %+v %v", len(train), len(val), rep, err)
	}
}

// flaky fronts the teacher: 429 (Retry-After: 0) to every 3rd request, 500
// to every 5th, a stall past the client's timeout on every 7th, the
// teacher's answer otherwise.
func flaky(t *testing.T, target string) (*httptest.Server, *atomic.Int64) {
	u, _ := url.Parse(target)
	proxy := httputil.NewSingleHostReverseProxy(u)
	var n atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		switch {
		case i%3 == 0:
			w.Header().Set("Retry-After", "0")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(429)
			fmt.Fprint(w, `{"error":{"message":"slow down","type":"rate_limit"}}`)
		case i%5 == 0:
			w.WriteHeader(500)
			fmt.Fprint(w, `{"error":{"message":"boom"}}`)
		case i%7 == 0:
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		default:
			proxy.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(ts.Close)
	return ts, &n
}

func TestLabelFlakyEndpoint(t *testing.T) {
	ts := teacher(t)
	fl, n := flaky(t, ts.URL)
	c := client(fl.URL)
	c.Timeout = 300 * time.Millisecond
	prompts := writePrompts(t, 10)
	out := filepath.Join(t.TempDir(), "out.jsonl")
	sum, err := Label(context.Background(), LabelConfig{Client: c, Prompts: prompts, Output: out, N: 2, MaxTokens: 4, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	wantAll(t, readOutput(t, out), 10, 2)
	if sum.Records != 20 || sum.Retries == 0 || sum.Failures != 0 || n.Load() <= 20 {
		t.Fatalf("summary %+v after %d requests", sum, n.Load())
	}
	t.Log(sum, n.Load(), "requests")
}

func TestLabelKilledAndResumed(t *testing.T) {
	ts := teacher(t)
	prompts := writePrompts(t, 12)
	out := filepath.Join(t.TempDir(), "out.jsonl")
	// Cancel after 5 records have been written.
	ctx, cancel := context.WithCancel(context.Background())
	var seen atomic.Int64
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, _ := url.Parse(ts.URL)
		httputil.NewSingleHostReverseProxy(u).ServeHTTP(w, r)
		if seen.Add(1) == 5 {
			cancel()
		}
	}))
	defer counting.Close()
	sum, err := Label(ctx, LabelConfig{Client: client(counting.URL), Prompts: prompts, Output: out, N: 2, MaxTokens: 4, Concurrency: 3})
	if err == nil || sum.Records == 0 || sum.Records >= 24 {
		t.Fatalf("first run: %+v %v", sum, err)
	}
	first := readOutput(t, out)
	// A kill mid-write leaves half a line.
	f, _ := os.OpenFile(out, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"id":"p12.s1","prompt":"Call me`)
	f.Close()
	sum2, err := Label(context.Background(), LabelConfig{Client: client(ts.URL), Prompts: prompts, Output: out, N: 2, MaxTokens: 4, Concurrency: 3})
	if err != nil {
		t.Fatal(err)
	}
	all := readOutput(t, out)
	wantAll(t, all, 12, 2)
	if sum2.Resumed != len(first) || sum2.Records != 24-len(first) {
		t.Fatalf("resume: %+v after %d", sum2, len(first))
	}
	for id, r := range first {
		if all[id]["response"] != r["response"] {
			t.Fatalf("%s changed", id)
		}
	}
	// A third run has nothing to do.
	sum3, err := Label(context.Background(), LabelConfig{Client: client(ts.URL), Prompts: prompts, Output: out, N: 2, MaxTokens: 4})
	if err != nil || sum3.Records != 0 || sum3.Resumed != 24 {
		t.Fatalf("third run: %+v %v", sum3, err)
	}
}

func TestLabelWrongKey(t *testing.T) {
	const key = "sk-secret-123456"
	var n atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(401)
		fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s","type":"invalid_request_error"}}`, r.Header.Get("Authorization")[len("Bearer "):])
	}))
	defer ts.Close()
	c := client(ts.URL)
	c.APIKey = key
	out := filepath.Join(t.TempDir(), "out.jsonl")
	os.WriteFile(out, []byte(`{"id":"p1.s0","prompt":"kept","response":"kept"}`+"\n"), 0o644)
	_, err := Label(context.Background(), LabelConfig{Client: c, Prompts: writePrompts(t, 5), Output: out})
	if err == nil || !strings.Contains(err.Error(), "refused the API key (401)") || strings.Contains(err.Error(), key) {
		t.Fatalf("error %v", err)
	}
	if n.Load() > 4 {
		t.Fatalf("%d requests: a 401 is not retried", n.Load())
	}
	if recs := readOutput(t, out); len(recs) != 1 || recs["p1.s0"]["response"] != "kept" {
		t.Fatalf("output lost: %v", recs)
	}
}

func TestLabelUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := &Client{BaseURL: "http://" + addr, Model: "m", Backoff: time.Millisecond, MaxRetries: 2}
	out := filepath.Join(t.TempDir(), "out.jsonl")
	sum, err := Label(context.Background(), LabelConfig{Client: c, Prompts: writePrompts(t, 3), Output: out})
	if err == nil || !strings.Contains(err.Error(), "cannot reach") || !strings.Contains(err.Error(), "after 3 attempts") || sum.Failures != 3 || sum.Retries != 6 {
		t.Fatalf("%+v %v", sum, err)
	}
	t.Log(err)
}

func TestLabelMissingLogprobs(t *testing.T) {
	ts := teacher(t)
	u, _ := url.Parse(ts.URL)
	proxy := httputil.NewSingleHostReverseProxy(u)
	// Strip logprobs from the answers, as an endpoint without them would.
	strip := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		proxy.ServeHTTP(rec, r)
		var body map[string]any
		json.Unmarshal(rec.Body.Bytes(), &body)
		for _, c := range body["choices"].([]any) {
			delete(c.(map[string]any), "logprobs")
		}
		json.NewEncoder(w).Encode(body)
	}))
	defer strip.Close()
	prompts := writePrompts(t, 3)
	for _, mode := range []string{"error", "skip", "keep"} {
		out := filepath.Join(t.TempDir(), "out.jsonl")
		sum, err := Label(context.Background(), LabelConfig{Client: client(strip.URL), Prompts: prompts, Output: out, MaxTokens: 3, TopLogprobs: 2, MissingLogprobs: mode, Concurrency: 1})
		recs := readOutput(t, out)
		switch mode {
		case "error":
			if err == nil || !strings.Contains(err.Error(), "no logprobs") || len(recs) != 0 {
				t.Fatalf("error: %+v %v", sum, err)
			}
		case "skip":
			if err != nil || sum.MissingLogprobs != 3 || len(recs) != 0 {
				t.Fatalf("skip: %+v %v", sum, err)
			}
		case "keep":
			if err != nil || sum.MissingLogprobs != 3 || len(recs) != 3 {
				t.Fatalf("keep: %+v %v", sum, err)
			}
		}
	}
}

func TestLabelStrictInput(t *testing.T) {
	prompts := writePrompts(t, 2, `{"prompt": 3}`)
	_, err := Label(context.Background(), LabelConfig{Client: client("http://127.0.0.1:1"), Prompts: prompts, Output: filepath.Join(t.TempDir(), "o"), StrictInput: true})
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatal(err)
	}
}
