package runtime

// DecodeOps are the ops of generation with a key/value cache: one new token
// attends to the keys and values of every position before it, kept from
// earlier steps.
//
// The cache positions are tensors on the device, not Go arguments, so that
// one decode step makes the same calls as the next (only the uploaded
// positions change) and a backend with StepGraphs can record the step once
// and replay it.
type DecodeOps interface {
	// AttentionDecode computes attention for one query of each of
	// max(p.B, 1) sequences: q, out are [B, NH·HD]; kCache, vCache are
	// [B·Tmax, NKV·HD], sequence b's keys and values (rotated) at rows
	// b·Tmax + s; at is I32 [B], sequence b's query position in its cache.
	// The query sees keys s ≤ at[b], when p.Window > 0 only those with
	// at[b] − s < Window, and when p.KeyStart is set only s ≥ KeyStart[b].
	// p.T is ignored. A position outside [0, Tmax) is the caller's bug: the
	// CPU backend panics, a device backend (which cannot look without a
	// round-trip) gives that sequence zeros.
	AttentionDecode(out, q, kCache, vCache, at *Tensor, p AttentionParams)
	// KVAppend writes new keys (or values) into a cache of the same dtype:
	// src [B·n, C] holds n rows per sequence, B = at.Numel(), and row j of
	// sequence b goes to cache row b·Tmax + at[b] + j of cache [B·Tmax, C].
	// Rows that would land outside sequence b's Tmax rows are the caller's
	// bug, as in AttentionDecode (a device backend skips them).
	KVAppend(cache, src, at *Tensor)
}
