package data

import (
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/kdnative/kdnative/model"
)

// LoaderConfig says how a Loader orders and pads its rows.
type LoaderConfig struct {
	// Seed draws each epoch's order.
	Seed uint64
	// NoShuffle serves the rows in their given order every epoch.
	NoShuffle bool
	// PadID is the token id put in padding positions (their targets are
	// IgnoreIndex, and attention is causal with padding on the right, so
	// its value does not change the loss; it must be inside the vocabulary).
	PadID int32
	// FixedT, when > 0, pads every batch to exactly FixedT positions
	// (constant shapes); a longer row is an error. Otherwise a batch is as
	// long as its longest row, padded as Buckets say.
	FixedT int
	// Buckets pad each batch to one of a few lengths (BucketLength), so
	// that a run's batches come in a few shapes; nil pads to the longest
	// row. MaxLen caps the padding (0: no cap).
	Buckets []int
	MaxLen  int
}

// BucketLength is the length a batch whose longest row has n tokens is
// padded to: the smallest of buckets (ascending) not below n; beyond the
// largest, the next multiple of the largest; at most maxLen when maxLen > 0
// (and never below n). [64] pads to multiples of 64, [128, 256, 512] to
// those three lengths and then multiples of 512, nil or [1] not at all.
// Padding changes no loss: the padding positions have no targets, and
// attention is causal with the padding on the right.
func BucketLength(n int, buckets []int, maxLen int) int {
	if len(buckets) == 0 {
		return n
	}
	T := 0
	for _, b := range buckets {
		if b >= n {
			T = b
			break
		}
	}
	if T == 0 {
		last := buckets[len(buckets)-1]
		T = (n + last - 1) / last * last
	}
	if maxLen > 0 {
		T = min(T, max(maxLen, n))
	}
	return T
}

// CheckBuckets reports length buckets that are not positive and strictly
// ascending.
func CheckBuckets(buckets []int) error {
	for i, b := range buckets {
		if b <= 0 || i > 0 && b <= buckets[i-1] {
			return fmt.Errorf("length buckets %v: want positive lengths in ascending order", buckets)
		}
	}
	return nil
}

// padTo is the batch length the config gives rows whose longest has n
// tokens (0: MakeBatch's own, the longest row).
func (c LoaderConfig) padTo(n int) int {
	if c.FixedT > 0 {
		return c.FixedT
	}
	if len(c.Buckets) == 0 {
		return 0
	}
	return BucketLength(n, c.Buckets, c.MaxLen)
}

// LoaderState is where a Loader stands: enough, with the same rows, to
// continue exactly. It is plain data for the checkpoint's training state.
type LoaderState struct {
	Seed  uint64 `json:"seed"`
	Epoch int    `json:"epoch"`
	// Position is the index, in the epoch's order, of the next row.
	Position int `json:"position"`
	// Rows and Fingerprint identify the data: Restore refuses another.
	Rows        int    `json:"rows"`
	Fingerprint uint64 `json:"fingerprint"`
}

// order walks rows epoch by epoch, in a seeded permutation per epoch.
type order struct {
	n         int
	seed      uint64
	noShuffle bool
	epoch     int
	pos       int
	perm      []int
	fp        uint64
}

func (o *order) permute() {
	if o.noShuffle {
		o.perm = nil
		return
	}
	o.perm = permutation(o.n, o.seed, streamEpoch+uint64(o.epoch))
}

// next returns the index of the next row, moving on to the next epoch at the
// end of one.
func (o *order) next() int {
	if o.pos == o.n {
		o.epoch++
		o.pos = 0
		o.permute()
	}
	i := o.pos
	o.pos++
	if o.perm != nil {
		return o.perm[i]
	}
	return i
}

// at is the position of the next row: at the end of an epoch, the start of
// the next.
func (o *order) at() (epoch, pos int) {
	if o.pos == o.n {
		return o.epoch + 1, 0
	}
	return o.epoch, o.pos
}

func (o *order) state() LoaderState {
	e, p := o.at()
	return LoaderState{Seed: o.seed, Epoch: e, Position: p, Rows: o.n, Fingerprint: o.fp}
}

func (o *order) restore(s LoaderState) error {
	if s.Rows != o.n || s.Fingerprint != o.fp {
		return fmt.Errorf("data: the saved data position is for %d rows (fingerprint %016x), the data now has %d rows (fingerprint %016x): the data changed since the checkpoint", s.Rows, s.Fingerprint, o.n, o.fp)
	}
	if s.Epoch < 0 || s.Position < 0 || s.Position > o.n {
		return fmt.Errorf("data: saved data position epoch %d, row %d is outside %d rows", s.Epoch, s.Position, o.n)
	}
	o.seed, o.epoch, o.pos = s.Seed, s.Epoch, s.Position
	o.permute()
	return nil
}

