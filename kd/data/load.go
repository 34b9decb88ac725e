package data

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// LoadSFT reads a JSONL file of SFT examples — prompt/response, messages,
// text or pre-tokenized input_ids/labels, recognized per line — and returns
// the training and validation examples (packed rows under opt.Pack) with a
// report. tok may be nil when every line is pre-tokenized.
//
// A bad line stops the load with its *LineError under OnBadLine "stop" and is
// counted and reported under "skip"; configuration errors met on a line
// (chat data without a chat template, overflow "error") stop it either way.
func LoadSFT(path string, tok Tokenizer, opt Options) (train, val []Example, rep Report, err error) {
	if err := opt.normalize(); err != nil {
		return nil, nil, rep, err
	}
	l := &loader{tok: tok, opt: opt, rep: &rep}
	train, err = loadFile(l, path, l.sftLine)
	if err != nil {
		return nil, nil, rep, err
	}
	if opt.BeforeSplit != nil {
		if err := opt.BeforeSplit(train); err != nil {
			return nil, nil, rep, err
		}
	}
	if opt.ValFile != "" {
		if val, err = loadFile(l, opt.ValFile, l.sftLine); err != nil {
			return nil, nil, rep, err
		}
	} else if opt.ValFraction > 0 {
		if train, val, err = split(train, opt.ValFraction, opt.Seed); err != nil {
			return nil, nil, rep, fmt.Errorf("data: %s: %w", path, err)
		}
	}
	if opt.Pack {
		train = Pack(shuffled(train, opt.Seed), opt.MaxLen)
		val = Pack(shuffled(val, opt.Seed), opt.MaxLen)
	}
	rep.Train, rep.Val = len(train), len(val)
	return train, val, rep, nil
}

// LoadPairs reads a JSONL file of preference pairs — prompt/chosen/rejected
// (each a string or messages), chosen/rejected conversations with an
// implicit prompt, or pre-tokenized prompt_input_ids/chosen_input_ids/
// rejected_input_ids — and returns the training and validation pairs with a
// report. Bad lines are handled as in LoadSFT; opt.Pack is refused.
func LoadPairs(path string, tok Tokenizer, opt Options) (train, val []Pair, rep Report, err error) {
	if err := opt.normalize(); err != nil {
		return nil, nil, rep, err
	}
	if opt.Pack {
		return nil, nil, rep, errors.New("data: preference pairs cannot be packed")
	}
	l := &loader{tok: tok, opt: opt, rep: &rep, pairs: true}
	train, err = loadFile(l, path, l.pairLine)
	if err != nil {
		return nil, nil, rep, err
	}
	if opt.ValFile != "" {
		if val, err = loadFile(l, opt.ValFile, l.pairLine); err != nil {
			return nil, nil, rep, err
		}
	} else if opt.ValFraction > 0 {
		if train, val, err = split(train, opt.ValFraction, opt.Seed); err != nil {
			return nil, nil, rep, fmt.Errorf("data: %s: %w", path, err)
		}
	}
	rep.Train, rep.Val = len(train), len(val)
	return train, val, rep, nil
}

// loader holds what one load shares across its files.
type loader struct {
	tok   Tokenizer
	opt   Options
	rep   *Report
	pairs bool

	tpl     *Template
	tplErr  error
	tplDone bool

	// topK is the k of the data's sparse teacher (0: none seen yet).
	topK int

	// kind is the first example's: pre-tokenized or text, at kindAt.
	kindSet, pretok bool
	kindAt          string
}

// Line outcomes other than success: a bad line (a plain error), a line
// dropped for its length, and an error that stops the load.
type (
	dropped struct{ reason string }
	fatal   struct{ err error }
)

func (d *dropped) Error() string { return d.reason }
func (f *fatal) Error() string   { return f.err.Error() }
func (f *fatal) Unwrap() error   { return f.err }

func dropf(format string, a ...any) error { return &dropped{fmt.Sprintf(format, a...)} }
func fatalf(format string, a ...any) error {
	return &fatal{fmt.Errorf(format, a...)}
}

