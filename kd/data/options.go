package data

import (
	"fmt"
	"strings"
	"time"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// IgnoreIndex marks a label (and a target) without loss: runtime.IgnoreIndex,
// PyTorch's −100.
const IgnoreIndex = kdrt.IgnoreIndex

// Example is one training sequence in the Hugging Face convention: Labels is
// aligned with Tokens (not shifted), Labels[i] = Tokens[i] where the loss is
// taken and IgnoreIndex elsewhere. The Loader shifts: the target of position
// i is Labels[i+1].
type Example struct {
	Tokens []int32
	Labels []int32
	// TopK is the teacher's sparse distribution per token, when the data
	// carries one (pre-tokenized lines with teacher_topk_ids/logprobs, or
	// elicit label records with student ids).
	TopK *TopK
}

// LossTokens counts the labels that the shifted loss uses (positions 1…n−1
// that are not IgnoreIndex).
func (e Example) LossTokens() int {
	n := 0
	for i := 1; i < len(e.Labels); i++ {
		if e.Labels[i] != IgnoreIndex {
			n++
		}
	}
	return n
}

// Pair is one preference pair, tokenized: the prompt (with the chat template's
// generation prompt, "<|im_start|>assistant\n", under a chat template) and the
// two responses, each ending with its end-of-turn (<|im_end|> and "\n") or EOS
// token. The DPO loss is taken on every response token.
type Pair struct {
	Prompt, Chosen, Rejected []int32
}

// ChosenExample is the chosen sequence, prompt + chosen, labelled on the
// chosen tokens.
func (p Pair) ChosenExample() Example { return pairSide(p.Prompt, p.Chosen) }

// RejectedExample is the rejected sequence, prompt + rejected, labelled on
// the rejected tokens.
func (p Pair) RejectedExample() Example { return pairSide(p.Prompt, p.Rejected) }

func pairSide(prompt, resp []int32) Example {
	n := len(prompt) + len(resp)
	e := Example{Tokens: make([]int32, 0, n), Labels: make([]int32, 0, n)}
	e.Tokens = append(append(e.Tokens, prompt...), resp...)
	for range prompt {
		e.Labels = append(e.Labels, IgnoreIndex)
	}
	e.Labels = append(e.Labels, resp...)
	return e
}

// Overflow policies: what happens to a sequence longer than Options.MaxLen.
const (
	OverflowTruncate = "truncate" // keep the first MaxLen tokens (the default)
	OverflowDrop     = "drop"     // leave the example out, counted in Report.Dropped
	OverflowError    = "error"    // stop the run with a *LineError naming both lengths
)

// Bad-line policies.
const (
	BadLineStop = "stop" // stop at the first bad line with its *LineError (the default)
	BadLineSkip = "skip" // count it, report it, go on
)

// Template names. Options.Template may also be the path of a .jinja file: a
// chat template to render in place of the tokenizer's.
const (
	TemplateAuto   = "auto"
	TemplateJinja  = "jinja" // the tokenizer's chat template, rendered by the Jinja engine
	TemplateChatML = "chatml"
	TemplateQwen3  = "qwen3"
	TemplateNone   = "none"
)

// DefaultMaxLineBytes is the longest line read when Options.MaxLineBytes is 0.
const DefaultMaxLineBytes = 64 << 20

// MaxProblems is how many bad or dropped lines a Report keeps.
const MaxProblems = 20

// Options say how a data file becomes examples. The zero value of every field
// but MaxLen is a usable default.
type Options struct {
	// MaxLen is the longest sequence, in tokens (required). Set it to the
	// smaller of the run's maximum length and the model's
	// max_position_embeddings.
	MaxLen int
	// Overflow is what happens to a longer sequence: "truncate" (default),
	// "drop" or "error".
	Overflow string
	// MaxPromptLen, when > 0, cuts a preference pair's prompt to its last
	// MaxPromptLen tokens when prompt + response exceeds MaxLen (TRL's
	// max_prompt_length with keep_end). Pairs only.
	MaxPromptLen int
	// Pack concatenates the SFT examples into rows of exactly MaxLen tokens
	// (the last row may be shorter). Not for pairs.
	Pack bool

	// Template is "auto" (default), "jinja", the path of a .jinja file,
	// "chatml", "qwen3" or "none".
	Template string
	// TemplateDate is the day a chat template's strftime_now gives (Llama
	// 3's "Today Date"); zero means DefaultTemplateDate.
	TemplateDate time.Time
	// SystemPrompt is the system message inserted when a conversation has
	// none, in place of the template's default (chat templates only).
	SystemPrompt string
	// NoDefaultSystem inserts no system message where a conversation has
	// none, even when the template has a default one.
	NoDefaultSystem bool
	// EOS is the end-of-sequence token appended where the rendering is plain
	// text: after the response under template "none" and after "text"
	// lines. Default: the tokenizer's (EOSTokenizer), else the first known of
	// <|endoftext|>, </s>, <|end_of_text|>, <eos>. Chat templates end each
	// assistant turn with their own <|im_end|>.
	EOS string
	// BOS, when set, is a token put before every text example and prompt
	// (Llama-style tokenizers that expect one). Not added to pre-tokenized
	// lines.
	BOS string

	// Seed drives the validation split and the packing order.
	Seed uint64
	// ValFraction in [0, 1) is the share of examples held out for
	// validation (at least one when > 0).
	ValFraction float64
	// ValFile is a separate validation file, read with the same options;
	// exclusive with ValFraction.
	ValFile string

	// OnBadLine is "stop" (default) or "skip".
	OnBadLine string
	// MaxLineBytes is the longest line read; longer lines are bad lines.
	// Default DefaultMaxLineBytes.
	MaxLineBytes int
	// Vocab, when > 0, is the model's vocabulary size: pre-tokenized ids and
	// labels must be below it.
	Vocab int

	// BeforeSplit, when set, sees every example of the training file, in file
	// order, before the validation split and packing, and may change them —
	// the hook that attaches a teacher cache (built over the same examples in
	// the same order) to its examples.
	BeforeSplit func(examples []Example) error
}

func (o *Options) normalize() error {
	if o.MaxLen <= 0 {
		return fmt.Errorf("data: max length %d: must be > 0", o.MaxLen)
	}
	if o.MaxPromptLen < 0 {
		return fmt.Errorf("data: max prompt length %d: must be ≥ 0", o.MaxPromptLen)
	}
	switch o.Overflow {
	case "":
		o.Overflow = OverflowTruncate
	case OverflowTruncate, OverflowDrop, OverflowError:
	default:
		return fmt.Errorf("data: overflow %q: want truncate, drop or error", o.Overflow)
	}
	switch o.OnBadLine {
	case "":
		o.OnBadLine = BadLineStop
	case BadLineStop, BadLineSkip:
	default:
		return fmt.Errorf("data: on bad line %q: want stop or skip", o.OnBadLine)
	}
	if o.Template == "" {
		o.Template = TemplateAuto
	}
	if err := CheckTemplate(o.Template); err != nil {
		return err
	}
	if !(o.ValFraction >= 0 && o.ValFraction < 1) {
		return fmt.Errorf("data: validation fraction %v: want 0 ≤ f < 1", o.ValFraction)
	}
	if o.ValFraction > 0 && o.ValFile != "" {
		return fmt.Errorf("data: both a validation fraction (%v) and a validation file (%s): choose one", o.ValFraction, o.ValFile)
	}
	if o.MaxLineBytes == 0 {
		o.MaxLineBytes = DefaultMaxLineBytes
	}
	if o.MaxLineBytes < 0 {
		return fmt.Errorf("data: max line bytes %d: must be > 0", o.MaxLineBytes)
	}
	if o.Vocab < 0 {
		return fmt.Errorf("data: vocabulary size %d: must be ≥ 0", o.Vocab)
	}
	return nil
}

// LineError is a problem with one line of a data file (one row of a
// Parquet file).
type LineError struct {
	File   string
	Line   int // 1-based; for a Parquet row, its index in the file + 1
	Reason string
	// Parquet marks a row of a Parquet file, found at RowGroup and Row
	// (both 0-based, Row within its row group, as pyarrow counts them).
	Parquet       bool
	RowGroup, Row int
}

func (e *LineError) Error() string {
	if e.Parquet {
		return fmt.Sprintf("%s: row group %d, row %d (row %d of the file): %s", e.File, e.RowGroup, e.Row, e.Line-1, e.Reason)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
}

// Report says what loading did. Every line read is accounted for: Lines =
// Examples + Skipped + Dropped + Empty (+ Blank lines, counted apart).
type Report struct {
	Files []string
	// Lines counts the non-blank lines read; Blank the blank ones.
	Lines, Blank int
	// Examples counts the lines that became examples or pairs (after
	// truncation, before the split and packing).
	Examples int
	// Train and Val count the rows returned (packed rows under Pack).
	Train, Val int
	// Skipped counts bad lines skipped under OnBadLine "skip".
	Skipped int
	// Truncated counts examples cut to MaxLen; Dropped the lines left out
	// for their length (overflow "drop", or nothing left to learn after
	// truncation).
	Truncated, Dropped int
	// Empty counts the SFT lines skipped because an assistant answer is
	// empty (a teacher that said nothing, as `elicit label` records it).
	// They are skipped under either OnBadLine and not listed in Problems.
	Empty int
	// Open counts the examples whose response stopped at the length limit
	// (the line's finish_reason is "length"): their last answer has no
	// end-of-turn or EOS target, so the model does not learn to stop there.
	Open int
	// TeacherNoIDs counts the lines with the teacher's top logprobs but no
	// student ids (elicit label without --student-tokenizer): trained on
	// their text, without a sparse teacher.
	TeacherNoIDs int
	// Tokens and LossTokens count the tokens of the examples and those with
	// a label (for pairs: the response tokens of both sides).
	Tokens, LossTokens int64
	// Template is the template used ("jinja", "chatml", "qwen3", "none");
	// empty when every line was pre-tokenized.
	Template string
	// TemplateNote says when the template is not the tokenizer's own (see
	// Template.Note); "" otherwise.
	TemplateNote string
	// SystemPrompt is the system message inserted into conversations
	// without one ("" for none).
	SystemPrompt string
	// EOS is the token appended to plain-text examples ("" when none was
	// needed or known).
	EOS string
	// Problems holds the first MaxProblems bad or dropped lines.
	Problems []LineError
}

func (r *Report) problem(le LineError) {
	if len(r.Problems) < MaxProblems {
		r.Problems = append(r.Problems, le)
	}
}

// String is a summary for logs.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d lines, %d examples (%d train, %d validation)", strings.Join(r.Files, ", "), r.Lines, r.Examples, r.Train, r.Val)
	if r.Template != "" {
		fmt.Fprintf(&b, ", template %s", r.Template)
		if r.TemplateNote != "" {
			fmt.Fprintf(&b, " (%s)", r.TemplateNote)
		}
	}
	fmt.Fprintf(&b, ", %d tokens (%d with loss)", r.Tokens, r.LossTokens)
	if r.Truncated > 0 {
		fmt.Fprintf(&b, ", %d truncated", r.Truncated)
	}
	if r.Dropped > 0 {
		fmt.Fprintf(&b, ", %d dropped", r.Dropped)
	}
	if r.Empty > 0 {
		fmt.Fprintf(&b, ", %d with an empty answer skipped", r.Empty)
	}
	if r.Open > 0 {
		fmt.Fprintf(&b, ", %d cut at the length limit (finish_reason \"length\": no end-of-turn target)", r.Open)
	}
	if r.TeacherNoIDs > 0 {
		fmt.Fprintf(&b, ", %d with teacher logprobs but no student token ids (no sparse teacher: elicit label --student-tokenizer maps them)", r.TeacherNoIDs)
	}
	if r.Skipped > 0 {
		fmt.Fprintf(&b, ", %d bad lines skipped", r.Skipped)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "\n  %s", p.Error())
	}
	if n := r.Skipped + r.Dropped - len(r.Problems); n > 0 {
		fmt.Fprintf(&b, "\n  … and %d more", n)
	}
	return b.String()
}

// CheckTemplate says whether name is a template option data accepts: auto,
// jinja, a .jinja file, chatml, qwen3 or none. Commands call it to refuse a
// wrong --template before they load anything.
func CheckTemplate(name string) error {
	switch name {
	case TemplateAuto, TemplateJinja, TemplateChatML, TemplateQwen3, TemplateNone:
		return nil
	}
	if strings.HasSuffix(name, ".jinja") {
		return nil
	}
	return fmt.Errorf("data: template %q: want auto, jinja, a .jinja file, chatml, qwen3 or none", name)
}
