package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	"github.com/kdnative/kdnative/runtime/cpu"
)

const chatML = `{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}`

// demoModel copies the demo's teacher with its tokenizer into a folder,
// with a ChatML chat template when chat is set.
func demoModel(t *testing.T, chat bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "demo-teacher")
	os.Mkdir(dir, 0o755)
	for src, dst := range map[string]string{
		"../demo/assets/teacher/config.json":             "config.json",
		"../demo/assets/teacher/model.safetensors":       "model.safetensors",
		"../demo/assets/tokenizer/tokenizer.json":        "tokenizer.json",
		"../demo/assets/tokenizer/tokenizer_config.json": "tokenizer_config.json",
	} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if dst == "tokenizer_config.json" && chat {
			var cfg map[string]any
			if err := json.Unmarshal(data, &cfg); err != nil {
				t.Fatal(err)
			}
			cfg["chat_template"] = chatML
			data, _ = json.Marshal(cfg)
		}
		os.WriteFile(filepath.Join(dir, dst), data, 0o644)
	}
	return dir
}

func newServer(t *testing.T, chat bool, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	cfg.Model = demoModel(t, chat)
	s, err := New(cpu.New(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(func() { ts.Close(); s.Close() })
	return s, ts
}

func post(t *testing.T, url, body string) (int, map[string]any, http.Header) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s: body is not JSON: %v", body, err)
	}
	return resp.StatusCode, out, resp.Header
}

