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

// TestLabelEndToEnd labels prompts with the demo teacher, sampled. Its
// checks hold for whatever the teacher samples (an empty answer included:
// the demo teacher ends about one answer in 20 at once); the seed makes
// every run sample the same answers, and seed 10 happens to give one empty
// answer today, so the path is taken.
func TestLabelEndToEnd(t *testing.T) {
	ts := teacher(t)
	prompts := writePrompts(t, 6, `not json`, `{"text":"no prompt"}`, `{"messages":[{"role":"assistant","content":"x"}]}`)
	out := filepath.Join(t.TempDir(), "out.jsonl")
	var log strings.Builder
	seed := int64(10)
	sum, err := Label(context.Background(), LabelConfig{Client: client(ts.URL), Prompts: prompts, Output: out, N: 2,
		System: "You are terse.", Temperature: temp(0.7), MaxTokens: 6, TopLogprobs: 3, StudentTokenizer: demoModel(t), Seed: &seed, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Records != 12 || sum.BadLines != 3 || sum.Failures != 0 || sum.PromptTokens == 0 {
		t.Fatalf("summary %+v", sum)
	}
	if strings.Count(log.String(), "skipped") != 3 || !strings.Contains(log.String(), "line 7") {
		t.Fatalf("log: %s", log.String())
	}
	t.Log(sum)
	recs := readOutput(t, out)
	wantAll(t, recs, 6, 2)
	if r := recs["p1.s0"]; r["prompt"] != "Call me Ishmael, number 0. " {
		t.Fatalf("record %v", r)
	}
	tok, err := tokenizer.LoadDir(demoModel(t))
	if err != nil {
		t.Fatal(err)
	}
	empty, length := 0, 0
	for id, r := range recs {
		resp, _ := r["response"].(string)
		finish, _ := r["finish_reason"].(string)
		if finish != "stop" && finish != "length" {
			t.Fatalf("%s: finish_reason %v", id, r["finish_reason"])
		}
		if finish == "length" {
			length++
		}
		msgs, _ := r["messages"].([]any)
		if len(msgs) != 3 || msgs[0].(map[string]any)["role"] != "system" || msgs[2].(map[string]any)["role"] != "assistant" || msgs[2].(map[string]any)["content"] != resp {
			t.Fatalf("%s: messages %v", id, r["messages"])
		}
		if strings.TrimSpace(resp) == "" {
			empty++
		}
		if resp == "" {
			continue
		}
		toks, _ := r["teacher_tokens"].([]any)
		tops, _ := r["teacher_top_logprobs"].([]any)
		if len(toks) == 0 || len(toks) != len(tops) {
			t.Fatalf("%s: logprobs %v %v", id, toks, tops)
		}
		for _, top := range tops {
			if l, _ := top.([]any); len(l) != 3 {
				t.Fatalf("%s: top logprobs %v, want 3 each", id, top)
			}
		}
		// Same tokenizer: every token maps to an id, and the tokens' ids
		// spell the response.
		var ids []int32
		for _, x := range toks {
			ids = append(ids, int32(x.(map[string]any)["id"].(float64)))
		}
		if got := tok.Decode(ids); !strings.HasPrefix(got, resp) {
			t.Fatalf("%s: ids decode to %q, response %q", id, got, resp)
		}
	}
	if sum.Unmapped != 0 {
		t.Fatalf("%d unmapped", sum.Unmapped)
	}
	if sum.EmptyAnswers != empty || sum.LengthLimited != length {
		t.Fatalf("summary counts %d empty and %d cut, the output %d and %d", sum.EmptyAnswers, sum.LengthLimited, empty, length)
	}
	// kdnative train reads every non-empty answer (an empty one is not
	// something to learn).
	train, val, rep, err := data.LoadSFT(out, tok, data.Options{Template: "chatml", MaxLen: 512, OnBadLine: "skip"})
	if err != nil || len(train)+len(val) != 12-empty {
		t.Fatalf("LoadSFT: %d+%d of %d non-empty: %v %v", len(train), len(val), 12-empty, rep, err)
	}
}

// TestLabelEmptyAnswer: an endpoint that answers nothing (at once, or cut
// at the length limit before any text) gives records with an empty
// response and their finish_reason, counted in the summary; logprobs asked
// for are not missing from an answer without tokens.
func TestLabelEmptyAnswer(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req ChatRequest
		json.NewDecoder(r.Body).Decode(&req)
		last := req.Messages[len(req.Messages)-1].Content
		content, finish, logprobs := "", "stop", `null`
		switch {
		case strings.Contains(last, "number 1."):
			finish = "length" // a reasoning model that spent max_tokens before answering
		case strings.Contains(last, "number 2."):
			logprobs = `{"content":[]}`
		case strings.Contains(last, "number 3."):
			content = "Whales."
			logprobs = `{"content":[{"token":"Whales.","logprob":-0.1,"top_logprobs":[{"token":"Whales.","logprob":-0.1}]}]}`
		}
		fmt.Fprintf(w, `{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":%q,"logprobs":%s}],"usage":{"prompt_tokens":5,"completion_tokens":0,"total_tokens":5}}`,
			content, finish, logprobs)
	}))
	defer ts.Close()
	var b strings.Builder
	for i := range 4 {
		fmt.Fprintf(&b, `{"prompt":"Call me Ishmael, number %d."}`+"\n", i)
	}
	prompts := filepath.Join(t.TempDir(), "prompts.jsonl")
	os.WriteFile(prompts, []byte(b.String()), 0o644)
	out := filepath.Join(t.TempDir(), "out.jsonl")
	sum, err := Label(context.Background(), LabelConfig{Client: client(ts.URL), Prompts: prompts, Output: out, TopLogprobs: 1, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Records != 4 || sum.EmptyAnswers != 3 || sum.LengthLimited != 1 || sum.MissingLogprobs != 0 {
		t.Fatalf("summary %+v", sum)
	}
	if s := sum.String(); !strings.Contains(s, "3 empty answers") || !strings.Contains(s, "1 answer cut at the length limit") {
		t.Fatalf("summary line %q", s)
	}
	recs := readOutput(t, out)
	for id, want := range map[string][2]string{"p1.s0": {"", "stop"}, "p2.s0": {"", "length"}, "p3.s0": {"", "stop"}, "p4.s0": {"Whales.", "stop"}} {
		r := recs[id]
		if r == nil || r["response"] != want[0] || r["finish_reason"] != want[1] {
			t.Fatalf("%s: %v, want response %q and finish_reason %q", id, r, want[0], want[1])
		}
	}
	if recs["p4.s0"]["teacher_tokens"] == nil {
		t.Fatalf("p4.s0 lost its logprobs: %v", recs["p4.s0"])
	}
}

// TestLabelSeed: with a seed, each request carries a seed of its own that
// depends on the record, not on the order or the run.
func TestLabelSeed(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int64{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req ChatRequest
		json.NewDecoder(r.Body).Decode(&req)
		if req.Seed == nil {
			w.WriteHeader(400)
			return
		}
		mu.Lock()
		seen[req.Messages[len(req.Messages)-1].Content] = *req.Seed
		mu.Unlock()
		fmt.Fprintf(w, `{"choices":[{"message":{"role":"assistant","content":"%d"},"finish_reason":"stop"}]}`, *req.Seed)
	}))
	defer ts.Close()
	prompts := writePrompts(t, 6)
	run := func(seed int64, conc int) map[string]map[string]any {
		out := filepath.Join(t.TempDir(), "out.jsonl")
		_, err := Label(context.Background(), LabelConfig{Client: client(ts.URL), Prompts: prompts, Output: out, N: 2, Seed: &seed, Concurrency: conc, MaxFailures: 1})
		if err != nil {
			t.Fatal(err)
		}
		return readOutput(t, out)
	}
	a, b, c := run(1, 1), run(1, 4), run(2, 4)
	distinct := map[any]bool{}
	for id := range a {
		if a[id]["response"] != b[id]["response"] {
			t.Fatalf("%s: seed %v with one request at a time, %v with four", id, a[id]["response"], b[id]["response"])
		}
		if a[id]["response"] == c[id]["response"] {
			t.Fatalf("%s: seeds 1 and 2 give the same request seed", id)
		}
		distinct[a[id]["response"]] = true
	}
	if len(distinct) != len(a) {
		t.Fatalf("%d distinct request seeds for %d records", len(distinct), len(a))
	}
}

