package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/kdnative/kdnative/kd/data"
)

// Entry is one example's cached teacher: the top-k of every position (as
// data.TopK: K, IDs and LogProbs [positions·K], Has [positions]) and Tail,
// per position the log of the probability mass outside the top-k.
//
// Given to Add, Tail may be nil: it is then log(1 − Σ exp(LogProbs)) of each
// position, −Inf where the sum is within float32 rounding of 1 (K·2⁻²³) or
// above. Read back, a position's
// entries come sorted by decreasing log-probability (ties by increasing id),
// their log-probabilities and its Tail on the grid of the cache's
// Quantization (FORMAT.md gives the bounds); positions without a teacher
// (Has false) read back as zeros, as data's parser leaves them.
type Entry struct {
	TopK data.TopK
	Tail []float32
}

// Quantization is how log-probabilities are stored: on a grid of step Step
// nats from 0 down to −Knee, and of step TailStep below, down to −Floor.
// Each value is stored as its nearest grid point (FORMAT.md gives the
// bounds). Steps are powers of two from 2⁻¹² to 4, TailStep ≥ Step, and
// Knee a multiple of TailStep, so that every grid point is exact in float32
// and −Floor is one; Knee 0 means Floor and TailStep 0 means Step: one
// uniform grid.
type Quantization struct {
	Step     float64 `json:"step"`
	Knee     float64 `json:"knee,omitempty"`
	TailStep float64 `json:"tail_step,omitempty"`
}

// The quantizations measured in FORMAT.md. DefaultQuantization, what a zero
// WriterOptions gets, keeps log-probabilities down to −6 (p ≥ 0.25%) within
// 1/64 nat and those below within 1/16; FineQuantization is within 1/512
// everywhere (about 20% larger); CompactQuantization within 1/64 down to −4
// and 1/8 below (about 5% smaller).
var (
	DefaultQuantization = Quantization{Step: 1.0 / 32, Knee: 6, TailStep: 1.0 / 8}
	FineQuantization    = Quantization{Step: 1.0 / 256}
	CompactQuantization = Quantization{Step: 1.0 / 32, Knee: 4, TailStep: 1.0 / 4}
)

// Floor (nats) is the lowest stored finite log-probability: anything below
// −Floor (probability < 3·10⁻⁵⁶, 0 in float32) is stored as −Floor.
const Floor = 128.0

// maxPositive is how far above 0 a log-probability may be (rounding in the
// teacher) and still be taken as 0.
const maxPositive = 1e-3

// maxPositions bounds an example's positions (the fuzz test lowers it).
var maxPositions = 1 << 24

// maxExcess is how far above 1 a position's top-k probabilities may sum
// (rounded teacher output, as data and the losses allow) before Add refuses
// it.
const maxExcess = 1e-3

// quantizer maps log-probabilities x to codes c, increasing as x falls:
// c = −x/Step down to −Knee (kneeCode), then kneeCode + (−x − Knee)/TailStep,
// clamped at maxCode (−Floor); infCode stands for −Inf.
type quantizer struct {
	Quantization
	kneeCode, maxCode, infCode uint64
	probs                      []float64 // prob(c) for c ≤ maxCode, filled by the encoder
}

func powerOfTwo(x float64) bool {
	frac, exp := math.Frexp(x)
	return frac == 0.5 && exp-1 >= -12 && exp-1 <= 2
}

func newQuantizer(qz Quantization) (quantizer, error) {
	if qz.Knee == 0 {
		qz.Knee = Floor
	}
	if qz.TailStep == 0 {
		qz.TailStep = qz.Step
	}
	if !powerOfTwo(qz.Step) || !powerOfTwo(qz.TailStep) {
		return quantizer{}, fmt.Errorf("teacher cache: quantization steps %g and %g must be powers of two from 2⁻¹² to 4", qz.Step, qz.TailStep)
	}
	if qz.TailStep < qz.Step || !(qz.Knee > 0 && qz.Knee <= Floor) || math.Mod(qz.Knee, qz.TailStep) != 0 {
		return quantizer{}, fmt.Errorf("teacher cache: quantization %+v: the tail step must be at least the step, and the knee a multiple of the tail step in (0, %g]", qz, Floor)
	}
	q := quantizer{Quantization: qz, kneeCode: uint64(qz.Knee / qz.Step)}
	q.maxCode = q.kneeCode + uint64((Floor-qz.Knee)/qz.TailStep)
	q.infCode = q.maxCode + 1
	return q, nil
}

