// Package plan is a memory planner: a runtime.Backend whose tensors have no
// memory and whose ops do nothing but check their operands. Running a
// model's real setup and training step through it records every allocation
// the step makes — sized as the CUDA caching allocator sizes it
// (runtime/cachealloc), or exactly as the CPU backend does — and reports the
// peak, with what each category of tensor held at that moment. Because the
// plan is the run's own allocation code, it follows every change to what the
// model, the losses or the optimizer allocate; there is no formula to keep
// in step.
//
// Categories come from who allocates (the Role of the view a model was
// given: the student, a frozen teacher or reference, or the step's own code)
// and what the driver is doing (the Phase: building models, their
// gradients, the optimizer, or running the step), refined by a few tensor
// names: "master." weights, "loss." chunks, the student's "grad." backward
// scratch and its [N × V] "logits".
//
// Ops check that their tensors are live (a use after Free panics, naming
// the tensor) and that their shapes agree, as the CPU backend does; they
// compute nothing. Downloads give back what was uploaded (the checks some
// losses make of their inputs read them), else zeros; SumSquares gives 0. A method of
// runtime.Backend that the planner does not define is promoted from the
// embedded nil interface (so that the package builds when the interface
// grows) and panics; Run turns that panic into an error, and
// TestDefinesEveryBackendMethod names the method.
package plan

import (
	"fmt"
	"math"
	goruntime "runtime"
	"slices"
	"strings"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cachealloc"
)

// Category is what a tensor is for.
type Category int

// The categories of a plan, in the order reports list them.
const (
	Weights Category = iota
	MasterWeights
	Gradients
	Moments
	Activations
	Logits
	TeacherWeights
	TeacherActivations
	LossChunks
	Workspace
	NumCategories
)

var categoryNames = [NumCategories]string{
	"weights", "master weights", "gradients", "optimizer moments", "activations kept for backward",
	"logits [N × V] and their gradient", "teacher weights", "teacher forward", "loss chunks", "workspace",
}

var categoryKeys = [NumCategories]string{
	"weights", "master_weights", "gradients", "optimizer_moments", "activations",
	"logits", "teacher_weights", "teacher_forward", "loss_chunks", "workspace",
}

// String is the category for people: "optimizer moments".
func (c Category) String() string { return categoryNames[c] }

// Key is the category's JSON key: "optimizer_moments".
func (c Category) Key() string { return categoryKeys[c] }

// Role is who allocates through a view of the planner.
type Role int

const (
	// Step is the training step's own code: the trainer, the losses, the
	// optimizer.
	Step Role = iota
	// Student is the model being trained.
	Student
	// Frozen is a model run without gradients: an online teacher, DPO's
	// reference.
	Frozen
)

var roleNames = []string{"step", "student", "teacher"}

func (r Role) String() string { return roleNames[r] }

// Phase is what the code driving the plan is doing.
type Phase int

const (
	// PhaseStep runs a training step.
	PhaseStep Phase = iota
	// PhaseModel builds models (their weights).
	PhaseModel
	// PhaseGradients allocates the student's gradients.
	PhaseGradients
	// PhaseOptimizer builds the optimizer (its moments).
	PhaseOptimizer
)

// category classifies an allocation. The rules are few on purpose: role and
// phase say most, and a renamed tensor at worst lands in a neighbouring
// category of the same role.
func category(role Role, phase Phase, name string) Category {
	switch {
	case strings.HasPrefix(name, "master."), strings.Contains(name, ".master."):
		return MasterWeights
	case role == Frozen && phase == PhaseModel:
		return TeacherWeights
	case role == Frozen:
		return TeacherActivations
	case phase == PhaseModel:
		return Weights
	case phase == PhaseGradients:
		return Gradients
	case phase == PhaseOptimizer:
		return Moments
	case strings.HasPrefix(name, "loss."), strings.HasPrefix(name, "teacher.topk."):
		return LossChunks
	case role == Student && (name == "logits" || name == "grad.logits" || strings.HasPrefix(name, "grad.logits.") || name == "losses" || name == "targets"):
		return Logits
	case role == Student && !strings.HasPrefix(name, "grad."):
		return Activations
	}
	return Workspace
}

// Options configure a planner.
type Options struct {
	// Exact counts each tensor's own bytes, as the CPU backend allocates
	// them; otherwise allocations go through the CUDA caching allocator's
	// policy (runtime/cachealloc): blocks rounded up and carved from
	// segments, as the device would hold them.
	Exact bool
}

