package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kdnative/kdnative/runtime/cpu"
)

// bigBody is a request body of about n bytes made on the fly: prefix, then
// unit repeated, then suffix; the test's client holds none of it.
type bigBody struct {
	prefix, block, suffix string // block: whole units, about 64 KB
	unitLen, reps         int
	off                   int64
}

func newBigBody(prefix, unit, suffix string, n int) *bigBody {
	return &bigBody{prefix: prefix, block: strings.Repeat(unit, max(1, 64<<10/len(unit))), suffix: suffix,
		unitLen: len(unit), reps: max(0, (n-len(prefix)-len(suffix))/len(unit))}
}

func (b *bigBody) size() int64 {
	return int64(len(b.prefix) + b.reps*b.unitLen + len(b.suffix))
}

func (b *bigBody) Read(p []byte) (int, error) {
	n := 0
	mid := int64(len(b.prefix) + b.reps*b.unitLen)
	for n < len(p) {
		off := b.off
		var src string
		switch {
		case off < int64(len(b.prefix)):
			src = b.prefix[off:]
		case off < mid:
			in := (off - int64(len(b.prefix))) % int64(len(b.block))
			src = b.block[in:min(int64(len(b.block)), in+mid-off)]
		case off < b.size():
			src = b.suffix[off-mid:]
		default:
			if n == 0 {
				return 0, io.EOF
			}
			return n, nil
		}
		c := copy(p[n:], src)
		n += c
		b.off += int64(c)
	}
	return n, nil
}

// send posts a generated body (with its length declared, or chunked) and
// returns the status and the error message.
func send(url string, b *bigBody, chunked bool) (int, string, error) {
	var body io.Reader = b
	if chunked {
		body = struct{ io.Reader }{b} // hides the length
	}
	req, _ := http.NewRequest("POST", url, body)
	if !chunked {
		req.ContentLength = b.size()
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var out struct{ Error *apiError }
	json.NewDecoder(resp.Body).Decode(&out)
	msg := ""
	if out.Error != nil {
		msg = out.Error.Message
	}
	return resp.StatusCode, msg, nil
}

// heapPeak samples the heap in use until stop is closed and returns the
// most it saw.
func heapPeak(stop chan struct{}) chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var ms runtime.MemStats
		var peak uint64
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				out <- peak
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return out
}

// TestBodyMemoryBounded: 50 concurrent 30 MB bodies — one prompt of 30 MB,
// millions of prompt strings, millions of token ids, millions of chat
// messages, a chunked body, a huge ignored field — are refused or answered
// while the heap grows by less than 1 GB: counts and sizes are checked as
// the JSON is decoded (nothing is tokenized), and bodies wait for room in
// the body-memory budget. (Before, one such body took ~1 GB.)
func TestBodyMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 1.5 GB through the loopback (-short)")
	}
	s, ts := newServer(t, true, Config{MaxBodyBytes: 32 << 20})
	const size, clients = 30 << 20, 50
	m := `{"model":"demo-teacher",`
	kinds := []struct {
		path, prefix, unit, suffix string
		chunked                    bool
		status                     int
		says                       string
	}{
		{"/v1/completions", m + `"prompt":"`, "a", `"}`, false, 400, "more than fits"},
		{"/v1/completions", m + `"prompt":["a"`, `,"a"`, `]}`, false, 400, "at most 64"},
		{"/v1/completions", m + `"prompt":[1`, `,1`, `]}`, false, 400, "token ids"},
		{"/v1/chat/completions", m + `"messages":[{"role":"user","content":"a"}`, `,{"role":"user","content":"a"}`, `]}`, false, 400, "more than 128 entries"},
		{"/v1/completions", m + `"prompt":"`, "ab", `"}`, true, 400, "more than fits"},
		{"/v1/completions", m + `"max_tokens":2,"prompt":"a","ignored":"`, "x", `"}`, false, 200, ""},
		{"/v1/completions", m + `"prompt":"a","stop":["a"`, `,"a"`, `]}`, false, 400, "at most 16"},
		{"/v1/completions", m + `"prompt":"a","logit_bias":{"1":1`, `,"1":1`, `}}`, false, 400, "logit_bias is not supported"},
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	stop := make(chan struct{})
	peak := heapPeak(stop)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		k := kinds[i%len(kinds)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, msg, err := send(ts.URL+k.path, newBigBody(k.prefix, k.unit, k.suffix, size), k.chunked)
			if err != nil || status != k.status || !strings.Contains(msg, k.says) {
				errs <- fmt.Errorf("%s%s…: %d %q %v, want %d saying %q", k.prefix, k.unit, status, msg, err, k.status, k.says)
			}
		}()
	}
	wg.Wait()
	close(stop)
	grew := int64(<-peak) - int64(before.HeapInuse)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("heap in use grew by at most %d MB (sampled every 2 ms) for %d concurrent bodies of %d MB", grew>>20, clients, size>>20)
	if grew > 1<<30 {
		t.Fatalf("the heap grew by %d MB for %d concurrent bodies of %d MB, want under 1 GB", grew>>20, clients, size>>20)
	}
	_ = s
}

