// Package tokenizer is a byte-level BPE tokenizer compatible with Hugging
// Face's tokenizers library for the models kdnative distills: GPT-2, Qwen2,
// Qwen2.5 and Qwen3, Llama 3 and SmolLM. It reads tokenizer.json (Load,
// LoadDir) or GPT-2's vocab.json and merges.txt (FromGPT2Files) and gives the
// same ids as tokenizers' encode with add_special_tokens=False, and the same
// text as its decode with skip_special_tokens=False.
//
// Encoding a text runs, in order:
//
//  1. added tokens: literal occurrences of added tokens (<|im_start|>,
//     <|endoftext|>, <think>) are cut out and emitted as their ids, leftmost
//     and longest first (EncodeOrdinary leaves special ones as text);
//  2. the normalizer (NFC for Qwen; none for GPT-2 and Llama 3), on each
//     stretch between added tokens;
//  3. the pre-tokenizer: the split pattern of the model (hand-written
//     scanners for the GPT-2, Qwen2 and Llama 3 regular expressions, whose
//     \s+(?!\S) look-ahead Go's regexp lacks), Digits where configured;
//  4. byte-level BPE on each piece: the piece's bytes, as GPT-2's
//     bytes_to_unicode alphabet, merged by rank; results are cached per piece.
//
// Decoding joins the bytes of the tokens and reads them as UTF-8, replacing
// ill-formed sequences with U+FFFD as Hugging Face does.
package tokenizer
