package rollout_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kdnative/kdnative/kd/elicit"
	"github.com/kdnative/kdnative/kd/rollout"
	"github.com/kdnative/kdnative/kd/serve"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/tokenizer"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// demoFolder copies the demo's teacher and its tokenizer into one folder
// (what kdnative serve loads).
func demoFolder(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "teacher")
	os.Mkdir(dir, 0o755)
	for _, f := range []string{"../demo/assets/teacher/config.json", "../demo/assets/teacher/model.safetensors",
		"../demo/assets/tokenizer/tokenizer.json", "../demo/assets/tokenizer/tokenizer_config.json"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, filepath.Base(f)), data, 0o644)
	}
	return dir
}

// serveDemo starts kdnative serve's handler on the demo teacher.
func serveDemo(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	dir := demoFolder(t)
	s, err := serve.New(cpu.New(), serve.Config{Model: dir, ModelName: "teacher"})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(func() { ts.Close(); s.Close() })
	return ts, dir
}

func client(url string) *elicit.Client {
	return &elicit.Client{BaseURL: url + "/v1", Model: "teacher", MaxRetries: 2, Backoff: time.Millisecond, Timeout: 10 * time.Second}
}

// TestEndpointAgainstServe: the endpoint scorer, talking to kdnative serve
// on the demo teacher, gives the local scorer's numbers (the model's own
// log-softmax) and the k most likely tokens of each position; Tokenize
// gives the server's tokenization of a text, which is the tokenizer's.
func TestEndpointAgainstServe(t *testing.T) {
	ts, dir := serveDemo(t)
	m := loadDemo(t)
	seqs := scoreSeqs()
	want := refScores(t, m, seqs)
	e := &rollout.Endpoint{Client: client(ts.URL), TopK: 3, MaxPrompts: 2} // two requests
	got, err := e.Score(context.Background(), seqs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		for j := range want[i] {
			if math.Abs(got[i][j]-want[i][j]) > 1e-5 {
				t.Fatalf("sequence %d token %d: endpoint %g, reference %g", i, j, got[i][j], want[i][j])
			}
		}
	}
	all, err := e.ScoreAll(context.Background(), [][]int32{seqs[0].Tokens})
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(all[0].LogProbs[0]) || all[0].Top[0] != nil || len(all[0].Top[5]) != 3 {
		t.Fatalf("first position %v %v, top at 5: %v", all[0].LogProbs[0], all[0].Top[0], all[0].Top[5])
	}
	// the top 3 at position 5 are the model's 3 most likely tokens there
	full := fullLogSoftmax(t, m, seqs[0].Tokens[:5])
	order := make([]int, len(full))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return full[order[a]] > full[order[b]] })
	for r, tl := range all[0].Top[5] {
		if int(tl.ID) != order[r] || math.Abs(float64(tl.LogProb)-full[order[r]]) > 1e-5 {
			t.Fatalf("top %d at position 5: %+v, want id %d (%g)", r, tl, order[r], full[order[r]])
		}
	}
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	text := "It is a way I have of driving off the spleen"
	ids, err := e.Tokenize(context.Background(), text)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, tok.Encode(text)) {
		t.Fatalf("endpoint tokenization %v, tokenizer %v", ids, tok.Encode(text))
	}
}

// fullLogSoftmax is the model's float64 log-softmax after the last token
// of ids.
func fullLogSoftmax(t *testing.T, m *model.Model, ids []int32) []float64 {
	t.Helper()
	if _, err := m.Forward(model.Batch{B: 1, T: len(ids), IDs: ids}); err != nil {
		t.Fatal(err)
	}
	V := m.Config.Vocab
	host := make([]float32, len(ids)*V)
	if err := m.Backend().Download(m.Logits(), host); err != nil {
		t.Fatal(err)
	}
	row := host[(len(ids)-1)*V:]
	mx := math.Inf(-1)
	for _, v := range row {
		mx = math.Max(mx, float64(v))
	}
	var z float64
	for _, v := range row {
		z += math.Exp(float64(v) - mx)
	}
	out := make([]float64, V)
	for i, v := range row {
		out[i] = float64(v) - mx - math.Log(z)
	}
	return out
}

