package serve

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/model"
)

// loadCase is one request of TestConcurrentMatchesGenerate and what
// Generate, run alone, says its choices are.
type loadCase struct {
	path, body string
	stream     bool
	want       []string // per choice
	finish     []string
}

// expect is what Generate gives a prompt alone, decoded as the server
// answers it: the stop token dropped, the text cut at a stop string.
func expect(t *testing.T, s *Server, ids []int32, p model.GenerateParams, stops []string) (string, string) {
	t.Helper()
	p.MaxTokens = min(p.MaxTokens, s.m.Config.MaxPositions-len(ids)) // as the server lowers it
	p.StopTokens = []int32{s.tok.Special().EOS}
	if id, ok := s.tok.TokenID("<|im_end|>"); ok {
		p.StopTokens = append(p.StopTokens, id)
	}
	if len(stops) > 0 {
		p.Stop = func(g []int32) bool { return cutAtStop(s.tok.Decode(g), stops) >= 0 }
	}
	g, err := s.m.Generate(ids, p)
	if err != nil {
		t.Fatal(err)
	}
	toks := g.Tokens
	if g.Finish == "stop" && len(toks) > 0 && (toks[len(toks)-1] == p.StopTokens[0] || len(p.StopTokens) > 1 && toks[len(toks)-1] == p.StopTokens[1]) {
		toks = toks[:len(toks)-1]
	}
	text := s.tok.Decode(toks)
	if i := cutAtStop(text, stops); i >= 0 {
		text = text[:i]
	}
	return text, g.Finish
}

// loadCases are mixed requests: prompts of 1 to ~60 tokens, max_tokens 3 to
// 60, completions and chat, whole and streamed, n > 1 (seeded sampling),
// stop strings.
func loadCases(t *testing.T, s *Server, count int) []loadCase {
	texts := []string{"Call me Ishmael. ", "The whale ", "It was the best of times, it was the worst of times, it was the age of wisdom, ", "a", "Whenever I find myself growing grim about the mouth; ", "Sea"}
	var out []loadCase
	for i := range count {
		text := texts[i%len(texts)]
		maxTok := 3 + (i*17)%58
		c := loadCase{path: "/v1/completions", stream: i%3 == 1}
		ids := s.tok.Encode(text)
		switch {
		case i%5 == 3: // chat
			msgs := []map[string]string{{"role": "user", "content": text}}
			mj, _ := json.Marshal(msgs)
			c.path = "/v1/chat/completions"
			c.body = fmt.Sprintf(`{"model":"demo-teacher","messages":%s,"max_tokens":%d,"temperature":0,"stream":%v}`, mj, maxTok, c.stream)
			prompt, err := s.tmpl.GenerationPrompt([]data.Message{{Role: "user", Content: text}})
			if err != nil {
				t.Fatal(err)
			}
			w, f := expect(t, s, prompt, model.GenerateParams{MaxTokens: maxTok}, nil)
			c.want, c.finish = []string{w}, []string{f}
		case i%5 == 4: // n = 2, sampled with a seed: choice k has seed+k
			c.body = fmt.Sprintf(`{"model":"demo-teacher","prompt":%q,"max_tokens":%d,"temperature":0.8,"top_p":0.9,"seed":%d,"n":2,"stream":%v}`, text, maxTok, i, c.stream)
			for k := range 2 {
				w, f := expect(t, s, ids, model.GenerateParams{MaxTokens: maxTok, Temperature: 0.8, TopP: 0.9, Seed: uint64(i + k)}, nil)
				c.want, c.finish = append(c.want, w), append(c.finish, f)
			}
		case i%5 == 2: // a stop string
			c.body = fmt.Sprintf(`{"model":"demo-teacher","prompt":%q,"max_tokens":%d,"temperature":0,"stop":["e "],"stream":%v}`, text, maxTok, c.stream)
			w, f := expect(t, s, ids, model.GenerateParams{MaxTokens: maxTok}, []string{"e "})
			c.want, c.finish = []string{w}, []string{f}
		default:
			c.body = fmt.Sprintf(`{"model":"demo-teacher","prompt":%q,"max_tokens":%d,"temperature":0,"stream":%v}`, text, maxTok, c.stream)
			w, f := expect(t, s, ids, model.GenerateParams{MaxTokens: maxTok}, nil)
			c.want, c.finish = []string{w}, []string{f}
		}
		out = append(out, c)
	}
	return out
}

