package serve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// refLogSoftmax is each position's log-softmax of the model's logits for
// one sequence run alone (model.Forward, no padding), in float64.
func refLogSoftmax(t *testing.T, dir string, ids []int32) [][]float64 {
	t.Helper()
	m, err := model.LoadDir(dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Forward(model.Batch{B: 1, T: len(ids), IDs: ids}); err != nil {
		t.Fatal(err)
	}
	V := m.Config.Vocab
	host := make([]float32, len(ids)*V)
	if err := m.Backend().Download(m.Logits(), host); err != nil {
		t.Fatal(err)
	}
	out := make([][]float64, len(ids))
	for j := range ids {
		row := host[j*V : (j+1)*V]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, float64(v))
		}
		var s float64
		for _, v := range row {
			s += math.Exp(float64(v) - mx)
		}
		out[j] = make([]float64, V)
		for i, v := range row {
			out[j][i] = float64(v) - mx - math.Log(s)
		}
	}
	return out
}

// rawJSON posts body and returns the raw answer.
func rawJSON(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.Bytes()
}

// TestScorePromptLogprobs: a batch of token-id prompts with echo,
// max_tokens 0 and prompt_logprobs k gets, for every prompt position after
// the first, the given token's log-probability and rank and the k most
// likely tokens with their ids — matching the model's own forward pass on
// each prompt alone (float64 log-softmax) — in vLLM's shape: null first,
// the given token first in each object, then ranks 1…k; echoed logprobs
// with "token_id:<id>" tokens and a null first entry; prompt_token_ids.
// With a small Config.ScoreTokens the prompts go through several forward
// passes and score the same.
func TestScorePromptLogprobs(t *testing.T) {
	for _, budget := range []int{0, 8} {
		t.Run(fmt.Sprintf("score_tokens=%d", budget), func(t *testing.T) { testScorePromptLogprobs(t, budget) })
	}
}

func testScorePromptLogprobs(t *testing.T, budget int) {
	s, ts := newServer(t, false, Config{ScoreTokens: budget})
	prompts := [][]int32{{72, 101, 108, 108, 111, 32, 119}, {84, 104, 101}, {65, 32, 119, 104, 97, 108, 101, 33, 10, 73}}
	const k = 3
	body, _ := json.Marshal(map[string]any{"model": "demo-teacher", "prompt": prompts, "echo": true, "max_tokens": 0,
		"logprobs": k, "prompt_logprobs": k, "return_tokens_as_token_ids": true, "return_token_ids": true})
	status, raw := rawJSON(t, ts.URL+"/v1/completions", string(body))
	if status != 200 {
		t.Fatalf("%d %s", status, raw)
	}
	var out struct {
		Choices []struct {
			Index          int
			Text           string
			FinishReason   string            `json:"finish_reason"`
			PromptLogprobs []json.RawMessage `json:"prompt_logprobs"`
			PromptTokenIDs []int32           `json:"prompt_token_ids"`
			Logprobs       struct {
				Tokens        []string             `json:"tokens"`
				TokenLogprobs []*float64           `json:"token_logprobs"`
				TopLogprobs   []map[string]float64 `json:"top_logprobs"`
				TextOffset    []int                `json:"text_offset"`
			}
		}
		Usage map[string]int
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Choices) != len(prompts) || out.Usage["prompt_tokens"] != 20 || out.Usage["completion_tokens"] != 0 {
		t.Fatalf("choices %d, usage %v", len(out.Choices), out.Usage)
	}
	for i, ch := range out.Choices {
		ids := prompts[i]
		ref := refLogSoftmax(t, s.cfg.Model, ids)
		if ch.Index != i || len(ch.PromptLogprobs) != len(ids) || string(ch.PromptLogprobs[0]) != "null" || fmt.Sprint(ch.PromptTokenIDs) != fmt.Sprint(ids) {
			t.Fatalf("choice %d: index %d, %d prompt_logprobs (first %s), prompt_token_ids %v", i, ch.Index, len(ch.PromptLogprobs), ch.PromptLogprobs[0], ch.PromptTokenIDs)
		}
		for j := 1; j < len(ids); j++ {
			want := ref[j-1]
			// the keys in order, and the values
			keys := objectKeys(t, ch.PromptLogprobs[j])
			var entries map[string]struct {
				Logprob      float64 `json:"logprob"`
				Rank         int     `json:"rank"`
				DecodedToken string  `json:"decoded_token"`
			}
			if err := json.Unmarshal(ch.PromptLogprobs[j], &entries); err != nil {
				t.Fatal(err)
			}
			if keys[0] != strconv.Itoa(int(ids[j])) {
				t.Fatalf("choice %d position %d: first key %s, want the given token %d", i, j, keys[0], ids[j])
			}
			order := make([]int, len(want))
			for a := range order {
				order[a] = a
			}
			sort.SliceStable(order, func(a, b int) bool { return want[order[a]] > want[order[b]] })
			rank := 0
			for _, v := range want {
				if v >= want[ids[j]] {
					rank++
				}
			}
			given := entries[keys[0]]
			if math.Abs(given.Logprob-want[ids[j]]) > 1e-4 || given.Rank != rank || given.DecodedToken != s.tok.Decode(ids[j:j+1]) {
				t.Fatalf("choice %d position %d: given token %+v, want logprob %g rank %d", i, j, given, want[ids[j]], rank)
			}
			if len(entries) != k && len(entries) != k+1 {
				t.Fatalf("choice %d position %d: %d entries, want k or k+1", i, j, len(entries))
			}
			for r := 1; r <= k; r++ {
				id := strconv.Itoa(order[r-1])
				e, ok := entries[id]
				if !ok || e.Rank != r || math.Abs(e.Logprob-want[order[r-1]]) > 1e-4 {
					t.Fatalf("choice %d position %d: rank %d should be token %s (%g): %s", i, j, r, id, want[order[r-1]], ch.PromptLogprobs[j])
				}
			}
			// the echoed OpenAI-style logprobs say the same
			if ch.Logprobs.Tokens[j] != "token_id:"+strconv.Itoa(int(ids[j])) || math.Abs(*ch.Logprobs.TokenLogprobs[j]-want[ids[j]]) > 1e-4 ||
				len(ch.Logprobs.TopLogprobs[j]) < k {
				t.Fatalf("choice %d position %d: echoed logprobs %q %v %v", i, j, ch.Logprobs.Tokens[j], *ch.Logprobs.TokenLogprobs[j], ch.Logprobs.TopLogprobs[j])
			}
		}
		if ch.Logprobs.TokenLogprobs[0] != nil || ch.Logprobs.TopLogprobs[0] != nil || ch.Logprobs.TextOffset[0] != 0 || ch.Text != "" || ch.FinishReason != "length" {
			t.Fatalf("choice %d: first echoed entry %v %v, text %q, finish %q", i, ch.Logprobs.TokenLogprobs[0], ch.Logprobs.TopLogprobs[0], ch.Text, ch.FinishReason)
		}
	}
}

