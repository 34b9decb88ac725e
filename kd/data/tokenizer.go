package data

// Tokenizer is what the package needs from a tokenizer. model/tokenizer's
// Hugging Face tokenizer is adapted to it by the caller.
//
// Encode and EncodeOrdinary must not add anything of their own — no BOS, no
// EOS, no prefix space — because rendered text is encoded piece by piece and
// the pieces are concatenated.
type Tokenizer interface {
	// Encode tokenizes text, recognizing special (added) tokens written in
	// it, as Hugging Face tokenizers do by default.
	Encode(text string) []int32
	// EncodeOrdinary tokenizes text as plain text: a special token's string
	// in it is split into ordinary tokens. Used for everything that comes
	// from the data.
	EncodeOrdinary(text string) []int32
	// TokenID returns the id of a token given as its string (special tokens
	// like "<|im_end|>" included), and whether the vocabulary has it.
	TokenID(tok string) (int32, bool)
	// ChatTemplate returns the model's chat template — chat_template.jinja,
	// else tokenizer_config.json's chat_template — "" when there is none.
	ChatTemplate() string
}

// EOSTokenizer is implemented by tokenizers that know their end-of-sequence
// token (tokenizer_config.json's eos_token). Without it the EOS is the first
// of <|endoftext|>, </s>, <|end_of_text|>, <eos> that the vocabulary has,
// unless Options.EOS names one.
type EOSTokenizer interface {
	EOSToken() string
}

// fallbackEOS is the list tried when neither Options.EOS nor the tokenizer
// names the EOS token.
var fallbackEOS = []string{"<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"}
