package tokenizer

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"

	"github.com/kdnative/kdnative/model/gguf"
)

// maxID bounds token ids, so that a corrupt file cannot make us allocate
// gigabytes for the id tables.
const maxID = 1 << 24

// Load reads a Hugging Face tokenizer.json of one of two kinds of BPE
// (model.type "BPE", without dropout or subword prefix and suffix):
//
//   - byte-level BPE: a pre-tokenizer made of the known Split patterns
//     (PatternGPT2, PatternQwen2, PatternLlama3), Digits and a final
//     ByteLevel step, a normalizer made of NFC/NFD/NFKC/NFKD (or none), and
//     a ByteLevel decoder;
//   - SentencePiece-style BPE (byte_fallback true: Llama 2, Mistral, Phi-3):
//     a normalizer made of Prepend, Replace (of a string) and the Unicode
//     forms, a Metaspace pre-tokenizer (or none; Digits allowed), and a
//     decoder Sequence of Replace, ByteFallback, Fuse and Strip.
//
// Anything else is refused with an error that names the file and the feature.
// The post-processor is not applied (Encode adds no BOS/EOS), but a
// TemplateProcessing that wraps the text in special tokens sets Special's BOS,
// EOS, AddBOS and AddEOS.
//
// The file may be zstd-compressed (it is recognized by its magic number, not
// its name).
func Load(path string) (*Tokenizer, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	b, err := parseTokenizerJSON(path, data)
	if err != nil {
		return nil, err
	}
	return b.build()
}