// postStatus is post for a goroutine: the status only (0 on failure).
func postStatus(url, body string) int {
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestModels(t *testing.T) {
	_, ts := newServer(t, false, Config{})
	resp, err := http.Get(ts.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Object string
		Data   []map[string]any
	}
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if out.Object != "list" || len(out.Data) != 1 || out.Data[0]["id"] != "demo-teacher" || out.Data[0]["object"] != "model" || out.Data[0]["owned_by"] != "kdnative" || out.Data[0]["created"] == nil {
		t.Fatalf("models: %+v", out)
	}
	for _, c := range []struct {
		method, path string
		status       int
	}{{"GET", "/v1/nope", 404}, {"POST", "/v1/models", 405}, {"GET", "/v1/completions", 405}, {"GET", "/v1/models/demo-teacher", 200}, {"GET", "/v1/models/other", 404}} {
		req, _ := http.NewRequest(c.method, ts.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		jerr := json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != c.status || jerr != nil || (c.status != 200 && body["error"] == nil) {
			t.Errorf("%s %s: %d %v %v", c.method, c.path, resp.StatusCode, body, jerr)
		}
	}
}

func TestCompletionMatchesGenerate(t *testing.T) {
	s, ts := newServer(t, false, Config{})
	prompt := "Call me Ishmael. "
	ids := s.tok.Encode(prompt)
	g, err := s.m.Generate(ids, model.GenerateParams{MaxTokens: 20, StopTokens: []int32{s.tok.Special().EOS}, TopLogProbs: 3})
	if err != nil {
		t.Fatal(err)
	}
	toks := g.Tokens
	if g.Finish == "stop" {
		toks = toks[:len(toks)-1]
	}
	want := s.tok.Decode(toks)
	status, out, _ := post(t, ts.URL+"/v1/completions", `{"model":"demo-teacher","prompt":"Call me Ishmael. ","max_tokens":20,"temperature":0,"logprobs":3}`)
	if status != 200 {
		t.Fatalf("%d %v", status, out)
	}
	if out["object"] != "text_completion" || !strings.HasPrefix(out["id"].(string), "cmpl-") {
		t.Fatalf("%v", out)
	}
	ch := out["choices"].([]any)[0].(map[string]any)
	if ch["text"] != want || ch["finish_reason"] != g.Finish {
		t.Fatalf("text %q finish %v, Generate %q %s", ch["text"], ch["finish_reason"], want, g.Finish)
	}
	lp := ch["logprobs"].(map[string]any)
	tokens, tlp, top, offs := lp["tokens"].([]any), lp["token_logprobs"].([]any), lp["top_logprobs"].([]any), lp["text_offset"].([]any)
	if len(tokens) != len(toks) || len(tlp) != len(toks) || len(top) != len(toks) || len(offs) != len(toks) {
		t.Fatalf("logprobs lengths %d %d %d %d, want %d", len(tokens), len(tlp), len(top), len(offs), len(toks))
	}
	var joined string
	for i := range toks {
		if float32(tlp[i].(float64)) != g.LogProbs[i] {
			t.Fatalf("token_logprobs[%d] = %v, Generate %v", i, tlp[i], g.LogProbs[i])
		}
		if len(top[i].(map[string]any)) == 0 || int(offs[i].(float64)) != len(prompt)+len(joined) {
			t.Fatalf("top %v offset %v at %d", top[i], offs[i], i)
		}
		joined += tokens[i].(string)
	}
	if joined != want {
		t.Fatalf("tokens join to %q, want %q", joined, want)
	}
	u := out["usage"].(map[string]any)
	if int(u["prompt_tokens"].(float64)) != len(ids) || int(u["completion_tokens"].(float64)) != len(g.Tokens) || u["total_tokens"].(float64) != u["prompt_tokens"].(float64)+u["completion_tokens"].(float64) {
		t.Fatalf("usage %v", u)
	}

	// Arrays of prompts give a choice each; n gives more; token-id prompts work.
	status, out, _ = post(t, ts.URL+"/v1/completions", `{"model":"demo-teacher","prompt":["Call me Ishmael. ","The whale "],"max_tokens":5,"n":2,"seed":3}`)
	if status != 200 || len(out["choices"].([]any)) != 4 {
		t.Fatalf("%d %v", status, out)
	}
	idsJSON, _ := json.Marshal(ids)
	status, out, _ = post(t, ts.URL+"/v1/completions", `{"model":"demo-teacher","max_tokens":20,"temperature":0,"prompt":`+string(idsJSON)+`}`)
	if status != 200 || out["choices"].([]any)[0].(map[string]any)["text"] != want {
		t.Fatalf("token prompt: %d %v", status, out)
	}
	// A stop string cuts the text.
	status, out, _ = post(t, ts.URL+"/v1/completions", `{"model":"demo-teacher","prompt":"Call me Ishmael. ","max_tokens":30,"temperature":0,"stop":" "}`)
	ch = out["choices"].([]any)[0].(map[string]any)
	if status != 200 || strings.Contains(ch["text"].(string), " ") || ch["finish_reason"] != "stop" || !strings.HasPrefix(want, ch["text"].(string)) {
		t.Fatalf("stop: %d %v", status, out)
	}
}

// stream reads an SSE response's events.
func stream(t *testing.T, url, body string) []map[string]any {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var events []map[string]any
	sc := bufio.NewScanner(resp.Body)
	done := false
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		if done {
			t.Fatalf("data after [DONE]: %q", line)
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("not an SSE data line: %q", line)
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		events = append(events, ev)
	}
	if !done {
		t.Fatal("stream did not end with [DONE]")
	}
	return events
}

func TestChat(t *testing.T) {
	_, ts := newServer(t, true, Config{})
	body := `{"model":"demo-teacher","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Call me"}],"max_tokens":12,"temperature":0,"logprobs":true,"top_logprobs":2}`
	status, out, _ := post(t, ts.URL+"/v1/chat/completions", body)
	if status != 200 || out["object"] != "chat.completion" || !strings.HasPrefix(out["id"].(string), "chatcmpl-") || out["model"] != "demo-teacher" {
		t.Fatalf("%d %v", status, out)
	}
	ch := out["choices"].([]any)[0].(map[string]any)
	msg := ch["message"].(map[string]any)
	text := msg["content"].(string)
	if msg["role"] != "assistant" || (ch["finish_reason"] != "stop" && ch["finish_reason"] != "length") {
		t.Fatalf("choice %v", ch)
	}
	content := ch["logprobs"].(map[string]any)["content"].([]any)
	var joined string
	for _, c := range content {
		c := c.(map[string]any)
		joined += c["token"].(string)
		if _, ok := c["logprob"].(float64); !ok || len(c["top_logprobs"].([]any)) != 2 || c["bytes"] == nil {
			t.Fatalf("logprob entry %v", c)
		}
	}
	if joined != text {
		t.Fatalf("logprob tokens %q, content %q", joined, text)
	}
	u := out["usage"].(map[string]any)
	if u["total_tokens"].(float64) != u["prompt_tokens"].(float64)+u["completion_tokens"].(float64) || u["completion_tokens"].(float64) < float64(len(content)) || u["completion_tokens"].(float64) > 12 {
		t.Fatalf("usage %v (%d content tokens)", u, len(content))
	}

	// Streamed deltas add up to the same text, logprobs or not.
	for _, extra := range []string{`"stream":true`, `"stream":true,"logprobs":true,"stream_options":{"include_usage":true}`} {
		b := `{"model":"demo-teacher","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Call me"}],"max_tokens":12,"temperature":0,` + extra + `}`
		events := stream(t, ts.URL+"/v1/chat/completions", b)
		var got string
		var finish any
		var nlp int
		for i, ev := range events {
			if ev["object"] != "chat.completion.chunk" {
				t.Fatalf("chunk %v", ev)
			}
			chs := ev["choices"].([]any)
			if len(chs) == 0 {
				if ev["usage"] == nil || i != len(events)-1 {
					t.Fatalf("usage chunk %v", ev)
				}
				continue
			}
			c := chs[0].(map[string]any)
			d := c["delta"].(map[string]any)
			if i == 0 && d["role"] != "assistant" {
				t.Fatalf("first chunk %v", ev)
			}
			if s, ok := d["content"].(string); ok {
				got += s
			}
			if lp, ok := c["logprobs"].(map[string]any); ok {
				nlp += len(lp["content"].([]any))
			}
			if c["finish_reason"] != nil {
				finish = c["finish_reason"]
			}
		}
		if got != text || finish != ch["finish_reason"] {
			t.Fatalf("%s: streamed %q (%v), whole %q (%v)", extra, got, finish, text, ch["finish_reason"])
		}
		if strings.Contains(extra, "logprobs") && nlp != len(content) {
			t.Fatalf("streamed %d logprob entries, whole %d", nlp, len(content))
		}
	}
}

func TestCompletionStream(t *testing.T) {
	_, ts := newServer(t, false, Config{})
	_, out, _ := post(t, ts.URL+"/v1/completions", `{"model":"demo-teacher","prompt":"The whale ","max_tokens":25,"temperature":0}`)
	want := out["choices"].([]any)[0].(map[string]any)["text"].(string)
	events := stream(t, ts.URL+"/v1/completions", `{"model":"demo-teacher","prompt":"The whale ","max_tokens":25,"temperature":0,"stream":true}`)
	var got string
	for _, ev := range events {
		got += ev["choices"].([]any)[0].(map[string]any)["text"].(string)
	}
	if got != want || len(events) < 3 {
		t.Fatalf("streamed %q in %d events, whole %q", got, len(events), want)
	}
}

func TestValidation(t *testing.T) {
	_, ts := newServer(t, false, Config{})
	long := strings.Repeat("a", 400)
	for _, c := range []struct{ path, body, field string }{
		{"/v1/completions", `{"model":"demo-teacher","prompt":`, "JSON"},
		{"/v1/completions", ``, "empty"},
		{"/v1/completions", `[1,2]`, "object"},
		{"/v1/completions", `{"prompt":"a"}`, "model"},
		{"/v1/completions", `{"model":"gpt-4","prompt":"a"}`, "model"},
		{"/v1/completions", `{"model":"demo-teacher"}`, "prompt"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":7}`, "prompt"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":""}`, "prompt"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":[99999]}`, "prompt"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","temperature":2.5}`, "temperature"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","temperature":-1}`, "temperature"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","temperature":"hot"}`, "temperature"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","top_p":0}`, "top_p"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","top_p":1.5}`, "top_p"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","n":0}`, "n"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","n":9}`, "n"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","n":1.5}`, "n"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","max_tokens":0}`, "max_tokens"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","stop":5}`, "stop"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","logprobs":21}`, "logprobs"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","echo":true,"stream":true}`, "echo"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","prompt_logprobs":1,"stream":true}`, "prompt_logprobs"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","prompt_logprobs":21}`, "prompt_logprobs"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","prompt_logprobs":-1}`, "prompt_logprobs"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"` + long + `"}`, "128 positions"},
		{"/v1/chat/completions", `{"model":"demo-teacher","messages":[{"role":"user","content":"hi"}]}`, "chat template"},
	} {
		status, out, _ := post(t, ts.URL+c.path, c.body)
		e, _ := out["error"].(map[string]any)
		if status != 400 || e == nil || e["type"] != "invalid_request_error" || !strings.Contains(e["message"].(string), c.field) {
			t.Errorf("%s: %d %v, want 400 naming %q", c.body, status, out, c.field)
		}
		if _, ok := e["code"]; !ok {
			t.Errorf("%s: no code in %v", c.body, e)
		}
	}
	_, ts = newServer(t, true, Config{})
	for _, c := range []struct{ body, field string }{
		{`{"model":"demo-teacher"}`, "messages"},
		{`{"model":"demo-teacher","messages":[]}`, "messages"},
		{`{"model":"demo-teacher","messages":"hi"}`, "messages"},
		{`{"model":"demo-teacher","messages":[{"content":"hi"}]}`, "role"},
		{`{"model":"demo-teacher","messages":[{"role":"robot","content":"hi"}]}`, "role"},
		{`{"model":"demo-teacher","messages":[{"role":"user"}]}`, "content"},
		{`{"model":"demo-teacher","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, "content"},
		{`{"model":"demo-teacher","messages":[{"role":"user","content":"hi"}],"top_logprobs":2}`, "top_logprobs"},
		{`{"model":"demo-teacher","messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":21}`, "top_logprobs"},
		{`{"model":"demo-teacher","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":0}`, "max_completion_tokens"},
		{`{"model":"demo-teacher","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function"}]}`, "tools"},
	} {
		status, out, _ := post(t, ts.URL+"/v1/chat/completions", c.body)
		e, _ := out["error"].(map[string]any)
		if status != 400 || e == nil || !strings.Contains(e["message"].(string), c.field) {
			t.Errorf("%s: %d %v, want 400 naming %q", c.body, status, out, c.field)
		}
	}
	// Content given as text parts works.
	status, out, _ := post(t, ts.URL+"/v1/chat/completions", `{"model":"demo-teacher","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":2}`)
	if status != 200 {
		t.Fatalf("text parts: %d %v", status, out)
	}
}

