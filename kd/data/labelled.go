package data

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
)

// A record `kdnative elicit label --top-logprobs K --student-tokenizer DIR`
// writes is a prompt/response (or messages) line with the teacher's tokens
// beside it:
//
//	"teacher_tokens":       [{"token", "logprob", "bytes", "id"}, …]     the answer's tokens, in order
//	"teacher_top_logprobs": [[{"token", "logprob", "bytes", "id"}, …], …] per answer token, its top K
//
// "id" is the student tokenizer's id of the token's text (−1 where the text
// is not exactly one student token). Entry i is the teacher's distribution
// at the position of answer token i: in the rendered example it goes to the
// position of that token (what teacher_topk_ids/teacher_topk_logprobs hold
// for a pre-tokenized line), so such a record is a sparse teacher for
// objectives.kd as it is.
//
// The answer's tokens as rendered must be the teacher's. A teacher that
// sampled another split of the same text than the student's tokenizer
// makes ("hel"+"lo" for "hello") is re-aligned: the teacher's tokens take
// the place of the rendered ones, as a pre-tokenized line of its output
// would have them. A token the student's tokenizer has no single id for
// (id −1), or an answer the chat template renders otherwise than written
// (trimmed, say), makes the record a bad line that says so.

// labelTeacher is a record's teacher: the answer's tokens as student ids,
// and per token its top alternatives.
type labelTeacher struct {
	ids   []int32  // −1: no single student token
	texts []string // the tokens as the teacher wrote them (their bytes)
	raw   []string // the tokens' "token" strings
	top   [][]labelAlt
	k     int // the most alternatives a position has
}

type labelAlt struct {
	id int32 // −1: unmapped
	lp float64
}

// labelToken is one entry of teacher_tokens or teacher_top_logprobs.
type labelToken struct {
	Token   string   `json:"token"`
	Logprob *float64 `json:"logprob"`
	Bytes   []int    `json:"bytes"`
	ID      *int64   `json:"id"`
}

// text is the token's text: its bytes when given (a byte-level token that
// is part of a UTF-8 sequence has no text of its own).
func (t labelToken) text() string {
	if len(t.Bytes) == 0 {
		return t.Token
	}
	b := make([]byte, len(t.Bytes))
	for i, v := range t.Bytes {
		b[i] = byte(v)
	}
	return string(b)
}

// parseLabelTeacher reads a label record's teacher fields. It returns nil
// when the line has none, and noIDs when they carry no student ids (label
// run without --student-tokenizer): the line is then SFT data only.
func parseLabelTeacher(obj map[string]json.RawMessage, vocab int) (t *labelTeacher, noIDs bool, err error) {
	rawTop, hasTop := obj["teacher_top_logprobs"]
	rawToks, hasToks := obj["teacher_tokens"]
	hasTop = hasTop && !isNull(rawTop)
	hasToks = hasToks && !isNull(rawToks)
	if !hasTop {
		return nil, false, nil
	}
	if !hasToks {
		return nil, false, fmt.Errorf(`"teacher_top_logprobs" needs "teacher_tokens" beside it (the tokens they are the alternatives of)`)
	}
	var toks []labelToken
	var top [][]labelToken
	if err := json.Unmarshal(rawToks, &toks); err != nil {
		return nil, false, fmt.Errorf(`"teacher_tokens" must be a list of {"token", "logprob", "id"}: %v`, err)
	}
	if err := json.Unmarshal(rawTop, &top); err != nil {
		return nil, false, fmt.Errorf(`"teacher_top_logprobs" must be a list of lists of {"token", "logprob", "id"}: %v`, err)
	}
	if len(toks) != len(top) {
		return nil, false, fmt.Errorf(`"teacher_tokens" has %d tokens and "teacher_top_logprobs" %d positions`, len(toks), len(top))
	}
	anyID := false
	for _, tk := range toks {
		anyID = anyID || tk.ID != nil
	}
	for _, row := range top {
		for _, a := range row {
			anyID = anyID || a.ID != nil
		}
	}
	if !anyID {
		return nil, len(toks) > 0, nil
	}
	id := func(v *int64, what string) (int32, error) {
		switch {
		case v == nil || *v == -1:
			return -1, nil
		case *v < 0 || *v > math.MaxInt32 || (vocab > 0 && *v >= int64(vocab)):
			return 0, fmt.Errorf("%s has id %d, outside the vocabulary", what, *v)
		}
		return int32(*v), nil
	}
	t = &labelTeacher{ids: make([]int32, len(toks)), texts: make([]string, len(toks)), raw: make([]string, len(toks)), top: make([][]labelAlt, len(top))}
	for i, tk := range toks {
		if t.ids[i], err = id(tk.ID, fmt.Sprintf("teacher_tokens[%d]", i)); err != nil {
			return nil, false, err
		}
		t.texts[i], t.raw[i] = tk.text(), tk.Token
	}
	for i, row := range top {
		t.top[i] = make([]labelAlt, len(row))
		for j, a := range row {
			what := fmt.Sprintf("teacher_top_logprobs[%d][%d]", i, j)
			if a.Logprob == nil || math.IsNaN(*a.Logprob) || *a.Logprob > 1e-6 {
				return nil, false, fmt.Errorf("%s has no log-probability ≤ 0", what)
			}
			v, err := id(a.ID, what)
			if err != nil {
				return nil, false, err
			}
			t.top[i][j] = labelAlt{id: v, lp: min(*a.Logprob, 0)}
		}
		t.k = max(t.k, len(row))
	}
	return t, false, nil
}