// loadFile reads one file — JSONL (gzipped when it ends in .gz), or Parquet
// when it ends in .parquet — calling parse on each non-blank line or row.
func loadFile[T any](l *loader, path string, parse func(line []byte, at string) (T, error)) ([]T, error) {
	src, err := openRecords(path, l.opt.MaxLineBytes, l.pairs)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	l.rep.Files = append(l.rep.Files, path)
	var out []T
	lines, bad, drop, empty, blank := 0, 0, 0, 0, 0
	var first *LineError
	for {
		line, tooLong, pos, err := src.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
		if !tooLong && len(strings.TrimSpace(string(line))) == 0 {
			blank++
			l.rep.Blank++
			continue
		}
		lines++
		l.rep.Lines++
		var v T
		if tooLong {
			err = fmt.Errorf("line is longer than %d bytes (the line limit)", l.opt.MaxLineBytes)
		} else {
			v, err = parse(line, pos.String())
		}
		if err == nil {
			out = append(out, v)
			l.rep.Examples++
			continue
		}
		le := pos
		le.Reason = err.Error()
		if first == nil {
			first = &le
		}
		var d *dropped
		var ft *fatal
		var ea *emptyAnswer
		switch {
		case errors.As(err, &ft):
			return nil, &le
		case errors.As(err, &ea):
			empty++
			l.rep.Empty++
		case errors.As(err, &d):
			drop++
			l.rep.Dropped++
			l.rep.problem(le)
		case l.opt.OnBadLine == BadLineStop:
			return nil, &le
		default:
			bad++
			l.rep.Skipped++
			l.rep.problem(le)
		}
	}
	if len(out) == 0 {
		what := "lines"
		if isParquet(path) {
			what = "rows"
		}
		msg := fmt.Sprintf("data: %s has no usable example (%d %s: %d bad, %d dropped for length, %d with an empty answer; %d blank)", path, lines, what, bad, drop, empty, blank)
		if first != nil {
			msg += "; first: " + first.Error()
		}
		return nil, errors.New(msg)
	}
	return out, nil
}

// template returns the template, resolving it at the first text line.
func (l *loader) template() (*Template, error) {
	if !l.tplDone {
		l.tplDone = true
		l.tpl, l.tplErr = NewTemplate(l.tok, l.opt)
		if l.tpl != nil {
			l.rep.Template, l.rep.SystemPrompt, l.rep.EOS = l.tpl.Name(), l.tpl.SystemPrompt(), l.tpl.EOS()
			l.rep.TemplateNote = l.tpl.Note()
		}
	}
	if l.tplErr != nil {
		return nil, &fatal{errors.New(strings.TrimPrefix(l.tplErr.Error(), "data: "))}
	}
	return l.tpl, nil
}

// checkKind holds a file set to one kind: pre-tokenized or text.
func (l *loader) checkKind(pretok bool, at string) error {
	if !l.kindSet {
		l.kindSet, l.pretok, l.kindAt = true, pretok, at
		return nil
	}
	if pretok == l.pretok {
		return nil
	}
	if pretok {
		return fmt.Errorf("a pre-tokenized line among text examples (the first example, %s, is text): one file set holds one kind", l.kindAt)
	}
	return fmt.Errorf("a text line among pre-tokenized examples (the first example, %s, is pre-tokenized): one file set holds one kind", l.kindAt)
}

// configErr turns the template's configuration errors into fatal ones.
func configErr(err error) error {
	if errors.Is(err, errNeedsTemplate) || errors.Is(err, errNoEOS) {
		return &fatal{err}
	}
	return err
}

func (l *loader) sftLine(line []byte, at string) (Example, error) {
	rec, err := parseLine(line, false, l.opt.Vocab)
	if err != nil {
		return Example{}, err
	}
	if err := l.checkKind(rec.shape.pretokenized(), at); err != nil {
		return Example{}, err
	}
	var ex Example
	if rec.shape == shapeTokens {
		ex.Tokens = rec.ids
		ex.Labels = rec.labels
		ex.TopK = rec.topK
		if err := l.checkTopK(rec.topK); err != nil {
			return Example{}, err
		}
		if ex.Labels == nil {
			ex.Labels = append([]int32(nil), rec.ids...)
		}
	} else {
		t, err := l.template()
		if err != nil {
			return Example{}, err
		}
		var msgs []Message
		switch rec.shape {
		case shapeChat:
			msgs = rec.messages
		case shapeText:
			ex, err = t.text(rec.text, rec.open)
		case shapePromptResponse:
			if !rec.prompt.isMsgs && !rec.response.isMsgs && rec.tools == nil {
				ex, err = t.promptResponse(rec.prompt.text, rec.response.text, rec.open)
			} else {
				msgs = append(rec.prompt.messages("user"), rec.response.messages("assistant")...)
			}
		}
		// Only a final assistant turn can have been cut.
		open := rec.open && (msgs == nil || msgs[len(msgs)-1].Role == "assistant")
		if msgs != nil {
			ex, err = t.conversation(msgs, rec.tools, open)
		}
		if err != nil {
			return Example{}, configErr(err)
		}
		if rec.labelNoIDs {
			l.rep.TeacherNoIDs++
		}
		if rec.label != nil {
			if ex, err = alignLabel(ex, rec.label, rec.answer(), l.tok); err != nil {
				return Example{}, err
			}
			if err := l.checkTopK(ex.TopK); err != nil {
				return Example{}, err
			}
		}
		if open {
			ex, err := l.fit(ex)
			if err == nil {
				l.rep.Open++
			}
			return ex, err
		}
	}
	return l.fit(ex)
}

