package xtok

import (
	"errors"
	"fmt"
)

// Vocab is what alignment needs from a tokenizer: the bytes each id stands
// for (model/tokenizer's Tokenizer has it).
type Vocab interface {
	TokenBytes(id int32) ([]byte, bool)
}

// DefaultMaxEdits is the most bytes two renderings of one example may
// differ by (Aligner.MaxEdits 0): chat-template markup differs by a few
// dozen bytes a turn.
const DefaultMaxEdits = 4096

// Span is one aligned stretch: student tokens [S0, S1) and teacher tokens
// [T0, T1) stand for exactly the same bytes, and the two tokenizations share
// no token boundary inside them.
type Span struct{ S0, S1, T0, T1 int }

// Aligner aligns token sequences of one student and one teacher tokenizer.
type Aligner struct {
	Student, Teacher Vocab
	// MaxEdits bounds the byte edits between the two texts (0:
	// DefaultMaxEdits); beyond it Align returns ErrTooDifferent.
	MaxEdits int
}

// Text returns the bytes ids stand for, joined, and each token's starting
// offset in them (offsets[len(ids)] is the length): the text as the
// tokenizer saw it. An id that names no token is an error.
func Text(v Vocab, ids []int32) (text []byte, offsets []int, err error) {
	offsets = make([]int, len(ids)+1)
	for k, id := range ids {
		b, ok := v.TokenBytes(id)
		if !ok {
			return nil, nil, fmt.Errorf("xtok: token %d of the sequence is id %d, which names no token", k, id)
		}
		text = append(text, b...)
		offsets[k+1] = len(text)
	}
	return text, offsets, nil
}

// Align returns the spans of student ids s and teacher ids t, in order: in
// each stretch of text the two share, the runs of tokens between the
// boundaries both tokenizations put at the same place. Tokens that cover
// bytes only one side has, or that stand for no bytes, are in no span.
func (a *Aligner) Align(s, t []int32) ([]Span, error) {
	sText, sOff, err := Text(a.Student, s)
	if err != nil {
		return nil, fmt.Errorf("student: %w", err)
	}
	tText, tOff, err := Text(a.Teacher, t)
	if err != nil {
		return nil, fmt.Errorf("teacher: %w", err)
	}
	maxEdits := a.MaxEdits
	if maxEdits <= 0 {
		maxEdits = DefaultMaxEdits
	}
	blocks, err := commonBlocks(sText, tText, maxEdits)
	if err != nil {
		return nil, err
	}
	var spans []Span
	i, j := 0, 0 // the next student and teacher tokens
	for _, blk := range blocks {
		// The tokens wholly inside the block, in the block's coordinates.
		for i < len(s) && sOff[i] < blk.A {
			i++
		}
		for j < len(t) && tOff[j] < blk.B {
			j++
		}
		iEnd, jEnd := i, j
		for iEnd < len(s) && sOff[iEnd+1] <= blk.A+blk.Len {
			iEnd++
		}
		for jEnd < len(t) && tOff[jEnd+1] <= blk.B+blk.Len {
			jEnd++
		}
		ss := func(k int) int { return sOff[k] - blk.A }
		se := func(k int) int { return sOff[k+1] - blk.A }
		ts := func(k int) int { return tOff[k] - blk.B }
		te := func(k int) int { return tOff[k+1] - blk.B }
		for i < iEnd && j < jEnd {
			// Zero-width tokens mark no boundary of their own: step over them.
			if se(i) == ss(i) {
				i++
				continue
			}
			if te(j) == ts(j) {
				j++
				continue
			}
			if ss(i) < ts(j) {
				i++
				continue
			}
			if ts(j) < ss(i) {
				j++
				continue
			}
			// A common start: extend both runs to the next common end.
			i2, j2 := i, j
			for se(i2) != te(j2) {
				if se(i2) < te(j2) {
					i2++
				} else {
					j2++
				}
				if i2 == iEnd || j2 == jEnd {
					break
				}
			}
			if i2 == iEnd || j2 == jEnd || se(i2) != te(j2) {
				break // the block ends before the two agree on a boundary
			}
			if !zeroWidthInside(sOff, i, i2) && !zeroWidthInside(tOff, j, j2) {
				spans = append(spans, Span{S0: i, S1: i2 + 1, T0: j, T1: j2 + 1})
			}
			i, j = i2+1, j2+1
		}
		i, j = iEnd, jEnd
	}
	return spans, nil
}

// zeroWidthInside reports whether a token of [from, to] stands for no bytes
// (such a run is left out: its predictions are not about the text).
func zeroWidthInside(off []int, from, to int) bool {
	for k := from; k <= to; k++ {
		if off[k+1] == off[k] {
			return true
		}
	}
	return false
}

// Stats counts what an alignment covers, for the run's log.
type Stats struct {
	Examples int
	// Targets is the student's target tokens; Aligned those inside a
	// span that the loss uses.
	Targets, Aligned int
	// Spans used, and how many merge several student or teacher tokens.
	Spans, MultiStudent, MultiTeacher int
}

// Count adds one span the loss uses to s.
func (s *Stats) Count(sp Span) {
	s.Spans++
	s.Aligned += sp.S1 - sp.S0
	if sp.S1-sp.S0 > 1 {
		s.MultiStudent++
	}
	if sp.T1-sp.T0 > 1 {
		s.MultiTeacher++
	}
}

// Add sums another Stats into s.
func (s *Stats) Add(o Stats) {
	s.Examples += o.Examples
	s.Targets += o.Targets
	s.Aligned += o.Aligned
	s.Spans += o.Spans
	s.MultiStudent += o.MultiStudent
	s.MultiTeacher += o.MultiTeacher
}

// String says it in words.
func (s Stats) String() string {
	pct := 0.0
	if s.Targets > 0 {
		pct = 100 * float64(s.Aligned) / float64(s.Targets)
	}
	return fmt.Sprintf("%d of %d student target tokens (%.1f%%) in %d aligned spans over %d examples (%d spans merge several student tokens, %d several teacher tokens)",
		s.Aligned, s.Targets, pct, s.Spans, s.Examples, s.MultiStudent, s.MultiTeacher)
}

// Targets keeps the spans a next-token loss can use: every student token of
// the span is a target (target[k]: token k is predicted by the row before
// it and learned), and the teacher's first token has a row before it
// (T0 ≥ 1). It returns them with their Stats.
func Targets(spans []Span, target []bool) ([]Span, Stats, error) {
	st := Stats{Examples: 1}
	for _, tg := range target {
		if tg {
			st.Targets++
		}
	}
	var out []Span
	for _, sp := range spans {
		if sp.S1 > len(target) {
			return nil, st, errors.New("xtok: a span reaches past the student's targets")
		}
		ok := sp.S0 >= 1 && sp.T0 >= 1
		for k := sp.S0; ok && k < sp.S1; k++ {
			ok = target[k]
		}
		if !ok {
			continue
		}
		out = append(out, sp)
		st.Count(sp)
	}
	return out, st, nil
}