// LoadDir loads a model folder's tokenizer: tokenizer.json (or, for old GPT-2
// style folders without it, vocab.json and merges.txt), then
// tokenizer_config.json when present (bos_token, eos_token, pad_token,
// add_bos_token, add_eos_token, chat_template) and chat_template.jinja when
// present (it takes precedence over the config's chat_template, as in
// transformers). A path ending in .gguf is read as a GGUF file (FromGGUF).
func LoadDir(dir string) (*Tokenizer, error) {
	if gguf.IsGGUFPath(dir) {
		return FromGGUF(dir)
	}
	var b *builder
	tj := filepath.Join(dir, "tokenizer.json")
	data, err := readFile(tj)
	switch {
	case err == nil:
		if b, err = parseTokenizerJSON(tj, data); err != nil {
			return nil, err
		}
	case errors.Is(err, fs.ErrNotExist):
		vj, mt := filepath.Join(dir, "vocab.json"), filepath.Join(dir, "merges.txt")
		if _, err2 := os.Stat(vj); err2 != nil {
			return nil, fmt.Errorf("tokenizer: %s: no tokenizer.json, nor vocab.json and merges.txt", dir)
		}
		if b, err = parseGPT2Files(vj, mt); err != nil {
			return nil, err
		}
	default:
		return nil, err
	}
	cfg := filepath.Join(dir, "tokenizer_config.json")
	if data, err := readFile(cfg); err == nil {
		if err := b.applyConfig(cfg, data); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if data, err := readFile(filepath.Join(dir, "chat_template.jinja")); err == nil {
		b.template = string(data)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return b.build()
}

// FromGPT2Files builds GPT-2's tokenizer from its original pair of files:
// vocab.json (encoder.json: token → id) and merges.txt (vocab.bpe: one merge
// "a b" per line after a "#version" line). The pre-tokenizer is GPT-2's
// ByteLevel with PatternGPT2, "<|endoftext|>" (when in the vocabulary) is a
// special token and is BOS and EOS, as in transformers' GPT2Tokenizer. Either
// file may be zstd-compressed.
func FromGPT2Files(vocabJSON, mergesTXT string) (*Tokenizer, error) {
	b, err := parseGPT2Files(vocabJSON, mergesTXT)
	if err != nil {
		return nil, err
	}
	return b.build()
}

var zstdMagic = []byte{0x28, 0xB5, 0x2F, 0xFD}

// readFile reads path, decompressing it when it is a zstd frame.
func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if !bytes.HasPrefix(data, zstdMagic) {
		return data, nil
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	defer dec.Close()
	out, err := dec.DecodeAll(data, nil)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: zstd: %w", path, err)
	}
	return out, nil
}

// builder collects what a file says before the tables are built.
type builder struct {
	source       string // the file of the vocabulary (tokenizer.json or vocab.json), named in errors
	vocabName    string // what the vocabulary is called in that file
	mergesSource string // the file of the merges
	mergeLines   []int  // line of each merge in mergesSource (merges.txt); nil for tokenizer.json
	vocab        map[string]int32
	merges       [][2]string
	ignoreMerges bool
	normalizer   []normStep
	normSpecs    []string
	spm          bool       // byte_fallback: SentencePiece-style BPE
	unkTok       *string    // model.unk_token (spm: the token of a character without byte tokens)
	fuseUnk      bool       // model.fuse_unk (spm: one unk for a run of such characters)
	dec          spmDecoder // spm decoder
	decFused     bool       // a Fuse decoder came before (Strip must follow it)
	mergeRank    []int32    // rank of each merge where ranks repeat (GGUF scores); nil: its index
	stages       []stage
	added        []*addedToken
	special      Special
	bosTok       *string // from the post-processor or config; nil: none
	eosTok       *string
	padTok       *string
	specialFrom  [3]string // the file that named bosTok, eosTok, padTok
	template     string
}

func (b *builder) errorf(format string, args ...any) error {
	return fmt.Errorf("tokenizer: %s: %s", b.source, fmt.Sprintf(format, args...))
}

// vocabTitle is what errors call the vocabulary.
func (b *builder) vocabTitle() string {
	return cmp.Or(b.vocabName, "the vocabulary")
}

// mergeErrorf is errorf for the merge of the given rank: it names the file
// of the merges, and its line for merges.txt.
func (b *builder) mergeErrorf(rank int, format string, args ...any) error {
	where := cmp.Or(b.mergesSource, b.source)
	if rank < len(b.mergeLines) {
		where = fmt.Sprintf("%s:%d", where, b.mergeLines[rank])
	}
	return fmt.Errorf("tokenizer: %s: %s", where, fmt.Sprintf(format, args...))
}

type tokenizerJSON struct {
	AddedTokens   []addedTokenJSON `json:"added_tokens"`
	Normalizer    json.RawMessage  `json:"normalizer"`
	PreTokenizer  json.RawMessage  `json:"pre_tokenizer"`
	PostProcessor json.RawMessage  `json:"post_processor"`
	Decoder       json.RawMessage  `json:"decoder"`
	Model         json.RawMessage  `json:"model"`
}

type addedTokenJSON struct {
	ID         *int32 `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized *bool  `json:"normalized"`
	Special    bool   `json:"special"`
}

type modelJSON struct {
	Type                    string           `json:"type"`
	Dropout                 *float64         `json:"dropout"`
	UnkToken                *string          `json:"unk_token"`
	ContinuingSubwordPrefix *string          `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string          `json:"end_of_word_suffix"`
	ByteFallback            bool             `json:"byte_fallback"`
	FuseUnk                 bool             `json:"fuse_unk"`
	IgnoreMerges            bool             `json:"ignore_merges"`
	Vocab                   json.RawMessage  `json:"vocab"`
	Merges                  *json.RawMessage `json:"merges"`
}

// component is the common head of normalizers, pre-tokenizers, decoders and
// post-processors.
type component struct {
	Type string `json:"type"`
	// Sequence members.
	Normalizers    []json.RawMessage `json:"normalizers"`
	Pretokenizers  []json.RawMessage `json:"pretokenizers"`
	Decoders       []json.RawMessage `json:"decoders"`
	Processors     []json.RawMessage `json:"processors"`
	AddPrefixSpace bool              `json:"add_prefix_space"`
	UseRegex       *bool             `json:"use_regex"`
	// Split.
	Pattern  map[string]string `json:"pattern"`
	Behavior string            `json:"behavior"`
	Invert   bool              `json:"invert"`
	// Digits.
	IndividualDigits bool `json:"individual_digits"`
	// Prepend, Replace, Strip, Metaspace.
	Prepend       string  `json:"prepend"`
	Content       *string `json:"content"`
	Start         int     `json:"start"`
	Stop          int     `json:"stop"`
	Replacement   *string `json:"replacement"`
	StrRep        *string `json:"str_rep"` // Metaspace's replacement in old files
	PrependScheme *string `json:"prepend_scheme"`
	Split         *bool   `json:"split"`
	// TemplateProcessing.
	Single []map[string]struct {
		ID string `json:"id"`
	} `json:"single"`
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

func parseTokenizerJSON(path string, data []byte) (*builder, error) {
	b := &builder{source: path, vocabName: "model.vocab", mergesSource: path}
	var f tokenizerJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, b.errorf("not a tokenizer.json: %v", err)
	}
	if isNull(f.Model) {
		return nil, b.errorf("no model")
	}
	var m modelJSON
	if err := json.Unmarshal(f.Model, &m); err != nil {
		return nil, b.errorf("model: %v", err)
	}
	if m.Type == "" && m.Merges != nil {
		m.Type = "BPE" // files from before "type" was written
	}
	if m.Type != "BPE" {
		return nil, b.errorf("model type %q is not supported: only BPE, byte-level (GPT-2, Qwen2/Qwen3, Llama 3, SmolLM) or SentencePiece-style with byte_fallback (Llama 2, Mistral, Phi-3)", m.Type)
	}
	b.spm = m.ByteFallback
	if b.spm && m.UnkToken != nil {
		b.unkTok, b.fuseUnk = m.UnkToken, m.FuseUnk
	}
	switch {
	case m.Dropout != nil && *m.Dropout != 0:
		return nil, b.errorf("BPE dropout %v is not supported", *m.Dropout)
	case m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "":
		return nil, b.errorf("BPE continuing_subword_prefix %q is not supported", *m.ContinuingSubwordPrefix)
	case m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "":
		return nil, b.errorf("BPE end_of_word_suffix %q is not supported", *m.EndOfWordSuffix)
	}
	if isNull(m.Vocab) {
		return nil, b.errorf("model.vocab is missing")
	}
	if err := json.Unmarshal(m.Vocab, &b.vocab); err != nil {
		return nil, b.errorf("model.vocab: %v", err)
	}
	if m.Merges == nil || isNull(*m.Merges) {
		return nil, b.errorf("model.merges is missing")
	}
	var err error
	if b.merges, err = parseMergesJSON(*m.Merges); err != nil {
		return nil, b.errorf("model.merges: %v", err)
	}
	b.ignoreMerges = m.IgnoreMerges

	for i, a := range f.AddedTokens {
		if a.ID == nil {
			return nil, b.errorf("added_tokens[%d] %q has no id", i, a.Content)
		}
		normalized := !a.Special // the default of HF's AddedToken
		if a.Normalized != nil {
			normalized = *a.Normalized
		}
		b.added = append(b.added, &addedToken{
			ID: *a.ID, Content: a.Content, Special: a.Special,
			LStrip: a.LStrip, RStrip: a.RStrip, SingleWord: a.SingleWord, Normalized: normalized,
		})
	}
	if err := b.parseNormalizer(f.Normalizer); err != nil {
		return nil, err
	}
	if err := b.parsePreTokenizer(f.PreTokenizer); err != nil {
		return nil, err
	}
	if err := b.parseDecoder(f.Decoder); err != nil {
		return nil, err
	}
	if err := b.parsePostProcessor(f.PostProcessor); err != nil {
		return nil, err
	}
	return b, nil
}

// parseMergesJSON reads merges in either form HF writes: ["a b", …] or
// [["a","b"], …].
func parseMergesJSON(raw json.RawMessage) ([][2]string, error) {
	var pairs [][2]string
	if err := json.Unmarshal(raw, &pairs); err == nil {
		return pairs, nil
	}
	var lines []string
	if err := json.Unmarshal(raw, &lines); err != nil {
		return nil, errors.New(`want a list of "a b" strings or of [a, b] pairs`)
	}
	pairs = make([][2]string, len(lines))
	for i, l := range lines {
		a, c, ok := strings.Cut(l, " ")
		if !ok || strings.Contains(c, " ") {
			return nil, fmt.Errorf("merge %d %q is not two tokens separated by one space", i, l)
		}
		pairs[i] = [2]string{a, c}
	}
	return pairs, nil
}

func (b *builder) parseNormalizer(raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return b.errorf("normalizer: %v", err)
	}
	switch c.Type {
	case "Sequence":
		for _, n := range c.Normalizers {
			if err := b.parseNormalizer(n); err != nil {
				return err
			}
		}
		return nil
	case "NFC", "NFD", "NFKC", "NFKD":
		f := map[string]normForm{"NFC": formNFC, "NFD": formNFD, "NFKC": formNFKC, "NFKD": formNFKD}[c.Type]
		b.addNorm(normStep{op: normUnicode, form: f})
		return nil
	case "Prepend":
		if !b.spm {
			return b.errorf("normalizer Prepend is supported only with a SentencePiece-style BPE (byte_fallback)")
		}
		b.addNorm(normStep{op: normPrepend, to: c.Prepend})
		return nil
	case "Replace":
		from, ok := c.Pattern["String"]
		if !ok || len(c.Pattern) != 1 || c.Content == nil {
			return b.errorf("normalizer Replace: only a {\"String\": …} pattern and a content are supported, got pattern %v", c.Pattern)
		}
		if !b.spm || from == "" {
			return b.errorf("normalizer Replace %q → %q is supported only with a SentencePiece-style BPE (byte_fallback) and a non-empty pattern", from, *c.Content)
		}
		b.addNorm(normStep{op: normReplace, from: from, to: *c.Content})
		return nil
	}
	return b.errorf("normalizer %q is not supported (only NFC, NFD, NFKC, NFKD, Prepend, Replace and Sequence)", c.Type)
}

