package xtok

// Strings is what vocabulary matching needs from a tokenizer: each id's
// vocabulary form (byte-level text for model tokens, "Ġthe"; the content of
// added tokens, "<|im_end|>"), as Hugging Face's get_vocab() lists them.
type Strings interface {
	Token(id int32) (string, bool)
}

// Match is a pairing of two vocabularies: Pairs holds (student id, teacher
// id) of the tokens both have, by token string (TRL GOLD's
// _initialize_vocabulary_mapping), in increasing student id; StudentFree
// and TeacherFree the other ids of each side in increasing order. Ids are
// those of the models' logits, [0, Vs) and [0, Vt): ids past a tokenizer's
// vocabulary (a model's padded rows) are free.
type Match struct {
	Pairs                    [][2]int32
	StudentFree, TeacherFree []int32
}

// MatchVocab pairs the student's ids [0, Vs) with the teacher's [0, Vt) by
// token string. A string that two ids of one side share (it cannot happen in
// one tokenizer.json) pairs at most once, its first id.
func MatchVocab(student, teacher Strings, Vs, Vt int) Match {
	byString := make(map[string]int32, Vt)
	for j := range int32(Vt) {
		if s, ok := teacher.Token(j); ok {
			if _, dup := byString[s]; !dup {
				byString[s] = j
			}
		}
	}
	var m Match
	tUsed := make([]bool, Vt)
	for i := range int32(Vs) {
		s, ok := student.Token(i)
		if j, found := byString[s]; ok && found && !tUsed[j] {
			m.Pairs = append(m.Pairs, [2]int32{i, j})
			tUsed[j] = true
			continue
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
