package loss

import (
	"fmt"
	"math"

	kdrt "github.com/kdnative/kdnative/runtime"
)

// Sums are loss values kept on the device until the caller reads them all
// with one download: a fused loss given Options.Sums adds each chunk's
// per-row losses into a slot there (Backend.AddSum) instead of reading them
// back chunk by chunk, and returns its value as NaN, to be had from
// Deferred once Read has run. A trainer makes one Sums, Resets it at the
// start of each optimizer step and Reads it once at the end, together with
// the gradient norm (Head), so that a step's progress line costs one host
// round-trip.
//
// On the device the values are float64 (pairs of F32 elements), and each
// loss's arithmetic on them is the one it does without Sums: on the CPU the
// values are the same to the last bit.
type Sums struct {
	be    kdrt.Backend
	t     *kdrt.Tensor // F32 [2·(1+cap)]: the head value, then a float64 per slot
	cap   int
	slots []deferredSlot
	host  []float32
	read  bool
}

// deferredSlot is how a slot's sum becomes its loss value: mul·sum/div.
type deferredSlot struct{ mul, div float64 }

// NewSums allocates room for capacity loss values.
func NewSums(be kdrt.Backend, capacity int) (*Sums, error) {
	if capacity < 1 {
		return nil, fmt.Errorf("loss: sums of capacity %d", capacity)
	}
	t, err := be.Alloc("loss.sums", kdrt.F32, 2*(1+capacity))
	if err != nil {
		return nil, err
	}
	return &Sums{be: be, t: t, cap: capacity, host: make([]float32, 2*(1+capacity))}, nil
}

// Reset empties the sums (one memset on the device) for a new step.
func (s *Sums) Reset() {
	s.be.Zero(s.t)
	s.slots, s.read = s.slots[:0], false
}

// Head is an F32 [1] tensor read with the sums: a step's gradient norm
// (optim.AdamW.Launch writes it there).
func (s *Sums) Head() *kdrt.Tensor { return s.be.Slice(s.t, 0, 1) }

// Read downloads every value (one host round-trip) and returns Head's. Its
// error is the first device error of the work before it.
func (s *Sums) Read() (head float32, err error) {
	if err := s.be.Download(s.t, s.host); err != nil {
		return 0, err
	}
	s.read = true
	return s.host[0], nil
}

// Last is the value the latest loss given these sums added.
func (s *Sums) Last() Deferred {
	if len(s.slots) == 0 {
		panic("loss: Sums.Last before any loss added to them")
	}
	return Deferred{s: s, slot: len(s.slots)}
}

// Free releases the device memory.
func (s *Sums) Free() {
	if s.t != nil {
		s.be.Free(s.t)
		s.t = nil
	}
}

// open takes the next slot for a loss whose value is mul·sum/div; the
// losses then AddSum into acc at the returned index.
func (s *Sums) open(mul, div float64) (int, error) {
	if len(s.slots) == s.cap {
		return 0, fmt.Errorf("loss: the device sums hold %d values and are full (Reset them each step)", s.cap)
	}
	s.slots = append(s.slots, deferredSlot{mul, div})
	return len(s.slots), nil // slot 0 is the head
}

// Deferred is a loss value on the device, in a slot of a Sums.
type Deferred struct {
	s    *Sums
	slot int
}

// Value is the loss once its Sums were Read (NaN before).
func (d Deferred) Value() float64 {
	if d.s == nil || !d.s.read {
		return math.NaN()
	}
	f := d.s.slots[d.slot-1]
	return f.mul * kdrt.Float64At(d.s.host, d.slot) / f.div
}

// lossSums are where a loss call adds its chunks' sums: the caller's Sums,
// or (without one) its own, read when the call ends.
type lossSums struct {
	s    *Sums
	own  bool
	slot int
}

func openSums(be kdrt.Backend, opt Options, mul, div float64) (*lossSums, error) {
	l := &lossSums{s: opt.Sums}
	if l.s == nil {
		var err error
		if l.s, err = NewSums(be, 1); err != nil {
			return nil, err
		}
		l.own = true
	}
	var err error
	if l.slot, err = l.s.open(mul, div); err != nil {
		return nil, err
	}
	return l, nil
}

// add adds Σ losses to the call's slot.
func (l *lossSums) add(be kdrt.Backend, losses *kdrt.Tensor) { be.AddSum(l.s.t, l.slot, losses) }

// finish ends the call: with the caller's Sums the value is NaN (the
// caller reads it later) and only errors recorded so far are returned;
// with its own it is read now.
func (l *lossSums) finish(be kdrt.Backend) (float64, error) {
	if !l.own {
		return math.NaN(), kdrt.Check(be)
	}
	if _, err := l.s.Read(); err != nil {
		return 0, err
	}
	return l.s.Last().Value(), nil
}

// close frees the call's own sums (not the caller's).
func (l *lossSums) close() {
	if l.own {
		l.s.Free()
	}
}