func (b *builder) addNorm(n normStep) {
	b.normalizer = append(b.normalizer, n)
	b.normSpecs = append(b.normSpecs, n.spec())
}

func (b *builder) parsePreTokenizer(raw json.RawMessage) error {
	byteLevel := false
	var walk func(raw json.RawMessage) error
	walk = func(raw json.RawMessage) error {
		if isNull(raw) {
			return nil
		}
		var c component
		if err := json.Unmarshal(raw, &c); err != nil {
			return b.errorf("pre_tokenizer: %v", err)
		}
		if byteLevel {
			return b.errorf("pre_tokenizer %q after ByteLevel is not supported", c.Type)
		}
		switch c.Type {
		case "Sequence":
			for _, p := range c.Pretokenizers {
				if err := walk(p); err != nil {
					return err
				}
			}
		case "ByteLevel":
			if b.spm {
				return b.errorf("pre_tokenizer ByteLevel with a byte_fallback BPE is not supported (byte-level or SentencePiece-style, not both)")
			}
			if c.AddPrefixSpace {
				b.stages = append(b.stages, stage{kind: stagePrefixSpace})
			}
			if c.UseRegex == nil || *c.UseRegex {
				b.stages = append(b.stages, stage{kind: stageGPT2})
			}
			byteLevel = true
		case "Metaspace":
			if !b.spm {
				return b.errorf("pre_tokenizer Metaspace is supported only with a SentencePiece-style BPE (byte_fallback)")
			}
			st, err := b.metaspaceStage(c)
			if err != nil {
				return err
			}
			b.stages = append(b.stages, st)
		case "Split":
			if b.spm {
				return b.errorf("pre_tokenizer Split with a byte_fallback BPE is not supported (only Metaspace, Digits and Sequence)")
			}
			if c.Behavior != "Isolated" || c.Invert {
				return b.errorf("pre_tokenizer Split with behavior %q, invert %v is not supported (only Isolated, not inverted)", c.Behavior, c.Invert)
			}
			re, ok := c.Pattern["Regex"]
			if !ok {
				return b.errorf("pre_tokenizer Split on a plain string is not supported (only the known regex patterns)")
			}
			st, ok := patternStage(re)
			if !ok {
				return b.errorf("pre_tokenizer Split pattern %q is not supported: only the GPT-2, Qwen2 and Llama 3 patterns have scanners", re)
			}
			b.stages = append(b.stages, st)
		case "Digits":
			b.stages = append(b.stages, stage{kind: stageDigits, individual: c.IndividualDigits})
		default:
			if b.spm {
				return b.errorf("pre_tokenizer %q is not supported with a byte_fallback BPE (only Metaspace, Digits and Sequence)", c.Type)
			}
			return b.errorf("pre_tokenizer %q is not supported (only ByteLevel, Split, Digits and Sequence)", c.Type)
		}
		return nil
	}
	if err := walk(raw); err != nil {
		return err
	}
	if !byteLevel && !b.spm {
		return b.errorf("pre_tokenizer has no ByteLevel step: a BPE without byte_fallback must be byte-level (SentencePiece-style BPE sets byte_fallback)")
	}
	return nil
}