// checkTopK holds a load to one k of sparse teacher.
func (l *loader) checkTopK(tk *TopK) error {
	if tk == nil {
		return nil
	}
	if l.topK != 0 && tk.K != l.topK {
		return fmt.Errorf("teacher top-k has k = %d, earlier lines %d", tk.K, l.topK)
	}
	l.topK = tk.K
	return nil
}

// answer is the text of a record's last answer: its response, or its last
// message's content.
func (r record) answer() string {
	switch {
	case r.shape == shapeChat:
		return r.messages[len(r.messages)-1].Content
	case r.response.isMsgs:
		return r.response.msgs[len(r.response.msgs)-1].Content
	}
	return r.response.text
}

// messages is the field as a conversation: its messages, or its string as
// one message of the given role.
func (f textField) messages(role string) []Message {
	if f.isMsgs {
		return f.msgs
	}
	return []Message{{Role: role, Content: f.text}}
}

// fit holds an example to MaxLen.
func (l *loader) fit(ex Example) (Example, error) {
	n, limit := len(ex.Tokens), l.opt.MaxLen
	if n > limit {
		switch l.opt.Overflow {
		case OverflowError:
			return Example{}, fatalf("sequence of %d tokens is longer than the maximum length %d (overflow is error; truncate or drop to go on)", n, limit)
		case OverflowDrop:
			return Example{}, dropf("sequence of %d tokens is longer than the maximum length %d: dropped", n, limit)
		}
		ex = Example{Tokens: ex.Tokens[:limit:limit], Labels: ex.Labels[:limit:limit], TopK: ex.TopK.sliceTo(limit)}
		if ex.LossTokens() == 0 {
			return Example{}, dropf("sequence of %d tokens has no response token within the maximum length %d: dropped", n, limit)
		}
		l.rep.Truncated++
	}
	lt := ex.LossTokens()
	if lt == 0 {
		return Example{}, errors.New("no token to learn (a single token, or no label after the first position)")
	}
	l.rep.Tokens += int64(len(ex.Tokens))
	l.rep.LossTokens += int64(lt)
	return ex, nil
}

func (l *loader) pairLine(line []byte, at string) (Pair, error) {
	rec, err := parseLine(line, true, l.opt.Vocab)
	if err != nil {
		return Pair{}, err
	}
	if err := l.checkKind(rec.shape.pretokenized(), at); err != nil {
		return Pair{}, err
	}
	var p Pair
	if rec.shape == shapePairTokens {
		p = Pair{Prompt: rec.promptIDs, Chosen: rec.chosenIDs, Rejected: rec.rejectedIDs}
	} else {
		t, err := l.template()
		if err != nil {
			return Pair{}, err
		}
		if !rec.prompt.isMsgs && !rec.chosen.isMsgs && !rec.rejected.isMsgs {
			p, err = t.PairText(rec.prompt.text, rec.chosen.text, rec.rejected.text)
		} else {
			p, err = t.Pair(rec.prompt.messages("user"), rec.chosen.messages("assistant"), rec.rejected.messages("assistant"))
		}
		if err != nil {
			return Pair{}, configErr(err)
		}
	}
	return l.fitPair(p)
}

// fitPair holds both sequences of a pair to MaxLen.
func (l *loader) fitPair(p Pair) (Pair, error) {
	limit := l.opt.MaxLen
	np, nr := len(p.Prompt), max(len(p.Chosen), len(p.Rejected))
	if np+nr > limit {
		switch l.opt.Overflow {
		case OverflowError:
			return Pair{}, fatalf("pair of %d tokens (prompt %d + longest response %d) is longer than the maximum length %d (overflow is error; truncate or drop to go on)", np+nr, np, nr, limit)
		case OverflowDrop:
			return Pair{}, dropf("pair of %d tokens (prompt %d + longest response %d) is longer than the maximum length %d: dropped", np+nr, np, nr, limit)
		}
		if mp := l.opt.MaxPromptLen; mp > 0 && np > mp {
			p.Prompt = p.Prompt[np-mp:]
		}
		room := limit - len(p.Prompt)
		if room < 1 {
			return Pair{}, dropf("prompt of %d tokens leaves no room for a response within the maximum length %d (set a max prompt length): dropped", len(p.Prompt), limit)
		}
		if len(p.Chosen) > room {
			p.Chosen = p.Chosen[:room:room]
		}
		if len(p.Rejected) > room {
			p.Rejected = p.Rejected[:room:room]
		}
		l.rep.Truncated++
	}
	l.rep.Tokens += int64(len(p.Prompt) + len(p.Chosen) + len(p.Rejected))
	l.rep.LossTokens += int64(len(p.Chosen) + len(p.Rejected))
	return p, nil
}

