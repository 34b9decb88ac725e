// Package xtok aligns two tokenizations of the same text, for distillation
// between a teacher and a student whose tokenizers differ
// (objectives.kd.cross_tokenizer).
//
// Each side's tokens are laid end to end as the bytes they stand for
// (tokenizer.TokenBytes: the text as that tokenizer saw it), so a token's
// byte offsets are the running sum of the lengths before it. The two texts
// need not be equal: each model may render an example with its own chat
// template, add a BOS, or be truncated at its own length. A byte-level diff
// (Myers' O(ND) algorithm) finds the stretches of text both sides share; in
// each shared stretch the tokens are grouped where both tokenizations put a
// boundary at the same place, as TRL's GOLD does with byte offsets
// (_align_by_byte_offsets): a Span is a run of student tokens and a run of
// teacher tokens that cover exactly the same bytes with no common boundary
// inside. Tokens that straddle an edit (template markup that differs, text
// a normalizer changed) belong to no span and get no distillation loss.
//
// A Span's distributions are compared in kd/loss: the distribution that
// predicted the span's last token on each side, scaled by the probabilities
// of the span's earlier tokens (the chain rule: GOLD's "bayesian" merge).
//
// MatchVocab pairs the ids of two vocabularies that stand for the same text
// (GOLD's hybrid loss compares those exactly and sorts the rest; GOLD pairs
// by vocabulary string, which misses "▁the" = "Ġthe").
//
// The on-policy path (a student sampling text that the teacher then scores)
// is not built yet; when it is, it aligns each sample the same way: the
// student's sampled ids and the teacher's encoding of their text go through
// Align like any other pair of sequences.
package xtok
