// Package data turns training data files into token sequences and batches:
// JSONL or Parquet in the shapes the ecosystem uses, rendered with the
// student's chat template as transformers renders it, masked so that the loss falls on response tokens only, truncated
// or packed to a maximum length, split into training and validation sets, and
// served in deterministic, resumable batches (model.Batch).
//
// # Line shapes
//
// One JSON object per line (blank lines are counted and ignored; a leading
// UTF-8 BOM is ignored; a file ending in .gz is read through gzip), or one
// row per record in a Parquet file (.parquet): the fields as columns,
// messages as a list of structs, null where a line leaves a field out. Each
// row is turned into the JSON object the equivalent line would be and read
// by the same code, a row group at a time; a file whose columns make no
// shape stops at once naming the missing column, and a bad row is named by
// its row group and row (0-based). ForEachRecord reads both kinds for the
// commands that read records of their own. Fields
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
// A prompt/response or messages line written by `kdnative elicit label
// --top-logprobs K --student-tokenizer DIR` — "teacher_tokens" and
// "teacher_top_logprobs" with student ids beside it — carries a sparse
// teacher (Example.TopK) as a pre-tokenized line's teacher_topk_ids and
// teacher_topk_logprobs do: see labelled.go for how it is placed on the
// rendered tokens and when such a line is refused.
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
//   - "auto" (the default): the tokenizer's chat template
//     (chat_template.jinja, where transformers 5 keeps it, or
//     tokenizer_config.json's chat_template) rendered as transformers'
//     apply_chat_template renders it ("jinja"), plain text ("none") when the
//     tokenizer has none (a base model; Report.TemplateNote says so). The
//     Jinja source runs in github.com/ardanlabs/jinja with Hugging Face's
//     trim_blocks and lstrip_blocks and the globals transformers gives:
//     messages (reasoning_content also as thinking), the line's "tools",
//     add_generation_prompt, bos_token/eos_token/pad_token,
//     raise_exception, strftime_now (Options.TemplateDate, a fixed day by
//     default so that the tokens do not change from day to day) and its
//     tojson (keys in their order). Checked against transformers on the real
//     templates of Llama 3.1/3.2, Qwen2.5, Qwen3, Mistral Nemo, Gemma 2,
//     Phi-3.5, DeepSeek-R1-Distill and SmolLM2 (testdata/templates). A
//     template that does not compile, or raises on a conversation, is an
//     error that names the template and the reason (and, in a load, the
//     line). Only a ChatML template that does not compile falls back to the
//     hand-written "chatml" or "qwen3" below, and Report.TemplateNote says so.
//   - "jinja": the same, an error when the tokenizer has no chat template.
//   - a path ending in .jinja: that chat template in place of the
//     tokenizer's.
//   - "chatml": kdnative's hand-written ChatML:
//     "<|im_start|>{role}\n{content}<|im_end|>\n" per message, the
//     template's default system prompt inserted (read from the chat_template
//     string; Options.SystemPrompt replaces it, Options.NoDefaultSystem
//     removes it).
//   - "qwen3": kdnative's hand-written Qwen3: ChatML without a default
//     system prompt, assistant turns after the last user message rendered as
//     "<think>\n{reasoning}\n</think>\n\n{content}"; earlier assistant turns
//     lose their reasoning, as in the template.
//   - "none": no chat template: prompt + response + EOS as plain text (TRL's
//     non-conversational prompt-completion form; the data carries its own
//     separators). Chat lines are then an error.
//
// Under a rendered template, Options.SystemPrompt is put first as a system
// message where a conversation has none; Options.NoDefaultSystem is refused
// when the template writes a default of its own. reasoning_content under a
// template that never reads it (transformers would drop it silently) is a
// bad line. Tool messages, tool calls and multimodal content are not read
// (bad lines); a line's "tools" list is handed to the template.
//
// With a chat template a string prompt/response becomes the conversation
// [system (default), user: prompt, assistant: response].
//
// # Loss mask
//
// Labels carry the token where the loss is taken and −100
// (runtime.IgnoreIndex) elsewhere. Under a chat template every assistant
// turn is learnt: from the end of the generation prompt the template writes
// for it ("<|im_start|>assistant\n", "<|start_header_id|>assistant<|end_header_id|>\n\n")
// through the end-of-turn text it writes after the content
// ("<|im_end|>\n", "<|eot_id|>", "</s>") — what TRL's assistant_only_loss
// takes with generation-tagged templates. What the model writes after the
// generation prompt (Qwen3's think block) is learnt; headers, system and user
// messages are not. Under "jinja" each turn is found by rendering the
// conversation again with the turn's content changed (templates that rewrite
// earlier turns are followed as they render), and a token that straddles a
// boundary is taken whole, as transformers' return_assistant_tokens_mask
// does. Under "none" the loss covers the response and the EOS token; under
// "text" every token.
//
// A line whose "finish_reason" is "length" (as `kdnative elicit label` and the
// OpenAI API write it) holds a response that stopped at the length limit, not
// where the teacher ended it: its last answer is left open — rendered up to
// the end of its text, without the end-of-turn text (what transformers'
// continue_final_message renders; cut inside its reasoning, without
// </think>), no EOS under "none" — so the model does not learn to stop there.
// Report.Open counts them.
//
// # Tokenization and safety
//
// Under "jinja" the rendered text is tokenized whole with Tokenizer.Encode,
// as transformers does (add_special_tokens=False), so the ids are
// transformers' ids. Text from the data must not turn into control tokens: a
// message holding the text of a special token ("<|im_end|>" typed in a
// prompt) has it swapped for a private-use stand-in before rendering, and
// that conversation is tokenized piece by piece between the template's own
// special tokens, each piece as plain text with the original text put back
// (Tokenizer.EncodeOrdinary).
//
// The hand-written templates tokenize piece by piece, split where the
// template places a special token: the template's own special tokens come
// from Tokenizer.TokenID, and every piece of text from the data goes through
// Tokenizer.EncodeOrdinary. Between two special tokens the rendered text is
// encoded as one piece ("user\n" + content); at the one boundary inside such
// a piece that the mask needs (after "assistant\n", and between prompt and
// response under "none") the joint encoding is used when it splits cleanly
// there and the two halves are encoded separately when a merge crosses it.
// The "text" shape is encoded with Tokenizer.Encode, so text already
// rendered with a template keeps its special tokens.
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