// metaspaceStage reads a Metaspace pre-tokenizer: replacement (str_rep in
// old files), prepend_scheme (or the older add_prefix_space) and split.
func (b *builder) metaspaceStage(c component) (stage, error) {
	m := metaspace{repl: metaSpace, scheme: prependAlways, split: true}
	switch {
	case c.Replacement != nil:
		m.repl = *c.Replacement
	case c.StrRep != nil:
		m.repl = *c.StrRep
	}
	if utf8.RuneCountInString(m.repl) != 1 {
		return stage{}, b.errorf("pre_tokenizer Metaspace replacement %q is not one character", m.repl)
	}
	if c.PrependScheme != nil {
		switch *c.PrependScheme {
		case "always":
		case "first":
			m.scheme = prependFirst
		case "never":
			m.scheme = prependNever
		default:
			return stage{}, b.errorf("pre_tokenizer Metaspace prepend_scheme %q is not one of always, first, never", *c.PrependScheme)
		}
	} else if !c.AddPrefixSpace {
		m.scheme = prependNever
	}
	if c.Split != nil {
		m.split = *c.Split
	}
	return stage{kind: stageMetaspace, meta: m}, nil
}

func (b *builder) parseDecoder(raw json.RawMessage) error {
	if b.spm {
		if isNull(raw) {
			return b.errorf("no decoder: a byte_fallback BPE needs the decoder Sequence of Replace, ByteFallback, Fuse and Strip")
		}
		return b.parseSPMDecoder(raw)
	}
	if isNull(raw) {
		return b.errorf("no decoder: a byte-level BPE needs the ByteLevel decoder")
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return b.errorf("decoder: %v", err)
	}
	switch c.Type {
	case "ByteLevel":
		return nil
	case "Sequence":
		if len(c.Decoders) == 0 {
			return b.errorf("decoder: empty Sequence")
		}
		for _, d := range c.Decoders {
			if err := b.parseDecoder(d); err != nil {
				return err
			}
		}
		return nil
	}
	return b.errorf("decoder %q is not supported (only ByteLevel for a byte-level BPE)", c.Type)
}