// fixedServer answers every request with body (and status), counting them
// and keeping the last request.
func fixedServer(t *testing.T, status int, body []byte) (*httptest.Server, *atomic.Int64, *atomic.Value) {
	t.Helper()
	var n atomic.Int64
	var last atomic.Value
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		b, _ := io.ReadAll(r.Body)
		last.Store(string(b))
		if r.URL.Path != "/v1/completions" {
			w.WriteHeader(404)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(ts.Close)
	return ts, &n, &last
}

// TestEndpointReadsVLLM: an answer in the shape vLLM's completions server
// gives for echo with prompt_logprobs (testdata/vllm-echo-prompt-logprobs.json,
// written from vLLM's serving and protocol code: null first, token ids as
// string keys with logprob, rank and decoded_token, the given token first
// even when it is not in the top k, −∞ as −9999) is read into each token's
// log-probability and the top k; the request carries vLLM's fields.
func TestEndpointReadsVLLM(t *testing.T) {
	body, err := os.ReadFile("testdata/vllm-echo-prompt-logprobs.json")
	if err != nil {
		t.Fatal(err)
	}
	ts, _, last := fixedServer(t, 200, body)
	e := &rollout.Endpoint{Client: client(ts.URL), TopK: 2}
	got, err := e.ScoreAll(context.Background(), [][]int32{{791, 51119, 0}, {7368, 757}})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].LogProbs[1] != -2.5 || got[0].LogProbs[2] != -0.125 || got[1].LogProbs[1] != -9999 {
		t.Fatalf("log-probabilities %v %v", got[0].LogProbs, got[1].LogProbs)
	}
	if fmtTop(got[0].Top[1]) != "1917:-1 3363:-1.5" || fmtTop(got[0].Top[2]) != "0:-0.125 13:-2.25" || fmtTop(got[1].Top[1]) != "279:-0.25 264:-2" {
		t.Fatalf("tops %s | %s | %s", fmtTop(got[0].Top[1]), fmtTop(got[0].Top[2]), fmtTop(got[1].Top[1]))
	}
	var req map[string]any
	json.Unmarshal([]byte(last.Load().(string)), &req)
	if req["echo"] != true || req["max_tokens"] != 1.0 || req["prompt_logprobs"] != 2.0 || req["model"] != "teacher" ||
		req["return_tokens_as_token_ids"] != true || req["temperature"] != 0.0 {
		t.Fatalf("request %v", req)
	}
	// Without prompt_logprobs, the echoed "token_id:<id>" logprobs serve.
	var raw map[string]any
	json.Unmarshal(body, &raw)
	for _, ch := range raw["choices"].([]any) {
		delete(ch.(map[string]any), "prompt_logprobs")
	}
	legacy, _ := json.Marshal(raw)
	ts2, _, _ := fixedServer(t, 200, legacy)
	e2 := &rollout.Endpoint{Client: client(ts2.URL), TopK: 2}
	got2, err := e2.ScoreAll(context.Background(), [][]int32{{791, 51119, 0}, {7368, 757}})
	if err != nil {
		t.Fatal(err)
	}
	if got2[0].LogProbs[1] != -2.5 || got2[0].LogProbs[2] != -0.125 || fmtTop(got2[0].Top[1]) != "1917:-1 3363:-1.5" {
		t.Fatalf("legacy logprobs: %v %s", got2[0].LogProbs, fmtTop(got2[0].Top[1]))
	}
	// Another sequence than the one the answer is for is refused.
	if _, err := e.ScoreAll(context.Background(), [][]int32{{791, 51120, 0}, {7368, 757}}); err == nil || !strings.Contains(err.Error(), "no entry for the given token 51120") {
		t.Fatalf("mismatched answer: %v", err)
	}
	// One entry too many: the endpoint added a BOS.
	if _, err := e.ScoreAll(context.Background(), [][]int32{{51119, 0}, {7368, 757}}); err == nil || !strings.Contains(err.Error(), "BOS") {
		t.Fatalf("BOS: %v", err)
	}
}

func fmtTop(top []model.TokenLogProb) string {
	var parts []string
	for _, t := range top {
		b, _ := json.Marshal(t.LogProb)
		parts = append(parts, itoa(int(t.ID))+":"+string(b))
	}
	return strings.Join(parts, " ")
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestEndpointFailures: a failing endpoint is retried with backoff, then
// its error is an *EndpointError naming the URL and the attempts; an
// answer no retry can fix (401) is not retried.
func TestEndpointFailures(t *testing.T) {
	ts, n, _ := fixedServer(t, 503, []byte(`{"error":{"message":"overloaded"}}`))
	e := &rollout.Endpoint{Client: client(ts.URL)}
	_, err := e.Score(context.Background(), scoreSeqs())
	var ee *rollout.EndpointError
	if !errors.As(err, &ee) || !strings.Contains(err.Error(), ts.URL) || !strings.Contains(err.Error(), "after 3 attempts") || n.Load() != 3 {
		t.Fatalf("503: %v after %d requests", err, n.Load())
	}
	ts401, n401, _ := fixedServer(t, 401, []byte(`{"error":{"message":"bad key"}}`))
	_, err = (&rollout.Endpoint{Client: client(ts401.URL)}).Score(context.Background(), scoreSeqs())
	if !errors.As(err, &ee) || n401.Load() != 1 || !strings.Contains(err.Error(), "401") {
		t.Fatalf("401: %v after %d requests", err, n401.Load())
	}
	tsBad, _, _ := fixedServer(t, 200, []byte(`{"choices":[{"index":0,"text":"x"}]}`))
	_, err = (&rollout.Endpoint{Client: client(tsBad.URL)}).ScoreAll(context.Background(), [][]int32{{1, 2}})
	if err == nil || !strings.Contains(err.Error(), "cannot score tokens") {
		t.Fatalf("no logprobs: %v", err)
	}
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close() // nothing listens there any more
	down := client(gone.URL)
	down.MaxRetries = -1
	if _, err := (&rollout.Endpoint{Client: down}).Score(context.Background(), scoreSeqs()); !errors.As(err, &ee) || !strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("unreachable: %v", err)
	}
}
