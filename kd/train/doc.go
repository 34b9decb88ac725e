// Package train is `kdnative train`: a recipe (YAML) says what to distill
// into what, with which objectives, and the trainer runs it — data, online or
// cached teacher, gradient accumulation, clipping, the learning-rate schedule,
// periodic evaluation, metrics, and checkpoints that resume exactly. Beside
// the terms on the data's text, objectives.onpolicy (onpolicy.go) and
// objectives.rl (rl.go) train the student on answers it samples itself
// (docs/on-policy.md).
package train