// flaky fronts the teacher: 429 (Retry-After: 0) to every 3rd request, 500
// to every 5th, a stall past the client's timeout on the 7th and the 14th,
// the teacher's answer otherwise. Only two stalls, so that the client's
// timeout can be long enough for a real answer on a loaded machine (a
// short one made the test fail when every try of a slow answer timed out).
func flaky(t *testing.T, target string) (*httptest.Server, *atomic.Int64) {
	u, _ := url.Parse(target)
	proxy := httputil.NewSingleHostReverseProxy(u)
	var n atomic.Int64
	done := make(chan struct{}) // closed when the test ends: the stalls give up
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
		case i == 7 || i == 14:
			select {
			case <-r.Context().Done():
			case <-done:
			}
		default:
			proxy.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(ts.Close)
	t.Cleanup(func() { close(done) }) // runs before ts.Close
	return ts, &n
}

func TestLabelFlakyEndpoint(t *testing.T) {
	ts := teacher(t)
	fl, n := flaky(t, ts.URL)
	c := client(fl.URL)
	c.Timeout = 2 * time.Second
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
		choices, _ := body["choices"].([]any)
		if json.Unmarshal(rec.Body.Bytes(), &body) != nil || rec.Code != 200 {
			// Not an answer (the teacher busy, say): passed on as it is,
			// for the client to retry.
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			return
		}
		choices, _ = body["choices"].([]any)
		for _, c := range choices {
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

// TestRedirectKeepsKey: an endpoint that redirects to another origin (here
// another port of the same host, which Go's own redirect policy trusts with
// the Authorization header) gets a clear error, not a retry, and the other
// server never sees the key; a redirect within the origin is followed with
// the key.
func TestRedirectKeepsKey(t *testing.T) {
	const key = "sk-secret-redirect"
	var otherHits, otherKeys atomic.Int64
	answer := func(w http.ResponseWriter) {
		fmt.Fprint(w, `{"choices":[{"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}`)
	}
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHits.Add(1)
		if r.Header.Get("Authorization") != "" {
			otherKeys.Add(1)
		}
		answer(w)
	}))
	defer other.Close()
	var homeKeyed atomic.Int64
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away/v1/chat/completions":
			http.Redirect(w, r, other.URL+"/v1/chat/completions", http.StatusTemporaryRedirect)
		case "/moved/v1/chat/completions":
			http.Redirect(w, r, "/v1/chat/completions", http.StatusPermanentRedirect)
		case "/v1/chat/completions":
			if r.Header.Get("Authorization") == "Bearer "+key {
				homeKeyed.Add(1)
			}
			answer(w)
		default:
			http.NotFound(w, r)
		}
	}))
	defer home.Close()

	c := client(home.URL + "/moved")
	c.APIKey = key
	if _, err := c.Chat(context.Background(), ChatRequest{Messages: []Message{{Role: "user", Content: "hi"}}}); err != nil || homeKeyed.Load() != 1 {
		t.Fatalf("redirect within the origin: %v, %d keyed requests", err, homeKeyed.Load())
	}

	c = client(home.URL + "/away")
	c.APIKey = key
	var retries int
	c.OnRetry = func(error) { retries++ }
	_, err := c.Chat(context.Background(), ChatRequest{Messages: []Message{{Role: "user", Content: "hi"}}})
	if err == nil || !strings.Contains(err.Error(), "another origin") || !strings.Contains(err.Error(), other.Listener.Addr().String()) || !Fatal(err) || retries != 0 {
		t.Fatalf("redirect to another origin: %v (fatal %v, %d retries)", err, Fatal(err), retries)
	}
	if otherKeys.Load() != 0 || otherHits.Load() != 0 {
		t.Fatalf("the other origin got %d requests, %d with the key", otherHits.Load(), otherKeys.Load())
	}
	// Without a key there is nothing to leak: the redirect is followed.
	c = client(home.URL + "/away")
	if _, err := c.Chat(context.Background(), ChatRequest{Messages: []Message{{Role: "user", Content: "hi"}}}); err != nil || otherHits.Load() != 1 {
		t.Fatalf("keyless redirect: %v, %d requests", err, otherHits.Load())
	}
}