// TestBodyTooLarge: a body over --max-body-mb is 413 naming the flag —
// at once when its length is declared, after the limit when chunked.
func TestBodyTooLarge(t *testing.T) {
	_, ts := newServer(t, false, Config{MaxBodyBytes: 1 << 20})
	for _, chunked := range []bool{false, true} {
		status, msg, err := send(ts.URL+"/v1/completions", newBigBody(`{"model":"demo-teacher","prompt":"`, "a", `"}`, 2<<20), chunked)
		if err != nil || status != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "--max-body-mb") || !strings.Contains(msg, "1 MiB") {
			t.Errorf("chunked %v: %d %q %v", chunked, status, msg, err)
		}
	}
	// Just under the limit is read (and refused for what it holds).
	status, msg, _ := send(ts.URL+"/v1/completions", newBigBody(`{"model":"demo-teacher","prompt":"`, "a", `"}`, 1<<20-10), false)
	if status != 400 || !strings.Contains(msg, "prompt is") {
		t.Errorf("under the limit: %d %q", status, msg)
	}
	if _, err := New(nil, Config{Model: "x", MaxBodyBytes: 100 << 20, BodyMemoryBytes: 200 << 20}); err == nil || !strings.Contains(err.Error(), "--body-memory-mb") {
		t.Errorf("body memory below 3 × the body limit: %v", err)
	}
}

// TestCountsBeforeTokenizing: a request with too many prompts (or prompts ×
// n) is refused by count, naming the limit.
func TestCountsBeforeTokenizing(t *testing.T) {
	_, ts := newServer(t, false, Config{})
	many := `["a"` + strings.Repeat(`,"a"`, 64) + `]`
	for _, c := range []struct{ body, says string }{
		{`{"model":"demo-teacher","prompt":` + many + `}`, "more than 64 strings"},
		{`{"model":"demo-teacher","n":2,"prompt":["a"` + strings.Repeat(`,"a"`, 32) + `]}`, "33 prompts × n 2"},
		{`{"model":"demo-teacher","prompt":[[1]` + strings.Repeat(`,[1]`, 64) + `]}`, "more than 64 token arrays"},
		{`{"model":"demo-teacher","prompt":[1` + strings.Repeat(`,1`, 200) + `]}`, "more than 127 token ids"},
		{`{"model":"demo-teacher","prompt":[1,"a"]}`, "token ids"},
		{`{"model":"demo-teacher","prompt":["a",1]}`, "want a string, an array of strings, or token ids"},
		{`{"model":"demo-teacher","prompt":[]}`, "empty array"},
		{`{"model":"demo-teacher","prompt":[[]]}`, "empty"},
	} {
		status, out, _ := post(t, ts.URL+"/v1/completions", c.body)
		e, _ := out["error"].(map[string]any)
		if status != 400 || e == nil || !strings.Contains(e["message"].(string), c.says) || e["param"] != "prompt" {
			t.Errorf("%.80s: %d %v, want 400 saying %q", c.body, status, out, c.says)
		}
	}
}