// objectKeys lists a JSON object's keys in their order.
func objectKeys(t *testing.T, raw json.RawMessage) []string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.Token()
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		dec.Decode(&v)
	}
	return keys
}

// TestScoreEchoWithGeneration: echo with max_tokens > 0 returns the prompt
// then the completion (text and logprobs), the completion being the one the
// same request without echo gets; prompt_logprobs without echo scores the
// prompt and leaves the text alone; a text prompt is tokenized as the
// server tokenizes it.
func TestScoreEchoWithGeneration(t *testing.T) {
	_, ts := newServer(t, false, Config{})
	plain := `{"model":"demo-teacher","prompt":"Call me","max_tokens":3,"temperature":0,"logprobs":1}`
	_, a, _ := post(t, ts.URL+"/v1/completions", plain)
	echo := `{"model":"demo-teacher","prompt":"Call me","max_tokens":3,"temperature":0,"logprobs":1,"echo":true}`
	status, b, _ := post(t, ts.URL+"/v1/completions", echo)
	if status != 200 {
		t.Fatalf("%d %v", status, b)
	}
	ca, cb := a["choices"].([]any)[0].(map[string]any), b["choices"].([]any)[0].(map[string]any)
	if cb["text"] != "Call me"+ca["text"].(string) {
		t.Fatalf("echo text %q, completion %q", cb["text"], ca["text"])
	}
	la, lb := ca["logprobs"].(map[string]any), cb["logprobs"].(map[string]any)
	ta, tb := la["tokens"].([]any), lb["tokens"].([]any)
	if len(tb) != 7+len(ta) || fmt.Sprint(tb[7:]) != fmt.Sprint(ta) || lb["token_logprobs"].([]any)[0] != nil {
		t.Fatalf("echoed tokens %v, completion tokens %v", tb, ta)
	}
	if len(cb["prompt_logprobs"].([]any)) != 7 {
		t.Fatalf("prompt_logprobs: %v", cb["prompt_logprobs"])
	}
	status, c, _ := post(t, ts.URL+"/v1/completions", `{"model":"demo-teacher","prompt":"Call me","max_tokens":3,"temperature":0,"prompt_logprobs":0}`)
	cc := c["choices"].([]any)[0].(map[string]any)
	if status != 200 || cc["text"] != ca["text"] || len(cc["prompt_logprobs"].([]any)) != 7 {
		t.Fatalf("prompt_logprobs without echo: %d %v", status, c)
	}
	for _, e := range cc["prompt_logprobs"].([]any)[1:] {
		if len(e.(map[string]any)) != 1 {
			t.Fatalf("prompt_logprobs 0 holds more than the given token: %v", e)
		}
	}
}