// code is the code of x (≤ 0 or −Inf): the nearest grid point, or with
// down the highest one at or below x.
func (q quantizer) code(x float64, down bool) uint64 {
	if math.IsInf(x, -1) {
		return q.infCode
	}
	round := math.Round
	if down {
		round = math.Ceil
	}
	y := -x
	var c float64
	if y <= q.Knee {
		c = round(y / q.Step)
	} else {
		c = float64(q.kneeCode) + round((y-q.Knee)/q.TailStep)
	}
	if c >= float64(q.maxCode) {
		return q.maxCode
	}
	return uint64(c)
}

func (q quantizer) nearest(x float64) uint64 { return q.code(x, false) }

func (q quantizer) down(x float64) uint64 { return q.code(x, true) }

// value is the log-probability of code c (exact in float32).
func (q quantizer) value(c uint64) float32 {
	switch {
	case c >= q.infCode:
		return float32(math.Inf(-1))
	case c <= q.kneeCode:
		return float32(-float64(c) * q.Step)
	default:
		return float32(-(q.Knee + float64(c-q.kneeCode)*q.TailStep))
	}
}

// prob is exp(value(c)) in float64, as a consumer summing float32
// log-probabilities in float64 computes it.
func (q quantizer) prob(c uint64) float64 {
	if c >= q.infCode {
		return 0
	}
	if c < uint64(len(q.probs)) {
		return q.probs[c]
	}
	return math.Exp(float64(q.value(c)))
}

// withProbs tabulates prob.
func (q quantizer) withProbs() quantizer {
	q.probs = make([]float64, q.maxCode+1)
	for c := range q.probs {
		q.probs[c] = math.Exp(float64(q.value(uint64(c))))
	}
	return q
}

// The streams of a block (FORMAT.md): each is compressed on its own.
const (
	sMeta = iota // per example: positions, has-runs, its bytes in each other stream
	sCode        // per entry: code delta from the previous entry of the position
	sTie         // per entry tied with the previous one: id gap
	sID          // per other entry: the id
	sTail        // per position with a teacher: the tail's code
	nStreams
)

// encoder turns entries into the streams of a block.
type encoder struct {
	q        quantizer
	k, vocab int
	s        [nStreams][]byte
	keys     []uint64
	stamp    []uint32 // per id: the position that last used it (duplicate check)
	gen      uint32
	floored  int64 // positions stored rounded down (their nearest rounding summed above 1)
}