// fingerprint hashes rows of tokens and labels (FNV-1a over lengths and
// values).
func fingerprint(rows func(yield func(t, l []int32))) uint64 {
	h := fnv.New64a()
	var buf [4]byte
	put := func(v int32) {
		buf[0], buf[1], buf[2], buf[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		h.Write(buf[:])
	}
	rows(func(t, l []int32) {
		put(int32(len(t)))
		for _, v := range t {
			put(v)
		}
		put(int32(len(l)))
		for _, v := range l {
			put(v)
		}
	})
	return h.Sum64()
}

// Loader serves batches of SFT rows in a deterministic order: each epoch is a
// permutation of the rows drawn from (Seed, epoch), and a batch that reaches
// the end of an epoch continues into the next.
type Loader struct {
	rows []Example
	cfg  LoaderConfig
	o    order
}

// NewLoader makes a loader over rows (which it does not copy or change).
func NewLoader(rows []Example, cfg LoaderConfig) (*Loader, error) {
	if len(rows) == 0 {
		return nil, errors.New("data: a loader needs at least one row")
	}
	for i, r := range rows {
		if len(r.Tokens) == 0 || len(r.Labels) != len(r.Tokens) {
			return nil, fmt.Errorf("data: row %d has %d tokens and %d labels", i, len(r.Tokens), len(r.Labels))
		}
		if cfg.FixedT > 0 && len(r.Tokens) > cfg.FixedT {
			return nil, fmt.Errorf("data: row %d has %d tokens, more than the fixed batch length %d", i, len(r.Tokens), cfg.FixedT)
		}
	}
	if err := CheckBuckets(cfg.Buckets); err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	if cfg.PadID < 0 {
		return nil, fmt.Errorf("data: pad id %d", cfg.PadID)
	}
	l := &Loader{rows: rows, cfg: cfg}
	l.o = order{n: len(rows), seed: cfg.Seed, noShuffle: cfg.NoShuffle}
	l.o.fp = fingerprint(func(yield func(t, l []int32)) {
		for _, r := range rows {
			yield(r.Tokens, r.Labels)
		}
	})
	l.o.permute()
	return l, nil
}

// Len is the number of rows in an epoch.
func (l *Loader) Len() int { return len(l.rows) }

// Epoch is the epoch of the next row (0 first).
func (l *Loader) Epoch() int { e, _ := l.o.at(); return e }

// Next returns the next b rows as a batch (see MakeBatch).
func (l *Loader) Next(b int) (model.Batch, error) {
	_, batch, err := l.NextRows(b)
	return batch, err
}

// NextRows is Next that also returns the batch's rows (for what they carry
// beside tokens, such as a sparse teacher: MakeTopK).
func (l *Loader) NextRows(b int) ([]Example, model.Batch, error) {
	if b <= 0 {
		return nil, model.Batch{}, fmt.Errorf("data: batch of %d rows", b)
	}
	rows := make([]Example, b)
	n := 0
	for i := range rows {
		rows[i] = l.rows[l.o.next()]
		n = max(n, len(rows[i].Tokens))
	}
	batch, err := MakeBatch(rows, l.cfg.PadID, l.cfg.padTo(n))
	return rows, batch, err
}

// State is the loader's position, for a checkpoint.
func (l *Loader) State() LoaderState { return l.o.state() }

// Restore moves the loader to a saved position: the following batches are
// those the saved loader would have served. The state's seed wins over the
// configured one. It fails when the rows differ from those of the saved
// loader.
func (l *Loader) Restore(s LoaderState) error { return l.o.restore(s) }

// MakeBatch lays rows out as a model.Batch: B = len(rows), T = the longest
// row (or fixedT when > 0); IDs are the tokens, padded on the right with
// padID; Targets[i] = Labels[i+1] within a row, IgnoreIndex at the row's last
// token and in the padding. Positions are left nil (0…T−1 in every row).
func MakeBatch(rows []Example, padID int32, fixedT int) (model.Batch, error) {
	if len(rows) == 0 {
		return model.Batch{}, errors.New("data: a batch needs at least one row")
	}
	T := 0
	for _, r := range rows {
		T = max(T, len(r.Tokens))
	}
	if fixedT > 0 {
		if T > fixedT {
			return model.Batch{}, fmt.Errorf("data: a row of %d tokens is longer than the fixed batch length %d", T, fixedT)
		}
		T = fixedT
	}
	if T == 0 {
		return model.Batch{}, errors.New("data: a batch of empty rows")
	}
	B := len(rows)
	bt := model.Batch{B: B, T: T, IDs: make([]int32, B*T), Targets: make([]int32, B*T)}
	for i, r := range rows {
		if len(r.Labels) != len(r.Tokens) {
			return model.Batch{}, fmt.Errorf("data: row %d has %d tokens and %d labels", i, len(r.Tokens), len(r.Labels))
		}
		ids, tg := bt.IDs[i*T:(i+1)*T], bt.Targets[i*T:(i+1)*T]
		n := copy(ids, r.Tokens)
		for j := n; j < T; j++ {
			ids[j] = padID
		}
		if n > 1 {
			copy(tg, r.Labels[1:n])
		}
		for j := max(n-1, 0); j < T; j++ {
			tg[j] = IgnoreIndex
		}
	}
	return bt, nil
}

// PairLoader serves batches of preference pairs in a deterministic order,
// as Loader does for SFT rows.
type PairLoader struct {
	pairs []Pair
	cfg   LoaderConfig
	o     order
}

// NewPairLoader makes a loader over pairs (which it does not copy or change).
func NewPairLoader(pairs []Pair, cfg LoaderConfig) (*PairLoader, error) {
	if len(pairs) == 0 {
		return nil, errors.New("data: a loader needs at least one pair")
	}
	for i, p := range pairs {
		if len(p.Chosen) == 0 || len(p.Rejected) == 0 {
			return nil, fmt.Errorf("data: pair %d has an empty response", i)
		}
		if n := len(p.Prompt) + max(len(p.Chosen), len(p.Rejected)); cfg.FixedT > 0 && n > cfg.FixedT {
			return nil, fmt.Errorf("data: pair %d has %d tokens, more than the fixed batch length %d", i, n, cfg.FixedT)
		}
	}
	if err := CheckBuckets(cfg.Buckets); err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	if cfg.PadID < 0 {
		return nil, fmt.Errorf("data: pad id %d", cfg.PadID)
	}
	l := &PairLoader{pairs: pairs, cfg: cfg}
	l.o = order{n: len(pairs), seed: cfg.Seed, noShuffle: cfg.NoShuffle}
	l.o.fp = fingerprint(func(yield func(t, l []int32)) {
		for _, p := range pairs {
			yield(p.Prompt, nil)
			yield(p.Chosen, p.Rejected)
		}
	})
	l.o.permute()
	return l, nil
}

// Len is the number of pairs in an epoch.
func (l *PairLoader) Len() int { return len(l.pairs) }

// Epoch is the epoch of the next pair (0 first).
func (l *PairLoader) Epoch() int { e, _ := l.o.at(); return e }

// Next returns the next p pairs as one batch of 2p rows (see MakePairBatch).
func (l *PairLoader) Next(p int) (model.Batch, error) {
	if p <= 0 {
		return model.Batch{}, fmt.Errorf("data: batch of %d pairs", p)
	}
	pairs := make([]Pair, p)
	n := 0
	for i := range pairs {
		pairs[i] = l.pairs[l.o.next()]
		n = max(n, len(pairs[i].Prompt)+max(len(pairs[i].Chosen), len(pairs[i].Rejected)))
	}
	return MakePairBatch(pairs, l.cfg.PadID, l.cfg.padTo(n))
}

// State is the loader's position, for a checkpoint.
func (l *PairLoader) State() LoaderState { return l.o.state() }

// Restore moves the loader to a saved position (see Loader.Restore).
func (l *PairLoader) Restore(s LoaderState) error { return l.o.restore(s) }

// MakePairBatch lays P pairs out as a batch of 2P rows: rows 0…P−1 are the
// chosen sequences (prompt + chosen) and rows P…2P−1 the rejected ones, the
// targets on the response tokens only — the layout of
// loss.ConcatPairLayout(P, T).
func MakePairBatch(pairs []Pair, padID int32, fixedT int) (model.Batch, error) {
	rows := make([]Example, 2*len(pairs))
	for i, p := range pairs {
		rows[i] = p.ChosenExample()
		rows[len(pairs)+i] = p.RejectedExample()
	}
	return MakeBatch(rows, padID, fixedT)
}