// Backend is the planner. Use View to give each model its role.
type Backend struct {
	kdrt.Backend // nil: see the package comment

	opt   Options
	alloc *cachealloc.Allocator
	phase Phase
	views [3]*view

	inUse, peak uint64
	byCat       [NumCategories]uint64
	peakCat     [NumCategories]uint64
	groups      map[groupKey]groupVal // live tensors by role and name
	peakGroups  map[groupKey]groupVal
	allocs      int
}

type groupKey struct {
	role Role
	name string
}

type groupVal struct{ count, bytes uint64 }

// mem is a planned tensor's storage. A view (Slice) points to its root.
type mem struct {
	b     *Backend
	root  *mem // nil for a root
	off   int  // a view's first element in its root
	size  uint64
	elems int // a root's element count
	cat   Category
	key   groupKey
	block *cachealloc.Block
	freed bool
	// Host values uploaded to a root (up to maxKeptUpload bytes), which
	// downloads give back: a loss that checks its inputs (distinct top-k
	// ids) reads back what was uploaded.
	f []float32
	i []int32
}

// maxKeptUpload bounds the values a root keeps from uploads: the checks
// that read them back read ids and small per-row tensors, not weights.
const maxKeptUpload = 64 << 20

func (m *mem) Backend() kdrt.Backend { return m.b }

// New returns an empty planner.
func New(opt Options) *Backend {
	b := &Backend{opt: opt, groups: map[groupKey]groupVal{}, peakGroups: map[groupKey]groupVal{}}
	if !opt.Exact {
		b.alloc = cachealloc.New(&cachealloc.Virtual{}, cachealloc.Options{})
	}
	for r := range b.views {
		b.views[r] = &view{Backend: b, role: Role(r)}
	}
	return b
}

// View returns the planner as seen by role r: what is allocated through it
// is counted in r's categories.
func (b *Backend) View(r Role) kdrt.Backend { return b.views[r] }

// SetPhase says what the driver does next.
func (b *Backend) SetPhase(p Phase) { b.phase = p }

// Rounding says how the planner sizes allocations.
func (b *Backend) Rounding() string {
	if b.opt.Exact {
		return "exact tensor bytes (the CPU backend's)"
	}
	return cachealloc.Rounding
}

// view is the planner seen by one role.
type view struct {
	*Backend
	role Role
}

// Alloc implements runtime.Backend for the role.
func (v *view) Alloc(name string, dt kdrt.DType, shape ...int) (*kdrt.Tensor, error) {
	return v.Backend.alloc1(v.role, name, dt, shape)
}

// Name implements runtime.Backend.
func (b *Backend) Name() string { return "plan" }

// Describe implements runtime.Backend.
func (b *Backend) Describe() string { return "memory plan (" + b.Rounding() + ")" }

// Alloc implements runtime.Backend: the step's own allocations.
func (b *Backend) Alloc(name string, dt kdrt.DType, shape ...int) (*kdrt.Tensor, error) {
	return b.alloc1(Step, name, dt, shape)
}

func (b *Backend) alloc1(role Role, name string, dt kdrt.DType, shape []int) (*kdrt.Tensor, error) {
	t := &kdrt.Tensor{Shape: append([]int(nil), shape...), DType: dt, Name: name}
	n, err := kdrt.TensorBytes(dt, shape...)
	if err != nil {
		return nil, fmt.Errorf("plan: alloc %v: %w", t, err)
	}
	m := &mem{b: b, size: uint64(n), elems: int(n) / max(dt.Size(), 1), cat: category(role, b.phase, name), key: groupKey{role, name}}
	if b.alloc != nil {
		blk, err := b.alloc.Alloc(uint64(n))
		if err != nil {
			return nil, fmt.Errorf("plan: alloc %v: %w", t, err)
		}
		m.block, m.size = blk, blk.Size
	}
	b.allocs++
	b.inUse += m.size
	b.byCat[m.cat] += m.size
	g := b.groups[m.key]
	g.count++
	g.bytes += m.size
	b.groups[m.key] = g
	if b.inUse > b.peak {
		b.peak = b.inUse
		b.peakCat = b.byCat
		clear(b.peakGroups)
		for k, g := range b.groups {
			if g.count > 0 {
				b.peakGroups[k] = g
			}
		}
	}
	t.Storage = m
	return t, nil
}

// Free implements runtime.Backend. Freeing a view frees nothing.
func (b *Backend) Free(t *kdrt.Tensor) {
	if t == nil || t.Storage == nil {
		return
	}
	m := b.mem("free", t)
	t.Storage = nil
	if m.root != nil {
		return
	}
	m.freed = true
	g := b.groups[m.key]
	g.count--
	g.bytes -= m.size
	b.groups[m.key] = g
	b.inUse -= m.size
	b.byCat[m.cat] -= m.size
	if m.block != nil {
		b.alloc.Free(m.block)
	}
}