// parseSPMDecoder reads the decoder of a SentencePiece-style BPE: a
// Sequence of Replace (of a string), ByteFallback, Fuse and Strip (from the
// left, after Fuse, so that it strips the start of the text).
func (b *builder) parseSPMDecoder(raw json.RawMessage) error {
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return b.errorf("decoder: %v", err)
	}
	switch c.Type {
	case "Sequence":
		if len(c.Decoders) == 0 {
			return b.errorf("decoder: empty Sequence")
		}
		for _, d := range c.Decoders {
			if err := b.parseSPMDecoder(d); err != nil {
				return err
			}
		}
		return nil
	case "Replace":
		from, ok := c.Pattern["String"]
		if !ok || len(c.Pattern) != 1 || c.Content == nil || from == "" || b.dec.from != "" {
			return b.errorf("decoder Replace: only one, of a non-empty {\"String\": …} pattern with a content, is supported; got pattern %v", c.Pattern)
		}
		b.dec.from, b.dec.to = from, *c.Content
		return nil
	case "ByteFallback":
		b.dec.byteFallback = true
		return nil
	case "Fuse":
		b.decFused = true
		return nil
	case "Strip":
		content := ""
		if c.Content != nil {
			content = *c.Content
		}
		switch {
		case utf8.RuneCountInString(content) != 1:
			return b.errorf("decoder Strip content %q is not one character", content)
		case c.Stop != 0 || c.Start < 0:
			return b.errorf("decoder Strip with stop %d is not supported (only from the left)", c.Stop)
		case !b.decFused:
			return b.errorf("decoder Strip before Fuse is not supported (it would strip every token)")
		}
		r, _ := utf8.DecodeRuneInString(content)
		b.dec.strip, b.dec.stripChar = c.Start, r
		return nil
	}
	return b.errorf("decoder %q is not supported with a byte_fallback BPE (only Replace, ByteFallback, Fuse, Strip and Sequence)", c.Type)
}

