package runtime

// DecodeOps are the ops of generation with a key/value cache: one new token
// attends to the keys and values of every position before it, kept from
// earlier steps.
type DecodeOps interface {
	// AttentionDecode computes attention for query position pos of each of
	// p.B sequences: q, out are [B, NH·HD]; kCache, vCache are
	// [B·Tmax, NKV·HD], sequence b's keys and values (rotated) at rows
	// b·Tmax + s for positions s = 0…pos. The query sees keys s ≤ pos, when
	// p.Window > 0 only those with pos − s < Window, and when p.KeyStart is
	// set only s ≥ KeyStart[b]. p.T is ignored.
	AttentionDecode(out, q, kCache, vCache *Tensor, p AttentionParams, pos int)
}