// mem returns t's storage, panicking (as a backend does on a programming
// error) when t is not a live tensor of this planner.
func (b *Backend) mem(op string, t *kdrt.Tensor) *mem {
	if t == nil {
		panic(fmt.Sprintf("plan: %s: a nil tensor", op))
	}
	m, ok := t.Storage.(*mem)
	if !ok || m == nil || m.b != b {
		panic(fmt.Sprintf("plan: %s: %v is not a tensor of this plan (storage %T)", op, t, t.Storage))
	}
	r := m
	if m.root != nil {
		r = m.root
	}
	if r.freed {
		panic(fmt.Sprintf("plan: %s: %v is used after it was freed", op, t))
	}
	return m
}

// use checks that every non-nil tensor is live.
func (b *Backend) use(op string, ts ...*kdrt.Tensor) {
	for _, t := range ts {
		if t != nil {
			b.mem(op, t)
		}
	}
}

// Slice implements runtime.Backend.
func (b *Backend) Slice(t *kdrt.Tensor, start, end int) *kdrt.Tensor {
	m := b.mem("slice", t)
	C, rows := t.Cols(), t.Rows()
	if len(t.Shape) == 1 {
		C, rows = 1, t.Shape[0]
	}
	if start < 0 || end > rows || start > end {
		panic(fmt.Sprintf("plan: slice rows [%d, %d) of %v", start, end, t))
	}
	root := m
	if m.root != nil {
		root = m.root
	}
	shape := []int{end - start, C}
	if len(t.Shape) == 1 {
		shape = []int{end - start}
	}
	return &kdrt.Tensor{Shape: shape, DType: t.DType, Name: fmt.Sprintf("%s[%d:%d]", t.Name, start, end),
		Storage: &mem{b: b, root: root, off: m.off + start*C, cat: root.cat, key: root.key}}
}

// Upload implements runtime.Backend: the values are kept (up to
// maxKeptUpload bytes a tensor) for downloads to give back.
func (b *Backend) Upload(dst *kdrt.Tensor, src []float32) error {
	if err := b.transfer("upload", dst, len(src), dst.DType != kdrt.I32); err != nil {
		return err
	}
	if r, off := b.root(dst); r.elems*4 <= maxKeptUpload {
		if r.f == nil {
			r.f = make([]float32, r.elems)
		}
		copy(r.f[off:], src)
	}
	return nil
}

// UploadInt32 implements runtime.Backend, as Upload.
func (b *Backend) UploadInt32(dst *kdrt.Tensor, src []int32) error {
	if err := b.transfer("upload", dst, len(src), dst.DType == kdrt.I32); err != nil {
		return err
	}
	if r, off := b.root(dst); r.elems*4 <= maxKeptUpload {
		if r.i == nil {
			r.i = make([]int32, r.elems)
		}
		copy(r.i[off:], src)
	}
	return nil
}

// Download implements runtime.Backend: what was uploaded to those elements,
// else zeros (no op computes anything).
func (b *Backend) Download(src *kdrt.Tensor, dst []float32) error {
	clear(dst)
	if err := b.transfer("download", src, len(dst), src.DType != kdrt.I32); err != nil {
		return err
	}
	if r, off := b.root(src); r.f != nil {
		copy(dst, r.f[off:])
	}
	return nil
}

// DownloadInt32 implements runtime.Backend, as Download.
func (b *Backend) DownloadInt32(src *kdrt.Tensor, dst []int32) error {
	clear(dst)
	if err := b.transfer("download", src, len(dst), src.DType == kdrt.I32); err != nil {
		return err
	}
	if r, off := b.root(src); r.i != nil {
		copy(dst, r.i[off:])
	}
	return nil
}

// root is t's root storage and t's first element in it.
func (b *Backend) root(t *kdrt.Tensor) (*mem, int) {
	m := b.mem("transfer", t)
	if m.root != nil {
		return m.root, m.off
	}
	return m, 0
}

func (b *Backend) transfer(op string, t *kdrt.Tensor, n int, dtOK bool) error {
	b.mem(op, t)
	if n != t.Numel() {
		return fmt.Errorf("plan: %s %v: %d host values for %d elements", op, t, n, t.Numel())
	}
	if !dtOK {
		return fmt.Errorf("plan: %s %v: wrong dtype for the host values", op, t)
	}
	return nil
}

