// Package data turns training data files into token sequences and batches:
// JSONL in the shapes the ecosystem uses, rendered with the student's chat
// template, masked so that the loss falls on response tokens only, truncated
// or packed to a maximum length, split into training and validation sets, and
// served in deterministic, resumable batches (model.Batch).
//
// # Line shapes
//
// One JSON object per line (blank lines are counted and ignored; a leading
// UTF-8 BOM is ignored; a file ending in .gz is read through gzip). Fields
// other than the ones below are ignored, so teacher fields (top-k logprobs,
// scores, ids) may sit alongside. The shape is recognized per line, in this
// order:
//
//	{"input_ids": [...], "labels": [...]}        pre-tokenized (SFT)
//	{"messages": [{"role","content"}, ...]}      chat (SFT); also "conversations"
//	{"prompt": ..., "response": ...}             prompt/response (SFT); "completion" = "response"
//	{"text": "..."}                              plain text, loss on every token (SFT)
//	{"prompt": ..., "chosen": ..., "rejected": ...}   preference pair (DPO)
//	{"chosen": [msgs], "rejected": [msgs]}             pair with implicit prompt (DPO)
//	{"prompt_input_ids", "chosen_input_ids", "rejected_input_ids"}  pre-tokenized pair (DPO)
//
// Messages are {"role", "content"} with role system, user or assistant
// (ShareGPT's {"from", "value"} with from system, human or gpt is accepted
// too); an assistant message may carry "reasoning_content" where the template
// has a place for it (qwen3). A prompt, response, chosen or rejected field is
// either a string or a list of messages (TRL's conversational form); a
// message-list response, chosen or rejected holds assistant messages only.
// When a line has both "messages" and "prompt" (UltraChat does), "messages"
// wins. A preference line given to LoadSFT, or an SFT line given to
// LoadPairs, is a bad line that says which loader it needs.
//
// A pre-tokenized line follows the Hugging Face convention: "labels" is
// aligned with "input_ids" (the model shifts), −100 where no loss is taken,
// any other value a token id ≥ 0. Without "labels" the loss is on every token
// (DataCollatorForLanguageModeling's behaviour). An "attention_mask" of 0s and
// 1s, when present, removes the positions marked 0 (padding). Pre-tokenized
// sequences are used as they are: no BOS or EOS is added. A file is either
// pre-tokenized or text: the first example decides, and a line of the other
// kind is a bad line (mixing them nearly always means ids made by another
// tokenizer were concatenated in by mistake).
//
// # Templates
//
// Options.Template chooses how text is rendered:
//
//   - "chatml": "<|im_start|>{role}\n{content}<|im_end|>\n" per message, as
//     the templates of Qwen2/Qwen2.5, SmolLM/SmolLM2 and other ChatML models
//     produce for plain-text conversations. When a conversation does not open
//     with a system message, the template's default system prompt is inserted
//     as the model's own template does (Qwen2.5: "You are Qwen, created by
//     Alibaba Cloud. You are a helpful assistant."; SmolLM2: "You are a
//     helpful AI assistant named SmolLM, trained by Hugging Face"), read from
//     the chat_template string; Options.SystemPrompt replaces it and
//     Options.NoDefaultSystem removes it.
//   - "qwen3": Qwen3's template: ChatML without a default system prompt, and
//     assistant turns after the last user message rendered as
//     "<think>\n{reasoning}\n</think>\n\n{content}" (an empty think block when
//     there is no reasoning, as the template does for the final turn);
//     earlier assistant turns lose their reasoning, as in the template. The
//     reasoning comes from "reasoning_content" or from a "<think>…</think>"
//     prefix of the content.
//   - "none": no chat template: prompt + response + EOS as plain text (TRL's
//     non-conversational prompt-completion form; the data carries its own
//     separators). Chat lines are then an error.
//   - "auto" (the default): "qwen3" when the tokenizer's chat_template uses
//     <|im_start|> and reasoning_content (and the tokenizer has <|im_start|>
//     and <|im_end|>), "chatml" when it uses <|im_start|>, "none" when the
//     tokenizer has no chat template (a base model; Report.TemplateNote then
//     says so, as it does when a template named in Options differs from the
//     tokenizer's own). The tokenizer's template is chat_template.jinja
//     (where transformers 5 keeps it) or tokenizer_config.json's
//     chat_template. Any other template (Llama 3, Mistral, Gemma, …) is
//     refused with a message: it is not reproduced here, and guessing would
//     train the student on a format it will never see at inference.
//
// Tool calls, tool messages and multimodal content are not rendered; such
// lines are bad lines. Templates that use <|im_start|> with extra structure
// of their own (SmolLM3's metadata system block, for instance) are not
// reproduced exactly by "chatml".
//
// With a chat template a string prompt/response becomes the conversation
// [system (default), user: prompt, assistant: response].
//
// # Loss mask
//
// Labels carry the token where the loss is taken and −100
// (runtime.IgnoreIndex) elsewhere. Under a chat template the loss covers each
// assistant message's content, its <|im_end|> and the "\n" after it — what
// TRL's assistant_only_loss takes with its generation-tagged training
// templates — and, under qwen3, the think block too (the model generates it).
// Role headers ("<|im_start|>assistant\n"), system and user messages are
// masked. Under "none" the loss covers the response and the EOS token; under
// "text" every token.
//
// A line whose "finish_reason" is "length" (as `kdnative elicit label` and the
// OpenAI API write it) holds a response that stopped at the length limit, not
// where the teacher ended it: its last answer is left open — no <|im_end|>
// and "\n", no EOS (under qwen3, cut inside its reasoning, no </think>
// either) — so the model does not learn to stop there. Report.Open counts
// them.
//
// # Tokenization and safety
//
// Text is tokenized piece by piece, split where the template places a special
// token: the template's own special tokens come from Tokenizer.TokenID, and
// every piece of text from the data goes through Tokenizer.EncodeOrdinary, so
// a literal "<|im_end|>" typed in a prompt or response stays ordinary text and
// cannot end a turn or inject a control token. Between two special tokens the
// rendered text is encoded as one piece ("user\n" + content), which gives the
// tokens the whole rendered string would get; at the one boundary inside such
// a piece that the mask needs (after "assistant\n", and between prompt and
// response under "none") the joint encoding is used when it splits cleanly
// there and the two halves are encoded separately when a merge crosses it
// (content starting with a newline, say). The "text" shape is the exception:
// it is encoded with Tokenizer.Encode, so text already rendered with a
// template keeps its special tokens.
//
// # Length, packing, split
//
// Every sequence is held to Options.MaxLen (set it to the smaller of the run's
// maximum length and the model's max_position_embeddings): "truncate" keeps
// the start (and drops the example when no loss token is left), "drop" drops
// it, "error" stops the run with a message naming file:line and both lengths.
// Truncated and dropped examples are counted in the Report. For pairs the
// prompt is first cut to its last MaxPromptLen tokens when that is set, then
// the responses are cut at the end.
//
// With Options.Pack the examples are concatenated (in a seeded shuffled
// order, labels carried along) and cut into rows of exactly MaxLen tokens;
// only the last row may be shorter (the Loader pads it). Attention is not
// masked across the documents in a row and positions run on through the row,
// as in TRL's ConstantLengthDataset: each document ends with its EOS or
// end-of-turn token, which is what separates them (a response cut at the
// length limit runs straight into the next document).
//
// The validation set is a seeded random ValFraction of the examples (at least
// one), or a separate ValFile. Train and validation sets are split before
// packing, so no example appears in both.
//
// # Bad lines
//
// An SFT line whose assistant answer is empty (a teacher that said nothing)
// is data, not a mistake: it is skipped and counted in Report.Empty under
// either OnBadLine. A preference pair with an empty side is a bad line.
//
// A line that is not JSON, lacks its fields, has a field of the wrong type,
// an unknown role, ids out of range, or is longer than Options.MaxLineBytes
// is a bad line. Options.OnBadLine "stop" (the default)
// stops at the first with a *LineError ("file:line: reason"); "skip" counts
// it, keeps the first 20 in Report.Problems and goes on. Configuration errors
// found on a line (chat data without a chat template, overflow "error")
// stop the run under either choice. A file without a usable example is an
// error.
//
// # Batches
//
// Loader serves model.Batch values: each row's ids, and Targets[i] =
// Labels[i+1] (the last position and padding get runtime.IgnoreIndex), rows
// padded on the right to the batch's longest row (or to a fixed T). The order
// is a permutation of the rows per epoch drawn from (Seed, epoch) with a
// PCG generator and our own Fisher–Yates, so it does not depend on the Go
// version. State and Restore save and resume the position exactly.
// PairLoader does the same for preference pairs, with the chosen sequences
// first and the rejected ones after (the layout of loss.ConcatPairLayout).
package data