// add appends one example to the streams and returns its positions and
// those with a teacher. On error the streams are left as they were.
func (e *encoder) add(index int, en Entry) (pos, tpos int, err error) {
	t := &en.TopK
	L := len(t.Has)
	K := e.k
	switch {
	case !slices.Contains(t.Has, true) && (len(t.IDs) == 0 || len(t.IDs) == L*t.K) && (len(t.LogProbs) == 0 || len(t.LogProbs) == L*t.K):
		// an example without any teacher position: nothing to store but Has
	case t.K != K:
		return 0, 0, fmt.Errorf("teacher cache: example %d has k = %d, the cache %d", index, t.K, K)
	case len(t.IDs) != L*K || len(t.LogProbs) != L*K:
		return 0, 0, fmt.Errorf("teacher cache: example %d has %d ids and %d log-probabilities for %d positions of k = %d", index, len(t.IDs), len(t.LogProbs), L, K)
	}
	if en.Tail != nil && len(en.Tail) != L {
		return 0, 0, fmt.Errorf("teacher cache: example %d has %d tail entries for %d positions", index, len(en.Tail), L)
	}
	if L > maxPositions {
		return 0, 0, fmt.Errorf("teacher cache: example %d has %d positions, more than %d", index, L, maxPositions)
	}
	if e.stamp == nil {
		e.stamp = make([]uint32, e.vocab)
	}
	var saved [nStreams]int
	for i := range e.s {
		saved[i] = len(e.s[i])
	}
	fail := func(err error) (int, int, error) {
		for i := range e.s {
			e.s[i] = e.s[i][:saved[i]]
		}
		return 0, 0, err
	}
	floored := 0
	for i := range L {
		if !t.Has[i] {
			continue
		}
		tpos++
		e.gen++
		if e.gen == 0 { // wrapped: forget every stamp
			clear(e.stamp)
			e.gen = 1
		}
		e.keys = e.keys[:0]
		var massIn, massQ float64
		for j := range K {
			id, lp := t.IDs[i*K+j], float64(t.LogProbs[i*K+j])
			if id < 0 || int(id) >= e.vocab {
				return fail(fmt.Errorf("teacher cache: example %d, position %d: id %d is outside the vocabulary [0, %d)", index, i, id, e.vocab))
			}
			if e.stamp[id] == e.gen {
				return fail(fmt.Errorf("teacher cache: example %d, position %d repeats id %d", index, i, id))
			}
			e.stamp[id] = e.gen
			if math.IsNaN(lp) || lp > maxPositive {
				return fail(fmt.Errorf("teacher cache: example %d, position %d: %g is not a log-probability (must be ≤ 0)", index, i, lp))
			}
			lp = min(lp, 0)
			massIn += math.Exp(lp)
			c := e.q.nearest(lp)
			massQ += e.q.prob(c)
			e.keys = append(e.keys, c<<32|uint64(id))
		}
		if massIn > 1+maxExcess {
			return fail(fmt.Errorf("teacher cache: example %d, position %d: top-k probabilities sum to %.6f, more than 1", index, i, massIn))
		}
		if massQ > 1 {
			// Rounded to nearest, the top-k would hold more than all the
			// mass: round this position down instead, and if the input
			// itself sums above 1, lower its most probable entries.
			floored++
			massQ = 0
			for j := range e.keys {
				c := e.q.down(min(float64(t.LogProbs[i*K+j]), 0))
				e.keys[j] = c<<32 | e.keys[j]&math.MaxUint32
				massQ += e.q.prob(c)
			}
			for massQ > 1 {
				slices.Sort(e.keys)
				c := e.keys[0] >> 32
				if c >= e.q.maxCode {
					break
				}
				massQ += e.q.prob(c+1) - e.q.prob(c)
				e.keys[0] += 1 << 32
			}
		}
		slices.Sort(e.keys)
		var prev uint64
		var prevID uint32
		for j, key := range e.keys {
			c, id := key>>32, uint32(key)
			d := c - prev
			e.s[sCode] = binary.AppendUvarint(e.s[sCode], d)
			if j > 0 && d == 0 {
				e.s[sTie] = binary.AppendUvarint(e.s[sTie], uint64(id-prevID-1))
			} else {
				e.s[sID] = binary.AppendUvarint(e.s[sID], uint64(id))
			}
			prev, prevID = c, id
		}
		var tail float64
		if en.Tail != nil {
			tail = float64(en.Tail[i])
			if math.IsNaN(tail) || tail > maxPositive {
				return fail(fmt.Errorf("teacher cache: example %d, position %d: tail %g is not a log-probability (must be ≤ 0)", index, i, tail))
			}
			tail = min(tail, 0)
		} else if massIn < 1-float64(K)/(1<<23) {
			tail = math.Log1p(-massIn)
		} else {
			tail = math.Inf(-1)
		}
		e.s[sTail] = binary.AppendUvarint(e.s[sTail], e.q.nearest(tail))
	}
	// Meta: positions, the has-runs (alternating, starting with a run
	// without a teacher, which may be empty), then the example's bytes in
	// the other streams.
	m := binary.AppendUvarint(e.s[sMeta], uint64(L))
	var runs []uint64
	cur, n := false, uint64(0)
	for _, h := range t.Has {
		if h != cur {
			runs = append(runs, n)
			cur, n = h, 0
		}
		n++
	}
	if L > 0 {
		runs = append(runs, n)
	}
	m = binary.AppendUvarint(m, uint64(len(runs)))
	for _, r := range runs {
		m = binary.AppendUvarint(m, r)
	}
	for s := sCode; s < nStreams; s++ {
		m = binary.AppendUvarint(m, uint64(len(e.s[s])-saved[s]))
	}
	e.s[sMeta] = m
	e.floored += int64(floored)
	return L, tpos, nil
}

func (e *encoder) reset() {
	for i := range e.s {
		e.s[i] = e.s[i][:0]
	}
}

// errBlock is a block whose bytes pass their checksum but do not decode;
// the reader wraps it with the file, block and example.
var errBlock = errors.New("malformed")

// byteReader reads uvarints from one stream segment.
type byteReader struct {
	b   []byte
	off int
}

func (r *byteReader) uvarint() (uint64, error) {
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		return 0, fmt.Errorf("%w: stream ends or overflows at byte %d", errBlock, r.off)
	}
	r.off += n
	return v, nil
}

// exampleMeta is one example's entry in the meta stream.
type exampleMeta struct {
	L    int
	runs []uint64
	seg  [nStreams]int // bytes in each stream (sMeta unused)
}