// answer posts a request and returns each choice's text and finish reason,
// from the whole answer or the stream's chunks.
func answer(url string, c loadCase) ([]string, []string, error) {
	resp, err := http.Post(url+c.path, "application/json", strings.NewReader(c.body))
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	n := len(c.want)
	texts, finish := make([]string, n), make([]string, n)
	type choice struct {
		Index   int
		Text    string
		Message struct{ Content string }
		Delta   struct{ Content string }
		Finish  *string `json:"finish_reason"`
	}
	if !c.stream {
		var out struct{ Choices []choice }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return nil, nil, err
		}
		for _, ch := range out.Choices {
			texts[ch.Index] = ch.Text + ch.Message.Content
			finish[ch.Index] = *ch.Finish
		}
		return texts, finish, nil
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var ev struct{ Choices []choice }
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return nil, nil, err
		}
		for _, ch := range ev.Choices {
			texts[ch.Index] += ch.Text + ch.Delta.Content
			if ch.Finish != nil {
				finish[ch.Index] = *ch.Finish
			}
		}
	}
	return texts, finish, sc.Err()
}

// TestConcurrentMatchesGenerate: many concurrent requests of mixed lengths
// and kinds are decoded together — the scheduler runs MaxBatch sequences
// per step — and every choice is exactly what Generate gives its prompt
// alone (greedy, and seeded sampling).
func TestConcurrentMatchesGenerate(t *testing.T) {
	const requests, batch = 30, 6
	s, ts := newServer(t, true, Config{MaxBatch: batch, MaxQueue: requests})
	cases := loadCases(t, s, requests)
	// The first request holds the scheduler until every other one waits,
	// so that the batch fills whatever the machine's speed.
	var once sync.Once
	s.afterAdmit = func() {
		once.Do(func() {
			for s.queued() < requests-1 {
				time.Sleep(time.Millisecond)
			}
		})
	}
	var wg sync.WaitGroup
	errs := make([]error, len(cases))
	for i, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			texts, finish, err := answer(ts.URL, c)
			switch {
			case err != nil:
				errs[i] = err
			case fmt.Sprint(texts) != fmt.Sprint(c.want) || fmt.Sprint(finish) != fmt.Sprint(c.finish):
				errs[i] = fmt.Errorf("%s: got %q %v, Generate %q %v", c.body, texts, finish, c.want, c.finish)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d: %v", i, err)
		}
	}
	if got := s.peakBatch.Load(); got != batch {
		t.Fatalf("at most %d sequences were decoded together, want %d", got, batch)
	}
}

// TestJoinRunningBatch: a request that arrives while another generates
// joins its batch at the next step instead of waiting for it to end.
func TestJoinRunningBatch(t *testing.T) {
	s, ts := newServer(t, false, Config{})
	steps := 0 // the scheduler's
	reached, queued := make(chan struct{}), make(chan struct{})
	s.beforeStep = func() {
		if steps++; steps == 3 {
			close(reached)
			<-queued // the long request has begun; the short one waits
		}
	}
	long := `{"model":"demo-teacher","prompt":"The whale ","max_tokens":80,"temperature":0}`
	short := `{"model":"demo-teacher","prompt":"Call me Ishmael. ","max_tokens":5,"temperature":0}`
	done := make(chan int, 1)
	go func() { done <- postStatus(ts.URL+"/v1/completions", long) }()
	<-reached
	short2 := make(chan map[string]any, 1)
	go func() {
		resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(short))
		var out map[string]any
		if err == nil {
			json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
		}
		short2 <- out
	}()
	for s.queued() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(queued)
	out := <-short2
	if st := <-done; st != 200 {
		t.Fatalf("long request: %d", st)
	}
	want, _ := expect(t, s, s.tok.Encode("Call me Ishmael. "), model.GenerateParams{MaxTokens: 5}, nil)
	if out == nil || out["choices"] == nil {
		t.Fatalf("short request: %v", out)
	}
	if got := out["choices"].([]any)[0].(map[string]any)["text"]; got != want {
		t.Fatalf("short request %q, Generate %q", got, want)
	}
	if s.peakBatch.Load() != 2 {
		t.Fatalf("the short request did not join the long one's batch (at most %d sequences a step)", s.peakBatch.Load())
	}
}