// alignLabel places a record's teacher on its rendered example: the
// answer's tokens as rendered — within the last turn's labelled tokens
// (the end-of-turn tokens follow them) — must be the teacher's tokens, or
// the same text split otherwise (then the teacher's take their place);
// entry i goes to the position of answer token i. Alternatives without a
// student id are left out (their slots are −Inf, no mass), and two that
// map to one id are one (their probabilities added). response is the
// answer's text; tok the student's tokenizer.
func alignLabel(ex Example, t *labelTeacher, response string, tok Tokenizer) (Example, error) {
	n := len(t.ids)
	if n == 0 || t.k == 0 {
		return ex, nil
	}
	for i, id := range t.ids {
		if id < 0 {
			return ex, fmt.Errorf("teacher token %d (%q) is not one token of the student's tokenizer (elicit label gave it id -1), so the record cannot be a sparse teacher; %s", i, t.texts[i], labelHelp)
		}
	}
	// The last run of labelled tokens: the last assistant turn.
	b := len(ex.Labels)
	for b > 0 && ex.Labels[b-1] == IgnoreIndex {
		b--
	}
	a := b
	for a > 0 && ex.Labels[a-1] != IgnoreIndex {
		a--
	}
	start := -1
	for s := a; s+n <= b; s++ {
		if slices.Equal(ex.Tokens[s:s+n], t.ids) {
			start = s
			break
		}
	}
	if start < 0 && strings.Join(t.texts, "") == response && t.idsAreTexts(tok) {
		// The same text, split otherwise: the teacher's tokens replace the
		// rendering's where its own encoding of the answer stands.
		own := tok.EncodeOrdinary(response)
		for s := a; s+len(own) <= b && len(own) > 0; s++ {
			if slices.Equal(ex.Tokens[s:s+len(own)], own) {
				start = s
				ex = Example{Tokens: slices.Concat(ex.Tokens[:s], t.ids, ex.Tokens[s+len(own):]),
					Labels: slices.Concat(ex.Labels[:s], t.ids, ex.Labels[s+len(own):])}
				break
			}
		}
	}
	if start < 0 {
		return ex, mismatch(ex.Tokens[a:b], t, response, tok)
	}
	K := t.k
	tk := &TopK{K: K, IDs: make([]int32, len(ex.Tokens)*K), LogProbs: make([]float32, len(ex.Tokens)*K), Has: make([]bool, len(ex.Tokens))}
	negInf := float32(math.Inf(-1))
	for i, row := range t.top {
		p := start + i
		// Merge by id (log-sum-exp), in the order given.
		var ids []int32
		var lps []float64
		for _, alt := range row {
			if alt.id < 0 {
				continue
			}
			if j := slices.Index(ids, alt.id); j >= 0 {
				hi, lo := max(lps[j], alt.lp), min(lps[j], alt.lp)
				lps[j] = hi + math.Log1p(math.Exp(lo-hi))
				continue
			}
			ids, lps = append(ids, alt.id), append(lps, alt.lp)
		}
		if len(ids) == 0 {
			continue // nothing mapped here: no teacher at this position
		}
		var mass float64
		for _, lp := range lps {
			mass += math.Exp(lp)
		}
		if mass > 1+topKMassTolerance {
			return ex, fmt.Errorf("teacher_top_logprobs[%d]: the probabilities sum to %.6f, more than 1", i, mass)
		}
		// Unused slots: ids not in the row, no mass.
		free := int32(0)
		for k := range K {
			if k < len(ids) {
				tk.IDs[p*K+k], tk.LogProbs[p*K+k] = ids[k], float32(min(lps[k], 0))
				continue
			}
			for slices.Contains(ids, free) {
				free++
			}
			tk.IDs[p*K+k], tk.LogProbs[p*K+k] = free, negInf
			free++
		}
		tk.Has[p] = true
	}
	ex.TopK = tk
	return ex, nil
}