// readMeta reads the next example's meta, with at most maxPos positions.
func readMeta(r *byteReader, maxPos int) (exampleMeta, error) {
	var m exampleMeta
	L, err := r.uvarint()
	if err != nil {
		return m, err
	}
	if L > uint64(maxPos) || L > uint64(maxPositions) {
		return m, fmt.Errorf("%w: an example of %d positions in a block of %d", errBlock, L, maxPos)
	}
	m.L = int(L)
	nr, err := r.uvarint()
	if err != nil {
		return m, err
	}
	if nr > L+1 || (L > 0 && nr == 0) {
		return m, fmt.Errorf("%w: %d has-runs for %d positions", errBlock, nr, L)
	}
	m.runs = make([]uint64, nr)
	var sum uint64
	for i := range m.runs {
		v, err := r.uvarint()
		if err != nil {
			return m, err
		}
		if v > L-sum {
			return m, fmt.Errorf("%w: has-runs longer than the example's %d positions", errBlock, L)
		}
		sum += v
		m.runs[i] = v
	}
	if sum != L {
		return m, fmt.Errorf("%w: has-runs cover %d of %d positions", errBlock, sum, L)
	}
	for s := sCode; s < nStreams; s++ {
		v, err := r.uvarint()
		if err != nil {
			return m, err
		}
		if v > math.MaxInt32 {
			return m, fmt.Errorf("%w: segment of %d bytes", errBlock, v)
		}
		m.seg[s] = int(v)
	}
	return m, nil
}

// decodeExample decodes example j of a block's decompressed streams, which
// hold n examples and pos positions.
func decodeExample(q quantizer, K, vocab int, streams *[nStreams][]byte, n, j, pos int) (Entry, error) {
	meta := &byteReader{b: streams[sMeta]}
	var off [nStreams]int
	var m exampleMeta
	left := pos
	for i := 0; i <= j; i++ {
		var err error
		m, err = readMeta(meta, left)
		if err != nil {
			return Entry{}, err
		}
		left -= m.L
		if i < j {
			for s := sCode; s < nStreams; s++ {
				off[s] += m.seg[s]
			}
		}
	}
	var seg [nStreams]byteReader
	for s := sCode; s < nStreams; s++ {
		if off[s]+m.seg[s] > len(streams[s]) || off[s]+m.seg[s] < off[s] {
			return Entry{}, fmt.Errorf("%w: example's stream %d segment [%d, %d) beyond its %d bytes", errBlock, s, off[s], off[s]+m.seg[s], len(streams[s]))
		}
		seg[s] = byteReader{b: streams[s][off[s] : off[s]+m.seg[s]]}
	}
	L := m.L
	var tpos int
	for i, r := range m.runs {
		if i%2 == 1 {
			tpos += int(r)
		}
	}
	// Every entry takes at least one byte of the code stream: check before
	// allocating.
	if tpos*K > m.seg[sCode] || tpos > m.seg[sTail] {
		return Entry{}, fmt.Errorf("%w: %d positions with a teacher in %d code bytes", errBlock, tpos, m.seg[sCode])
	}
	if L*K/K != L || L*K > 1<<31 {
		return Entry{}, fmt.Errorf("%w: example of %d positions", errBlock, L)
	}
	e := Entry{
		TopK: data.TopK{K: K, IDs: make([]int32, L*K), LogProbs: make([]float32, L*K), Has: make([]bool, L)},
		Tail: make([]float32, L),
	}
	i := 0
	for ri, r := range m.runs {
		has := ri%2 == 1
		for range r {
			if has {
				e.TopK.Has[i] = true
				var c, prevID uint64
				for k := range K {
					d, err := seg[sCode].uvarint()
					if err != nil {
						return Entry{}, err
					}
					c += d
					if c > q.infCode {
						return Entry{}, fmt.Errorf("%w: code %d beyond %d at position %d", errBlock, c, q.infCode, i)
					}
					var id uint64
					if k > 0 && d == 0 {
						g, err := seg[sTie].uvarint()
						if err != nil {
							return Entry{}, err
						}
						id = prevID + 1 + g
						if g >= uint64(vocab) {
							id = uint64(vocab)
						}
					} else {
						id, err = seg[sID].uvarint()
						if err != nil {
							return Entry{}, err
						}
					}
					if id >= uint64(vocab) {
						return Entry{}, fmt.Errorf("%w: id %d outside the vocabulary at position %d", errBlock, id, i)
					}
					e.TopK.IDs[i*K+k] = int32(id)
					e.TopK.LogProbs[i*K+k] = q.value(c)
					prevID = id
				}
				tc, err := seg[sTail].uvarint()
				if err != nil {
					return Entry{}, err
				}
				if tc > q.infCode {
					return Entry{}, fmt.Errorf("%w: tail code %d beyond %d at position %d", errBlock, tc, q.infCode, i)
				}
				e.Tail[i] = q.value(tc)
			}
			i++
		}
	}
	for s := sCode; s < nStreams; s++ {
		if seg[s].off != len(seg[s].b) {
			return Entry{}, fmt.Errorf("%w: %d bytes left over in stream %d", errBlock, len(seg[s].b)-seg[s].off, s)
		}
	}
	return e, nil
}
