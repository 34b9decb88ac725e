// Package loss holds kdnative's training objectives: cross-entropy for SFT,
// the distillation divergences against dense or top-k teachers, feature and
// relation matching, the DPO family, and the policy gradients trained on
// the student's own samples: on-policy distillation's reverse-KL policy
// gradient (PolicyGradient) and GRPO's clipped group-relative objective
// (GRPO, GroupAdvantages).
//
// The token-level losses are fused and chunked: from the student's final
// hidden states [N, C] and its lm_head [V, C] they compute a block of rows at
// a time — the logits, both softmaxes, the loss, the gradient to the hidden
// states and the accumulated gradient to the lm_head — so the full [N × V]
// logits never exist (the Liger-Kernel idea, done for every divergence, for
// sparse teachers and for DPO's log-probabilities). The block size comes from
// a memory budget. All arithmetic goes through runtime.Backend, so the same
// code runs on the CPU and on a GPU; the logits stay in fp32 from the matrix
// product on.
package loss