// TestStopAndLogitBiasBounded: stop strings and logit_bias entries are
// refused at the first one too many, as they stream in.
func TestStopAndLogitBiasBounded(t *testing.T) {
	_, ts := newServer(t, false, Config{})
	for _, c := range []struct{ body, param, says string }{
		{`{"model":"demo-teacher","prompt":"a","stop":["a"` + strings.Repeat(`,"a"`, 16) + `]}`, "stop", "more than 16"},
		{`{"model":"demo-teacher","prompt":"a","stop":["a",""]}`, "stop", "must not be empty"},
		{`{"model":"demo-teacher","prompt":"a","stop":["a",1]}`, "stop", "want a string or an array of strings"},
		{`{"model":"demo-teacher","prompt":"a","logit_bias":{"5":-100}}`, "logit_bias", "not supported"},
	} {
		status, out, _ := post(t, ts.URL+"/v1/completions", c.body)
		e, _ := out["error"].(map[string]any)
		if status != 400 || e == nil || !strings.Contains(e["message"].(string), c.says) || e["param"] != c.param {
			t.Errorf("%.80s: %d %v, want 400 saying %q", c.body, status, out, c.says)
		}
	}
	status, out, _ := post(t, ts.URL+"/v1/completions", `{"model":"demo-teacher","prompt":"a","max_tokens":2,"logit_bias":{},"stop":null}`)
	if status != 200 {
		t.Fatalf("empty logit_bias, null stop: %d %v", status, out)
	}
}

// TestFieldNamesAsWritten: type errors name the field as the request wrote
// it, in JSON's words (not common.max_tokens, not Go's types).
func TestFieldNamesAsWritten(t *testing.T) {
	_, ts := newServer(t, true, Config{})
	for _, c := range []struct{ path, body, param, msg string }{
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","max_tokens":"five"}`, "max_tokens", "max_tokens: want an integer, got a string"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","max_tokens":1.5}`, "max_tokens", "max_tokens: want an integer, got 1.5"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","temperature":"hot"}`, "temperature", "temperature: want a number, got a string"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","stream_options":{"include_usage":1}}`, "stream_options.include_usage", "stream_options.include_usage: want true or false, got a number"},
		{"/v1/completions", `{"model":"demo-teacher","prompt":"a","logprobs":"x"}`, "logprobs", "logprobs: want an integer, got a string"},
		{"/v1/chat/completions", `{"model":"demo-teacher","messages":[{"role":"user","content":"a"},{"role":7,"content":"b"}]}`, "messages[1].role", "messages[1].role: want a string, got a number"},
		{"/v1/chat/completions", `{"model":"demo-teacher","messages":["hi"]}`, "messages[0]", "messages[0]: want a {role, content} object, got a string"},
	} {
		status, out, _ := post(t, ts.URL+c.path, c.body)
		e, _ := out["error"].(map[string]any)
		if status != 400 || e == nil || e["message"] != c.msg || e["param"] != c.param {
			t.Errorf("%s: %d %v, want %q (param %q)", c.body, status, out, c.msg, c.param)
		}
	}
}

// listen starts s on a real listener with its limits (connection cap,
// timeouts) and returns the address.
func listen(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-errc })
	return ln.Addr().String()
}

// TestSlowBodyTimesOut: a body sent a byte at a time is cut off at
// --read-timeout with 408 naming the flag; slow headers close the
// connection.
func TestSlowBodyTimesOut(t *testing.T) {
	s, err := New(cpu.New(), Config{Model: demoModel(t, false), ReadTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	addr := listen(t, s)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
	stopDrip := make(chan struct{})
	defer close(stopDrip)
	go func() { // a byte every 50 ms, for longer than the test waits
		for {
			select {
			case <-stopDrip:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a slow body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "--read-timeout") {
		t.Fatalf("slow body: %d %s", resp.StatusCode, body)
	}
	// Headers that never end: the connection is closed.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprintf(c2, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
	c2.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(c2); err != nil {
		t.Fatalf("slow headers: the connection stayed open (%v)", err)
	}
}

// TestConnectionLimit: with --max-connections 2 and two connections open,
// a third client is not served until one of them closes.
func TestConnectionLimit(t *testing.T) {
	s, err := New(cpu.New(), Config{Model: demoModel(t, false), MaxConnections: 2})
	if err != nil {
		t.Fatal(err)
	}
	addr := listen(t, s)
	var idle []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	served := make(chan int, 1)
	go func() {
		client := &http.Client{Transport: &http.Transport{}}
		resp, err := client.Get("http://" + addr + "/v1/models")
		if err != nil {
			served <- 0
			return
		}
		resp.Body.Close()
		served <- resp.StatusCode
	}()
	select {
	case st := <-served:
		t.Fatalf("a third connection was served (%d) while two were open", st)
	case <-time.After(300 * time.Millisecond):
	}
	idle[0].Close()
	select {
	case st := <-served:
		if st != 200 {
			t.Fatalf("third client: %d", st)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the third client was not served after a connection closed")
	}
}
