package xtok

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model/tokenizer"
)

// pairsOf returns m's pairs as a map from student id to teacher id, having
// checked that m lists every student id of [0, Vs) and teacher id of
// [0, Vt) exactly once, each list in increasing order.
func pairsOf(t *testing.T, name string, m Match, Vs, Vt int) map[int32]int32 {
	t.Helper()
	sSeen, tSeen := make([]int, Vs), make([]int, Vt)
	pairs := make(map[int32]int32, len(m.Pairs))
	for k, p := range m.Pairs {
		if k > 0 && p[0] <= m.Pairs[k-1][0] {
			t.Fatalf("%s: pairs not in increasing student id at %d", name, k)
		}
		sSeen[p[0]]++
		tSeen[p[1]]++
		pairs[p[0]] = p[1]
	}
	for _, i := range m.StudentFree {
		sSeen[i]++
	}
	for _, j := range m.TeacherFree {
		tSeen[j]++
	}
	for i, n := range sSeen {
		if n != 1 {
			t.Fatalf("%s: student id %d listed %d times", name, i, n)
		}
	}
	for j, n := range tSeen {
		if n != 1 {
			t.Fatalf("%s: teacher id %d listed %d times", name, j, n)
		}
	}
	if !slices.IsSorted(m.StudentFree) || !slices.IsSorted(m.TeacherFree) {
		t.Fatalf("%s: free ids not in increasing order", name)
	}
	return pairs
}

// TestMatchVocabSentencePieceByteLevel pairs Llama 2's and Phi-3's
// SentencePiece vocabularies (llama.cpp's files) with GPT-2's and Qwen3's
// byte-level ones by the text each token stands for. The ids come from the
// real files, by encoding the same text with each tokenizer: SentencePiece's
// "▁the" is byte-level BPE's "Ġthe", the byte piece "<0x0A>" is "Ċ"; the
// piece "é" (two bytes of UTF-8) is byte-level's "Ã©", not its "é", which
// is the lone byte 0xE9 and pairs with the byte piece "<0xE9>". Of the two
// SentencePiece ids that stand for a space, "▁" (what the encoder uses)
// pairs and "<0x20>" is free. Special tokens pair only with a special token
// of the same string.
func TestMatchVocabSentencePieceByteLevel(t *testing.T) {
	// last returns the last id of tk's encoding of text, having checked that
	// the file spells it want (SentencePiece prefixes the text with "▁",
	// which comes out as a token of its own before "▁the" or "<0x0A>").
	last := func(name, text, want string) int32 {
		tk := tok(t, name)
		ids := tk.Encode(text)
		id := ids[len(ids)-1]
		if got, _ := tk.Token(id); got != want {
			t.Fatalf("%s encodes %q as %v, ending in %q, want %q", name, text, ids, got, want)
		}
		return id
	}
	id := func(name, token string) int32 {
		i, ok := tok(t, name).TokenID(token)
		if !ok {
			t.Fatalf("%s has no token %q", name, token)
		}
		return i
	}
	for _, student := range []string{"llama2", "phi3"} {
		for _, teacher := range []string{"gpt2", "qwen3"} {
			st, tt := tok(t, student), tok(t, teacher)
			name := student + " vs " + teacher
			Vs, Vt := st.VocabSize(), tt.VocabSize()
			pairs := pairsOf(t, name, MatchVocab(st, tt, Vs, Vt), Vs, Vt)
			want := func(s, te int32) {
				t.Helper()
				ss, _ := st.Token(s)
				ts, _ := tt.Token(te)
				if got, ok := pairs[s]; !ok || got != te {
					t.Errorf("%s: student %d %q pairs with %d (paired %v), want teacher %d %q", name, s, ss, got, ok, te, ts)
				}
			}
			free := func(s int32) {
				t.Helper()
				if got, ok := pairs[s]; ok {
					ss, _ := st.Token(s)
					ts, _ := tt.Token(got)
					t.Errorf("%s: student %d %q pairs with teacher %d %q, want it free", name, s, ss, got, ts)
				}
			}
			want(last(student, " the", "▁the"), last(teacher, " the", "Ġthe"))
			want(last(student, "\n", "<0x0A>"), last(teacher, "\n", "Ċ"))
			want(last(student, "\t", "<0x09>"), last(teacher, "\t", "ĉ"))
			want(last(student, "touché", "é"), last(teacher, "é", "Ã©"))
			want(id(student, "<0xE9>"), id(teacher, "é"))
			want(id(student, "▁"), last(teacher, " ", "Ġ"))
			free(id(student, "<0x20>"))
			free(id(student, "<s>"))
			free(id(student, "<unk>"))
			if student == "llama2" {
				// Llama 2's "</s>" is its special EOS; Qwen3 has a plain
				// token of the text "</s>", spelled alike but no marker: no
				// pair.
				free(id(student, "</s>"))
			}
			if student == "phi3" {
				// Phi-3's "</s>" is an added token that is not special
				// (transformers' conversion marks it so): text, which pairs
				// with Qwen3's text token "</s>".
				if teacher == "qwen3" {
					want(id(student, "</s>"), id(teacher, "</s>"))
				}
				// Both mark a document's end with the special <|endoftext|>;
				// <|end|> (Phi-3's end of turn) is no token of the teacher's.
				want(last(student, "<|endoftext|>", "<|endoftext|>"), last(teacher, "<|endoftext|>", "<|endoftext|>"))
				free(last(student, "<|end|>", "<|end|>"))
			}
		}
	}
}