// idIsText reports whether token i's id is its text's, as elicit label
// maps them: the text encodes to that one token, or is that token as the
// vocabulary writes it.
func (t *labelTeacher) idIsText(tok Tokenizer, i int) bool {
	if enc := tok.EncodeOrdinary(t.texts[i]); len(enc) == 1 && enc[0] == t.ids[i] {
		return true
	}
	v, ok := tok.TokenID(t.raw[i])
	return ok && v == t.ids[i]
}

// idsAreTexts reports whether every token's id is its text's.
func (t *labelTeacher) idsAreTexts(tok Tokenizer) bool {
	for i := range t.ids {
		if !t.idIsText(tok, i) {
			return false
		}
	}
	return true
}

// labelHelp says what to do with label records that cannot be a sparse
// teacher.
const labelHelp = "to train on its text alone (objectives.sft), label without --student-tokenizer or drop teacher_tokens and teacher_top_logprobs"

// mismatch says why the teacher's tokens are not in the rendering.
func mismatch(rendered []int32, t *labelTeacher, response string, tok Tokenizer) error {
	if joined := strings.Join(t.texts, ""); joined != response {
		return fmt.Errorf("teacher_tokens spell %q, but the response is %q: the record does not hold together; %s", clip(joined), clip(response), labelHelp)
	}
	for i := range t.ids {
		if !t.idIsText(tok, i) {
			return fmt.Errorf("teacher token %d (%q) has id %d, which is not that text's id in the student's tokenizer (%v): the ids were mapped with another tokenizer; %s",
				i, t.texts[i], t.ids[i], tok.EncodeOrdinary(t.texts[i]), labelHelp)
		}
	}
	i := 0
	for i < len(rendered) && i < len(t.ids) && rendered[i] == t.ids[i] {
		i++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "the answer renders as tokens that are not the teacher's (teacher_tokens, %d tokens): ", len(t.ids))
	switch {
	case i == len(t.ids):
		fmt.Fprintf(&b, "they end after %d tokens of it", len(rendered))
	case i == len(rendered):
		fmt.Fprintf(&b, "the rendering has only %d", len(rendered))
	default:
		fmt.Fprintf(&b, "token %d is id %d in the rendering, id %d (%q) in the teacher's", i, rendered[i], t.ids[i], t.texts[i])
	}
	b.WriteString("; the chat template changes the answer's text (trims it, say), so the teacher's distributions have no place in the rendering; " + labelHelp)
	return fmt.Errorf("%s", b.String())
}

// clip shortens a text for a message.
func clip(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return s
}
