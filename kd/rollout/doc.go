// Package rollout gets the targets of on-policy training steps: a policy
// (the student, or a teacher under GKD's seq_kd) samples responses to the
// prompts of a batch — every row of a step decoded together through one
// model.Engine, with the key/value cache — recording the log-probability
// of each drawn token under the distribution it was drawn from; the
// prompts and responses are laid out as a training batch (prompt masked,
// response tokens as targets); and a teacher scores the responses, a
// local model or any OpenAI-compatible /v1/completions endpoint that
// returns prompt log-probabilities as vLLM does (kdnative serve is one).
//
// The pieces are separate so that other objectives reuse them: on-policy
// distillation (kd/loss.PolicyGradient with reverse-KL advantages, or the
// generalized JSD against a local teacher's full distribution) samples one
// response per prompt; group-relative policy gradients sample several per
// prompt (SampleGroups), score or judge them, and use the same recorded
// sampling log-probabilities for their importance weights.
package rollout
