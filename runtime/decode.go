package runtime

// DecodeOps are the ops of generation with a key/value cache: one new token
// attends to the keys and values of every position before it, kept from
// earlier steps.
type DecodeOps interface {
	// AttentionDecode computes attention for one query position pos of one
	// sequence: q, out are [1, NH·HD]; kCache, vCache are [Tmax, NKV·HD]
	// holding the (rotated) keys and values of positions 0…pos. The query
	// sees keys s ≤ pos, and when p.Window > 0 only those with pos − s <
	// Window. p.B and p.T are ignored.
	AttentionDecode(out, q, kCache, vCache *Tensor, p AttentionParams, pos int)
}
