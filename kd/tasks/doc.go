// Package tasks is `kdnative eval --task`: does a model do the task? It reads
// task files (JSONL, one example a line), runs one or more models on them and
// scores the results the way lm-evaluation-harness and lighteval do, with 95%
// confidence intervals and per-example outputs a person can read.
//
// An example is one of three kinds:
//
//   - generate: a prompt ("prompt", or chat "messages") that the model
//     continues (greedy by default; "n" samples at a "temperature" for
//     pass@k), scored against "answer" by exact match after normalization
//     ("normalize": text, math or none), numeric equality within a
//     tolerance, containment, or an OpenAI-compatible judge with a
//     "rubric". An "extract" preset (boxed, gsm8k, last_number,
//     first_number) or regular expression picks the final answer out of the
//     output first.
//   - choice: a "context" and "choices"; each choice is scored by the
//     log-likelihood of delimiter+choice after the context, and the
//     prediction is the argmax (acc) or the argmax of the log-likelihood per
//     character of the choice (acc_norm), as lm-evaluation-harness defines
//     them.
//   - perplexity: a "text" scored by its log-likelihood in the harness's
//     rolling windows, reported in bits per byte (comparable across
//     tokenizers), bits per token and word perplexity.
//
// A file may start with a header line {"task": NAME, "description": …,
// "defaults": {…}} whose defaults fill in every example's missing fields.
// Every line is checked before any model runs: an unknown kind or field, a
// missing field, a regular expression that does not compile or an answer
// that is not a number where a number is needed is an error naming the file
// and line.
//
// Tokenization follows lm-evaluation-harness's causal-model path: for a
// choice, trailing whitespace of the context moves to the continuation, the
// whole string is encoded and split after the context's own tokens
// (whole-then-split), a BOS is put first where the tokenizer adds one, and an
// empty context is replaced by the BOS (else EOS) token. Inputs longer than
// the model's positions keep their last tokens.
package tasks