// parsePostProcessor reads BOS/EOS from a TemplateProcessing "single"
// template: special tokens before the sequence are BOS, after it EOS.
func (b *builder) parsePostProcessor(raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return b.errorf("post_processor: %v", err)
	}
	switch c.Type {
	case "Sequence":
		for _, p := range c.Processors {
			if err := b.parsePostProcessor(p); err != nil {
				return err
			}
		}
	case "TemplateProcessing":
		seen := false
		for _, item := range c.Single {
			if _, ok := item["Sequence"]; ok {
				seen = true
				continue
			}
			if st, ok := item["SpecialToken"]; ok {
				tok := st.ID
				if !seen {
					b.bosTok, b.special.AddBOS, b.specialFrom[0] = &tok, true, b.source
				} else {
					b.eosTok, b.special.AddEOS, b.specialFrom[1] = &tok, true, b.source
				}
			}
		}
	}
	return nil
}

// parseGPT2Files reads GPT-2's vocab.json and merges.txt.
func parseGPT2Files(vocabJSON, mergesTXT string) (*builder, error) {
	b := &builder{source: vocabJSON, vocabName: "vocab.json", mergesSource: mergesTXT}
	data, err := readFile(vocabJSON)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &b.vocab); err != nil {
		return nil, b.errorf("not a vocab.json (token → id): %v", err)
	}
	data, err = readFile(mergesTXT)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" || (n == 1 && strings.HasPrefix(line, "#version")) {
			continue
		}
		a, c, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(c, " ") {
			return nil, fmt.Errorf("tokenizer: %s:%d: merge %q is not two tokens separated by one space", mergesTXT, n, line)
		}
		b.merges = append(b.merges, [2]string{a, c})
		b.mergeLines = append(b.mergeLines, n)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", mergesTXT, err)
	}
	if len(b.merges) == 0 {
		return nil, fmt.Errorf("tokenizer: %s: no merges", mergesTXT)
	}
	b.stages = []stage{{kind: stageGPT2}}
	const eot = "<|endoftext|>"
	if id, ok := b.vocab[eot]; ok {
		b.added = []*addedToken{{ID: id, Content: eot, Special: true}}
		tok := eot
		b.bosTok, b.eosTok = &tok, &tok
		b.specialFrom[0], b.specialFrom[1] = vocabJSON, vocabJSON
	}
	return b, nil
}

type configJSON struct {
	BOS          json.RawMessage `json:"bos_token"`
	EOS          json.RawMessage `json:"eos_token"`
	PAD          json.RawMessage `json:"pad_token"`
	AddBOS       *bool           `json:"add_bos_token"`
	AddEOS       *bool           `json:"add_eos_token"`
	ChatTemplate json.RawMessage `json:"chat_template"`
}

