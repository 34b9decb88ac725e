package xtok

import "strconv"

// Tokens is what vocabulary matching needs from a tokenizer
// (model/tokenizer's Tokenizer has it): the bytes each id stands for in
// text (Vocab), its vocabulary form ("▁the", "Ġthe", "<0x0A>",
// "<|im_end|>"), and whether it is a special token.
type Tokens interface {
	Vocab
	Token(id int32) (string, bool)
	IsSpecial(id int32) bool
}

// Match is a pairing of two vocabularies: Pairs holds (student id, teacher
// id) of the tokens both have, in increasing student id; StudentFree and
// TeacherFree the other ids of each side in increasing order. Ids are those
// of the models' logits, [0, Vs) and [0, Vt): ids past a tokenizer's
// vocabulary (a model's padded rows) are free.
type Match struct {
	Pairs                    [][2]int32
	StudentFree, TeacherFree []int32
}

// MatchVocab pairs the student's ids [0, Vs) with the teacher's [0, Vt)
// that stand for the same text: equal TokenBytes, so SentencePiece's "▁the"
// pairs with byte-level BPE's "Ġthe" (both " the") and the byte piece
// "<0x0A>" with "Ċ" (both "\n"). TRL GOLD's _initialize_vocabulary_mapping
// compares the vocabulary strings instead, which between those two families
// pairs only tokens spelled alike (no word with its leading space), and some
// of those wrongly (SentencePiece's "é" with byte-level "é", the lone byte
// 0xE9).
//
// Special tokens ("<s>", "<|endoftext|>", "<|im_end|>") stand for no text:
// their bytes are only how Decode writes them. A special token pairs with a
// special token of the other side of the same vocabulary string (the demo's
// "<|im_end|>" with Qwen's: the same marker of the same chat format), and
// never with a token of text that happens to be spelled alike; a special
// token the other side does not have is free. A token of no bytes (an empty
// piece) is free: it stands for nothing the other side could predict, and
// pairing such tokens with each other would pair arbitrary ids.
//
// Each text (or special string) pairs at most once. Where several ids of one
// side stand for the same bytes (SentencePiece's "▁" and its byte piece
// "<0x20>" are both " "), the one that pairs is the id that side's encoder
// gives that text: a piece rather than a <0xNN> byte piece (SentencePiece
// uses a byte piece only for a character no piece covers), else the first
// id; the others are free.
func MatchVocab(student, teacher Tokens, Vs, Vt int) Match {
	sKey, sPairing := vocabKeys(student, Vs)
	_, tPairing := vocabKeys(teacher, Vt)
	var m Match
	tUsed := make([]bool, Vt)
	for i := range int32(Vs) {
		if k := sKey[i]; k != "" && sPairing[k] == i {
			if j, found := tPairing[k]; found {
				m.Pairs = append(m.Pairs, [2]int32{i, j})
				tUsed[j] = true
				continue
			}
		}
		m.StudentFree = append(m.StudentFree, i)
	}
	for j := range int32(Vt) {
		if !tUsed[j] {
			m.TeacherFree = append(m.TeacherFree, j)
		}
	}
	return m
}

// vocabKeys returns the key each id [0, V) pairs by ("" for an id that
// pairs with nothing): "t" and its text bytes, or "s" and a special token's
// string; and for each key the id that pairs by it (MatchVocab's rules).
func vocabKeys(v Tokens, V int) (keys []string, pairing map[string]int32) {
	keys = make([]string, V)
	pairing = make(map[string]int32, V)
	bytePiece := make(map[string]bool) // keys whose pairing id is a <0xNN> piece
	for id := range int32(V) {
		s, ok := v.Token(id)
		if !ok {
			continue
		}
		var k string
		isByte := false
		if v.IsSpecial(id) {
			k = "s" + s
		} else if b, ok := v.TokenBytes(id); ok && len(b) > 0 {
			k, isByte = "t"+string(b), isBytePiece(s, b)
		} else {
			continue
		}
		keys[id] = k
		if _, dup := pairing[k]; !dup || (bytePiece[k] && !isByte) {
			pairing[k], bytePiece[k] = id, isByte
		}
	}
	return keys, pairing
}

// isBytePiece says whether tok, which stands for b, is a SentencePiece byte
// piece: spelled "<0xNN>" and standing for the one byte NN.
func isBytePiece(tok string, b []byte) bool {
	if len(b) != 1 || len(tok) != 6 || tok[:3] != "<0x" || tok[5] != '>' {
		return false
	}
	n, err := strconv.ParseUint(tok[3:5], 16, 8)
	return err == nil && byte(n) == b[0]
}

// AllFree is the match of no pairs (ULD alone: every id compared sorted).
func AllFree(Vs, Vt int) Match {
	m := Match{StudentFree: make([]int32, Vs), TeacherFree: make([]int32, Vt)}
	for i := range m.StudentFree {
		m.StudentFree[i] = int32(i)
	}
	for j := range m.TeacherFree {
		m.TeacherFree[j] = int32(j)
	}
	return m
}
