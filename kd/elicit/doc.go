// Package elicit gets the teacher's knowledge into data kdnative trains on:
// labeling (the teacher answers prompts, with its top-k log-probabilities
// mapped to the student's token ids on request: Label), expansion (new
// instructions from seed examples, Self-Instruct: Expand), feedback (the
// teacher picks the best of the student's candidates, giving DPO pairs:
// Feedback), self-knowledge (the student's own answers that a rule or the
// teacher keeps, STaR-style: Self), and curation (filtering generated data
// by length and script, and removing exact and near duplicates with MinHash
// over word n-grams: Curate). The teacher is any OpenAI-compatible endpoint
// (Client retries with backoff); every command's output is resumable.
package elicit