// applyConfig reads tokenizer_config.json over what tokenizer.json said.
func (b *builder) applyConfig(path string, data []byte) error {
	var c configJSON
	if err := json.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("tokenizer: %s: %v", path, err)
	}
	for i, f := range []struct {
		name string
		raw  json.RawMessage
		dst  **string
	}{{"bos_token", c.BOS, &b.bosTok}, {"eos_token", c.EOS, &b.eosTok}, {"pad_token", c.PAD, &b.padTok}} {
		if f.raw == nil {
			continue // not given: keep what tokenizer.json implies
		}
		b.specialFrom[i] = path
		if isNull(f.raw) {
			*f.dst = nil
			continue
		}
		var s string
		if err := json.Unmarshal(f.raw, &s); err != nil {
			var obj struct {
				Content *string `json:"content"`
			}
			if err := json.Unmarshal(f.raw, &obj); err != nil || obj.Content == nil {
				return fmt.Errorf("tokenizer: %s: %s: want a string or {\"content\": …}", path, f.name)
			}
			s = *obj.Content
		}
		*f.dst = &s
	}
	if c.AddBOS != nil {
		b.special.AddBOS = *c.AddBOS
	}
	if c.AddEOS != nil {
		b.special.AddEOS = *c.AddEOS
	}
	if !isNull(c.ChatTemplate) {
		var s string
		if err := json.Unmarshal(c.ChatTemplate, &s); err != nil {
			var named []struct {
				Name     string `json:"name"`
				Template string `json:"template"`
			}
			if err := json.Unmarshal(c.ChatTemplate, &named); err != nil || len(named) == 0 {
				return fmt.Errorf("tokenizer: %s: chat_template: want a string or a list of {name, template}", path)
			}
			s = named[0].Template
			for _, n := range named {
				if n.Name == "default" {
					s = n.Template
				}
			}
		}
		b.template = s
	}
	return nil
}