// xtokTexts are real texts to tokenize: llama.cpp's tokenizer test strings
// (spaces, newlines, digits, emoji, Cyrillic, Khmer, Chinese) and the
// demo's 275 validation lines (English prose).
func xtokTexts(t *testing.T) []string {
	t.Helper()
	inp, err := os.ReadFile(filepath.Join("..", "..", "model", "tokenizer", "testdata", "llamacpp", "ggml-vocab-llama-spm.gguf.inp"))
	if err != nil {
		t.Fatal(err)
	}
	texts := strings.Split(strings.TrimSuffix(string(inp), "\n__ggml_vocab_test__\n"), "\n__ggml_vocab_test__\n")
	f, err := os.Open(filepath.Join("..", "demo", "assets", "data", "val.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		var line struct{ Text string }
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		texts = append(texts, line.Text)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return texts
}

// TestMatchVocabPairsAlignedTokens: wherever the alignment finds one
// student token and one teacher token that stand for the same bytes of a
// real text (each encoded by its own tokenizer), the match pairs those two
// ids, between SentencePiece and byte-level vocabularies in both directions
// and between two byte-level ones. It logs the pair counts, and GOLD's by
// vocabulary string for comparison.
func TestMatchVocabPairsAlignedTokens(t *testing.T) {
	texts := xtokTexts(t)
	for _, c := range [][2]string{{"llama2", "gpt2"}, {"llama2", "qwen3"}, {"phi3", "qwen3"}, {"qwen3", "llama2"}, {"gpt2", "qwen3"}} {
		st, tt := tok(t, c[0]), tok(t, c[1])
		name := c[0] + " vs " + c[1]
		Vs, Vt := st.VocabSize(), tt.VocabSize()
		pairs := pairsOf(t, name, MatchVocab(st, tt, Vs, Vt), Vs, Vt)
		gold := goldPairs(st, tt)
		a := Aligner{Student: st, Teacher: tt}
		oneToOne, paired, goldPaired := 0, 0, 0
		for _, text := range texts {
			s, te := st.Encode(text), tt.Encode(text)
			spans, err := a.Align(s, te)
			if err != nil {
				t.Fatalf("%s: %q: %v", name, text, err)
			}
			for _, sp := range spans {
				if sp.S1-sp.S0 != 1 || sp.T1-sp.T0 != 1 {
					continue
				}
				oneToOne++
				if j, ok := gold[s[sp.S0]]; ok && j == te[sp.T0] {
					goldPaired++
				}
				if j, ok := pairs[s[sp.S0]]; ok && j == te[sp.T0] {
					paired++
				} else if oneToOne-paired <= 5 {
					ss, _ := st.Token(s[sp.S0])
					ts, _ := tt.Token(te[sp.T0])
					t.Errorf("%s: %q: student %d %q and teacher %d %q stand for the same text but are not paired", name, text, s[sp.S0], ss, te[sp.T0], ts)
				}
			}
		}
		spaced := 0 // pairs of text that starts with a space: "▁the" and "Ġthe"
		for i := range pairs {
			if b, _ := st.TokenBytes(i); b[0] == ' ' {
				spaced++
			}
		}
		goldOther := 0 // GOLD's pairs of tokens that stand for different text
		for i, j := range gold {
			a, _ := st.TokenBytes(i)
			b, _ := tt.TokenBytes(j)
			if string(a) != string(b) {
				goldOther++
			}
		}
		t.Logf("%s (%d and %d ids): %d pairs (%d of text that starts with a space), by string %d (%d of different text); "+
			"of %d one-to-one aligned tokens of %d texts %d paired, by string %d",
			name, Vs, Vt, len(pairs), spaced, len(gold), goldOther, oneToOne, len(texts), paired, goldPaired)
		if oneToOne < 1000 {
			t.Errorf("%s: only %d one-to-one aligned tokens: the texts did not load", name, oneToOne)
		}
	}
}

// goldPairs pairs two vocabularies by string as TRL GOLD's
// _initialize_vocabulary_mapping does (a teacher token pairs with the
// student token of the same get_vocab() string), for comparison: student
// id to teacher id.
func goldPairs(st, tt *tokenizer.Tokenizer) map[int32]int32 {
	byString := map[string]int32{}
	for i := range int32(st.VocabSize()) {
		if s, ok := st.Token(i); ok {
			byString[s] = i
		}
	}
	pairs := map[int32]int32{}
	for j := range int32(tt.VocabSize()) {
		if s, ok := tt.Token(j); ok {
			if i, found := byString[s]; found {
				pairs[i] = j
			}
		}
	}
	return pairs
}

// fakeVocab is a vocabulary made up for one rule of MatchVocab at a time:
// tokens[id] its spelling ("" with no bytes: no token), text[id] its
// bytes, special the special ids.
type fakeVocab struct {
	tokens  []string
	text    []string
	special map[int32]bool
}

func (v fakeVocab) Token(id int32) (string, bool) {
	if id < 0 || int(id) >= len(v.tokens) || v.tokens[id] == "" {
		return "", false
	}
	return v.tokens[id], true
}

func (v fakeVocab) TokenBytes(id int32) ([]byte, bool) {
	if _, ok := v.Token(id); !ok {
		return nil, false
	}
	return []byte(v.text[id]), true
}

func (v fakeVocab) IsSpecial(id int32) bool { return v.special[id] }

// TestMatchVocabRules checks MatchVocab's rules on small made-up
// vocabularies, the expected pairs worked out by hand from its doc comment:
// tokens of no bytes are free (not paired with each other); a special token
// pairs only with a special token of the same string; of several ids of one
// side that stand for the same bytes, a piece wins over a <0xNN> byte
// piece, else the first id wins, and the others are free; ids that name no
// token and ids past the vocabulary are free.
func TestMatchVocabRules(t *testing.T) {
	student := fakeVocab{
		// Ids 0–7; 5 names no token; "▁a" and "▁a2" both stand for " a".
		tokens:  []string{"<s>", "<|im_end|>", "<0x20>", "▁", "<pad>", "", "▁a", "▁a2"},
		text:    []string{"<s>", "<|im_end|>", " ", " ", "", "", " a", " a"},
		special: map[int32]bool{0: true, 1: true},
	}
	teacher := fakeVocab{
		// Ids 0–7; "Ġa" and "▁a" both stand for " a".
		tokens: []string{"<s>", "<|im_end|>", "Ġ", "<0x20>", "Ġa", "<pad>", "▁a", "<mask>"},
		text:   []string{"<s>", "<|im_end|>", " ", " ", " a", "", " a", ""},
		// The teacher's "<s>" is text, not a special token; its <pad> is a
		// special token and its <mask> a token of no bytes, neither of which
		// pairs with the student's <pad> (a token of no bytes either).
		special: map[int32]bool{1: true, 5: true},
	}
	m := MatchVocab(student, teacher, 10, 9)
	pairsOf(t, "made up", m, 10, 9)
	if want := [][2]int32{{1, 1}, {3, 2}, {6, 4}}; !slices.Equal(m.Pairs, want) {
		t.Errorf("pairs %v, want %v", m.Pairs, want)
	}
	if want := []int32{0, 2, 4, 5, 7, 8, 9}; !slices.Equal(m.StudentFree, want) {
		t.Errorf("student free %v, want %v", m.StudentFree, want)
	}
	if want := []int32{0, 3, 5, 6, 7, 8}; !slices.Equal(m.TeacherFree, want) {
		t.Errorf("teacher free %v, want %v", m.TeacherFree, want)
	}
}

var _ Tokens = (*tokenizer.Tokenizer)(nil)