func TestQueueFull(t *testing.T) {
	s, ts := newServer(t, false, Config{MaxQueue: 1, MaxBatch: 1})
	started, release := make(chan struct{}, 4), make(chan struct{})
	s.afterAdmit = func() {
		started <- struct{}{}
		<-release
	}
	body := `{"model":"demo-teacher","prompt":"The whale ","max_tokens":3,"temperature":0}`
	results := make(chan int, 2)
	go func() { results <- postStatus(ts.URL+"/v1/completions", body) }()
	<-started // the first holds the scheduler
	go func() { results <- postStatus(ts.URL+"/v1/completions", body) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s.queued() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("second request never queued")
		}
		time.Sleep(5 * time.Millisecond)
	}
	status, out, hdr := post(t, ts.URL+"/v1/completions", body)
	if status != 429 || hdr.Get("Retry-After") == "" || out["error"] == nil {
		t.Fatalf("third request: %d %v", status, out)
	}
	close(release)
	for range 2 {
		if st := <-results; st != 200 {
			t.Fatalf("queued request: %d", st)
		}
	}
}

func TestWithdrawOnDisconnect(t *testing.T) {
	s, ts := newServer(t, false, Config{MaxQueue: 1, MaxBatch: 1})
	started, release := make(chan struct{}, 4), make(chan struct{})
	s.afterAdmit = func() {
		started <- struct{}{}
		<-release
	}
	body := `{"model":"demo-teacher","prompt":"The whale ","max_tokens":3}`
	go postStatus(ts.URL+"/v1/completions", body)
	<-started
	// A queued client that goes away frees its place.
	req, _ := http.NewRequest("POST", ts.URL+"/v1/completions", bytes.NewReader([]byte(body)))
	client := &http.Client{Timeout: 300 * time.Millisecond}
	if _, err := client.Do(req); err == nil {
		t.Fatal("request should have timed out")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s.queued() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the disconnected request stayed queued")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
}

func TestTokenBytes(t *testing.T) {
	dir := demoModel(t, false)
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{tok: tok}
	ids := tok.Encode("é")
	var raw []byte
	for _, id := range ids {
		for _, b := range s.tokenBytes(id) {
			raw = append(raw, byte(b))
		}
	}
	if !slices.Equal(raw, []byte("é")) {
		t.Fatalf("bytes %v for %v", raw, ids)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	s, err := New(cpu.New(), Config{Model: demoModel(t, false), Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.serve(ctx, ln) }()
	if st := postStatus("http://"+ln.Addr().String()+"/v1/completions", `{"model":"demo-teacher","prompt":"a","max_tokens":2}`); st != 200 {
		t.Fatalf("status %d", st)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
}