// build makes the Tokenizer's tables.
func (b *builder) build() (*Tokenizer, error) {
	t := &Tokenizer{
		asciiSafe:  true,
		dec:        b.dec,
		normalizer: b.normalizer,
		normSpecs:  b.normSpecs,
		stages:     b.stages,
		added:      b.added,
		vocab:      b.vocab,
		template:   b.template,
	}
	for _, n := range b.normalizer {
		t.asciiSafe = t.asciiSafe && n.op == normUnicode
	}
	if len(b.vocab) == 0 {
		return nil, b.errorf("%s is empty: a BPE needs its tokens", b.vocabTitle())
	}
	size := 0
	for tok, id := range b.vocab {
		if id < 0 || id >= maxID {
			return nil, b.errorf("token %q has id %d, outside [0, %d)", tok, id, maxID)
		}
		size = max(size, int(id)+1)
	}
	for _, a := range b.added {
		if a.ID < 0 || a.ID >= maxID {
			return nil, b.errorf("added token %q has id %d, outside [0, %d)", a.Content, a.ID, maxID)
		}
		size = max(size, int(a.ID)+1)
	}
	t.idToken = make([]string, size)
	t.idPresent = make([]bool, size)
	t.idBytes = make([][]byte, size)
	m := &t.model
	m.ignoreMerges = b.ignoreMerges
	m.spm = b.spm
	if m.ignoreMerges {
		m.words = make(map[string]int32, len(b.vocab))
	}
	if m.spm {
		t.byteTok = make([]bool, size)
		m.chars = make(map[rune]int32)
	}
	for tok, id := range b.vocab {
		if t.idPresent[id] {
			return nil, b.errorf("id %d is given to both %q and %q", id, t.idToken[id], tok)
		}
		t.idToken[id], t.idPresent[id] = tok, true
		if m.spm {
			t.idBytes[id], t.byteTok[id] = b.dec.spmBytes(tok)
			if r, n := utf8.DecodeRuneInString(tok); n == len(tok) && (r != utf8.RuneError || n > 1) {
				m.chars[r] = id
			}
			if m.ignoreMerges {
				m.words[tok] = id
			}
			continue
		}
		raw, ok := byteLevelDecode(tok)
		t.idBytes[id] = raw
		if ok && m.ignoreMerges {
			m.words[string(raw)] = id
		}
	}
	for i := range m.byteID {
		m.byteID[i] = -1
		if id, ok := b.vocab[string(byteToRune[i])]; ok && !m.spm {
			m.byteID[i] = id
		}
	}
	m.unk = -1
	for i := range m.fallback {
		m.fallback[i] = -1
		if id, ok := b.vocab[fmt.Sprintf("<0x%02X>", i)]; ok && m.spm {
			m.fallback[i] = id
		}
	}
	if m.spm {
		m.cutAtSpace = true
		for tok := range b.vocab {
			if strings.Contains(strings.TrimLeft(tok, metaSpace), metaSpace) {
				m.cutAtSpace = false // "a▁b", "a▁": a token crosses such a place
				break
			}
		}
	}
	if m.spm && b.unkTok != nil {
		id, ok := b.vocab[*b.unkTok]
		if !ok {
			return nil, b.errorf("model.unk_token %q is not in %s", *b.unkTok, b.vocabTitle())
		}
		m.unk, m.fuseUnk = id, b.fuseUnk
	}
	m.merges = newPairTable(len(b.merges))
	t.merges = make([][2]int32, len(b.merges))
	for rank, p := range b.merges {
		l, okl := b.vocab[p[0]]
		r, okr := b.vocab[p[1]]
		if !okl || !okr {
			return nil, b.mergeErrorf(rank, "merge %d (%q %q) uses a token that is not in %s", rank, p[0], p[1], b.vocabTitle())
		}
		id, ok := b.vocab[p[0]+p[1]]
		if !ok {
			return nil, b.mergeErrorf(rank, "merge %d (%q %q) makes %q, which is not in %s", rank, p[0], p[1], p[0]+p[1], b.vocabTitle())
		}
		prio := int32(rank)
		if b.mergeRank != nil {
			prio = b.mergeRank[rank]
		}
		m.merges.put(pairKey(l, r), uint64(prio)<<32|uint64(uint32(id)))
		t.merges[rank] = [2]int32{l, r}
	}
	t.addedIDs = make(map[string]int32, len(b.added))
	t.isSpecial = make([]bool, size)
	var raw, normed []*addedToken
	for _, a := range b.added {
		t.addedIDs[a.Content] = a.ID
		t.idToken[a.ID], t.idPresent[a.ID] = a.Content, true
		t.isSpecial[a.ID] = a.Special
		if m.spm {
			t.idBytes[a.ID], t.byteTok[a.ID] = b.dec.spmBytes(a.Content)
		} else {
			t.idBytes[a.ID], _ = byteLevelDecode(a.Content)
		}
		if a.Normalized {
			normed = append(normed, a)
		} else {
			raw = append(raw, a)
		}
	}
	t.rawAdded = newAddedMatcher(raw, func(a *addedToken) string { return a.Content })
	t.normAdded = newAddedMatcher(normed, func(a *addedToken) string { return t.normalize(a.Content) })

	t.special = Special{BOS: -1, EOS: -1, PAD: -1, AddBOS: b.special.AddBOS, AddEOS: b.special.AddEOS}
	for i, f := range []struct {
		name string
		tok  *string
		id   *int32
		str  *string
	}{
		{"bos_token", b.bosTok, &t.special.BOS, &t.special.BOSToken},
		{"eos_token", b.eosTok, &t.special.EOS, &t.special.EOSToken},
		{"pad_token", b.padTok, &t.special.PAD, &t.special.PADToken},
	} {
		if f.tok == nil {
			continue
		}
		id, ok := t.TokenID(*f.tok)
		if !ok {
			from := cmp.Or(b.specialFrom[i], b.source)
			return nil, fmt.Errorf("tokenizer: %s: %s %q is not in the vocabulary of %s", from, f.name, *f.tok, b.source)
		}
		*f.id, *f.str = id, *f.tok
	}
	return t, nil
}