// split holds out a seeded random fraction of xs (at least one) for
// validation; both parts keep the file order.
func split[T any](xs []T, frac float64, seed uint64) (train, val []T, err error) {
	n := len(xs)
	nv := int(math.Round(frac * float64(n)))
	if nv < 1 {
		nv = 1
	}
	if nv >= n {
		return nil, nil, fmt.Errorf("%d examples are too few for a validation fraction of %v: no training example would be left", n, frac)
	}
	isVal := make([]bool, n)
	for _, i := range permutation(n, seed, streamSplit)[:nv] {
		isVal[i] = true
	}
	train, val = make([]T, 0, n-nv), make([]T, 0, nv)
	for i, x := range xs {
		if isVal[i] {
			val = append(val, x)
		} else {
			train = append(train, x)
		}
	}
	return train, val, nil
}

// shuffled returns xs in a seeded random order (the packing order).
func shuffled(xs []Example, seed uint64) []Example {
	out := make([]Example, len(xs))
	for i, j := range permutation(len(xs), seed, streamPack) {
		out[i] = xs[j]
	}
	return out
}

// Pack concatenates the examples in the order given, labels carried along,
// and cuts the stream into rows of exactly maxLen tokens; only the last row
// may be shorter. Attention is not masked between the documents of a row
// (TRL's ConstantLengthDataset): each example should end with its EOS or
// end-of-turn token.
func Pack(rows []Example, maxLen int) []Example {
	if maxLen <= 0 {
		panic("data: Pack with maxLen ≤ 0")
	}
	total := 0
	for _, r := range rows {
		total += len(r.Tokens)
	}
	toks := make([]int32, 0, total)
	labs := make([]int32, 0, total)
	K := 0
	for _, r := range rows {
		toks = append(toks, r.Tokens...)
		labs = append(labs, r.Labels...)
		if r.TopK != nil {
			K = r.TopK.K // one k per load (the loader checks)
		}
	}
	// A sparse teacher travels with its tokens; rows without one leave
	// their positions empty.
	var tk *TopK
	if K > 0 {
		tk = &TopK{K: K, IDs: make([]int32, 0, total*K), LogProbs: make([]float32, 0, total*K), Has: make([]bool, 0, total)}
		withTails := true
		for _, r := range rows {
			if r.TopK != nil && r.TopK.Tail == nil {
				withTails = false
			}
		}
		if withTails {
			tk.Tail = make([]float32, 0, total)
		}
		for _, r := range rows {
			if r.TopK != nil {
				tk.IDs, tk.LogProbs, tk.Has = append(tk.IDs, r.TopK.IDs...), append(tk.LogProbs, r.TopK.LogProbs...), append(tk.Has, r.TopK.Has...)
				if withTails {
					tk.Tail = append(tk.Tail, r.TopK.Tail...)
				}
				continue
			}
			tk.IDs, tk.LogProbs = append(tk.IDs, make([]int32, len(r.Tokens)*K)...), append(tk.LogProbs, make([]float32, len(r.Tokens)*K)...)
			tk.Has = append(tk.Has, make([]bool, len(r.Tokens))...)
			if withTails {
				tk.Tail = append(tk.Tail, make([]float32, len(r.Tokens))...)
			}
		}
	}
	out := make([]Example, 0, (total+maxLen-1)/maxLen)
	for i := 0; i < total; i += maxLen {
		j := min(i+maxLen, total)
		ex := Example{Tokens: toks[i:j:j], Labels: labs[i:j:j]}
		if tk != nil {
			ex.TopK = &TopK{K: K, IDs: tk.IDs[i*K : j*K : j*K], LogProbs: tk.LogProbs[i*K : j*K : j*K], Has: tk.Has[i:j:j]}
			if tk.Tail != nil {
				ex.TopK.Tail = tk.Tail[i:j:j]
			}
		}
		out = append(out, ex)
	}
	return out
}