// Zero implements runtime.Backend.
func (b *Backend) Zero(t *kdrt.Tensor) { b.use("zero", t) }

// Copy implements runtime.Backend.
func (b *Backend) Copy(dst, src *kdrt.Tensor) {
	b.use("copy", dst, src)
	if dst.Numel() != src.Numel() || dst.DType != src.DType {
		panic(fmt.Sprintf("plan: copy %v from %v: sizes or dtypes differ", dst, src))
	}
}

// Sync implements runtime.Backend.
func (b *Backend) Sync() error { return nil }

// Report is a plan's result.
type Report struct {
	// Rounding says how sizes were counted.
	Rounding string
	// PeakBytes is the most bytes the live tensors held at once, and
	// Breakdown what each category held at that moment.
	PeakBytes uint64
	Breakdown [NumCategories]uint64
	// FinalBytes is what is still held at the end (the run's steady state
	// between steps).
	FinalBytes uint64
	// PeakReserved is the most the caching allocator took from the driver
	// (its segments; 0 for an exact plan); Segments the driver allocations
	// it made.
	PeakReserved uint64
	Segments     uint64
	// Allocations counts the tensors allocated.
	Allocations int
	// Tensors are the tensors live at the peak, grouped by role and name,
	// largest first; Held those live at the end.
	Tensors, Held []TensorGroup
}

// TensorGroup is the tensors of one name, allocated by one role, live at
// the peak.
type TensorGroup struct {
	Role  Role
	Name  string
	Count uint64
	Bytes uint64
}

// Report returns what was planned so far.
func (b *Backend) Report() Report {
	r := Report{Rounding: b.Rounding(), PeakBytes: b.peak, Breakdown: b.peakCat, FinalBytes: b.inUse, Allocations: b.allocs}
	if b.alloc != nil {
		s := b.alloc.Stats()
		r.PeakReserved, r.Segments = s.PeakReserved, s.DriverAllocs
	}
	r.Tensors, r.Held = groups(b.peakGroups), groups(b.groups)
	return r
}

// groups lists the non-empty groups, largest first.
func groups(m map[groupKey]groupVal) []TensorGroup {
	var out []TensorGroup
	for k, g := range m {
		if g.count > 0 {
			out = append(out, TensorGroup{Role: k.role, Name: k.name, Count: g.count, Bytes: g.bytes})
		}
	}
	slices.SortFunc(out, func(a, b TensorGroup) int {
		switch {
		case a.Bytes != b.Bytes:
			if a.Bytes > b.Bytes {
				return -1
			}
			return 1
		case a.Role != b.Role:
			return int(a.Role) - int(b.Role)
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// Named sums the bytes live at the peak of the tensors that role allocated
// under any of names.
func (r Report) Named(role Role, names ...string) uint64 { return sumNamed(r.Tensors, role, names) }

// HeldNamed is Named for the tensors live at the end.
func (r Report) HeldNamed(role Role, names ...string) uint64 { return sumNamed(r.Held, role, names) }

func sumNamed(gs []TensorGroup, role Role, names []string) uint64 {
	var n uint64
	for _, g := range gs {
		if g.Role == role && slices.Contains(names, g.Name) {
			n += g.Bytes
		}
	}
	return n
}

// Run calls f, turning a panic inside it (an op given tensors that do not
// agree, a tensor used after Free, a Backend method the planner does not
// define) into an error.
func Run(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("plan: %v", p)
			if re, ok := p.(goruntime.Error); ok && strings.Contains(re.Error(), "nil pointer") {
				err = fmt.Errorf("%w (a method of runtime.Backend that runtime/plan does not define panics so: `go test ./runtime/plan` names any such method)", err)
			}
		}
	}()
	return f()
}

// MiB formats bytes in mebibytes.
func MiB(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// Size formats bytes in the binary unit that keeps the number below 1024
// (MiB at least, as the plan's tables do): "1546.5 MiB" stays MiB up to a
// GiB, "12.3 GiB", "241.3 TiB".
func Size(n uint64) string {
	f := float64(n) / (1 << 20)
	for _, u := range []string{"MiB", "GiB", "TiB", "PiB"} {
		if f < 1024 {
			return fmt.Sprintf("%.1f %s", f, u)
		}
		f /= 1024
	}
	return fmt.Sprintf("%.1f EiB", f)
}

// GB formats bytes in gigabytes (10⁹), as device memory is sold.
func GB(n uint64) string {
	if n == math.MaxUint64 {
		return "more than 18 EB"
	}
	return fmt.Sprintf("%.2f GB", float64(n)/1e9)
}
