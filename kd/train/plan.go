package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/plan"
)

// roles are the backends each part of a run allocates through, and a hook
// told what the run does next: for a run, one backend and nothing to tell;
// for a memory plan, views of the planner (runtime/plan) that tag what each
// part allocates, and the planner's phase.
type roles struct {
	student, frozen, step kdrt.Backend
	phase                 func(plan.Phase)
	// planning: models are built from their configs without weights (no
	// random initialization, no reading of checkpoints).
	planning bool
}

func plainRoles(be kdrt.Backend) roles {
	return roles{student: be, frozen: be, step: be, phase: func(plan.Phase) {}}
}

func planRoles(pb *plan.Backend) roles {
	return roles{student: pb.View(plan.Student), frozen: pb.View(plan.Frozen), step: pb.View(plan.Step), phase: pb.SetPhase, planning: true}
}

// maxPlanTokens bounds the tokens of a batch that is planned by running its
// step: the step's host-side buffers (ids, targets, masks) grow with B·T.
// A larger batch's plan is extrapolated from two that fit the bound
// (planBatch).
const maxPlanTokens = 1 << 20

// MemoryPlan is the device memory a training step holds at its peak, found
// by running the step's own setup and allocation code on the planner
// (runtime/plan), with the breakdown by category at that moment. Its JSON
// form is what `kdnative bench --plan --json` writes.
type MemoryPlan struct {
	Step    string `json:"step"`
	Model   string `json:"model"`
	Teacher string `json:"teacher,omitempty"`
	Batch   int    `json:"batch"`
	Seq     int    `json:"seq"`
	// Precision is the run's precision (runtime.Precision, resolved);
	// Storage what the planned weights and activations are stored in (read
	// from the tensors).
	Precision string `json:"precision,omitempty"`
	Storage   string `json:"storage"`
	// Rounding says how allocations were sized: the CUDA caching
	// allocator's blocks, or exact bytes.
	Rounding string `json:"rounding"`
	// PeakBytes is the most the step's tensors hold at once; Breakdown what
	// each category holds at that moment (keys: plan.Category.Key).
	PeakBytes uint64            `json:"peak_bytes"`
	Breakdown map[string]uint64 `json:"breakdown"`
	// PeakReservedBytes is what the allocator takes from the driver at most
	// (segments: PeakBytes plus what its rounding and splitting leave over);
	// 0 for exact sizes.
	PeakReservedBytes uint64 `json:"peak_reserved_bytes,omitempty"`
	// SteadyBytes is what stays allocated between steps.
	SteadyBytes uint64 `json:"steady_bytes"`
	// Attention is what the student's attention keeps for its backward at
	// the peak, and LSE the log-sum-exp part of it.
	AttentionBytes    uint64 `json:"attention_saved_bytes"`
	AttentionLSEBytes uint64 `json:"attention_lse_bytes"`
	// Extrapolated: the batch was too large to run through the planner
	// (more than maxPlanTokens tokens); its figures are extended linearly
	// in the batch size from the plans of the two batch sizes in
	// PlannedBatches.
	Extrapolated   bool   `json:"extrapolated,omitempty"`
	PlannedBatches [2]int `json:"planned_batches,omitzero"`
	// Largest are the largest groups of tensors live at the peak.
	Largest []PlanTensors `json:"largest_tensors"`
	// FreeBytes is the device's free memory when the plan was compared
	// with one (0: not compared), and FitBatch the largest batch size
	// whose plan fits in it (0: none does).
	FreeBytes int64 `json:"device_free_bytes,omitempty"`
	FitBatch  int   `json:"largest_batch_that_fits,omitempty"`

	layers  int
	rowsPer int // rows per batch element: 2 for preference pairs
}

// PlanTensors is a group of tensors of one name live at the peak.
type PlanTensors struct {
	Owner string `json:"owner"`
	Name  string `json:"name"`
	Count uint64 `json:"count"`
	Bytes uint64 `json:"bytes"`
}

// attentionNames are the tensors a training forward keeps for attention's
// backward (model/activations.go).
var attentionNames = []string{"q", "k", "v", "attention.out", "attention.lse"}

func newMemoryPlan(r plan.Report) MemoryPlan {
	p := MemoryPlan{Rounding: r.Rounding, PeakBytes: r.PeakBytes, PeakReservedBytes: r.PeakReserved, SteadyBytes: r.FinalBytes,
		Breakdown: map[string]uint64{}, AttentionBytes: r.Named(plan.Student, attentionNames...),
		AttentionLSEBytes: r.Named(plan.Student, "attention.lse")}
	for c := range plan.NumCategories {
		p.Breakdown[c.Key()] = r.Breakdown[c]
	}
	for _, t := range r.Tensors[:min(12, len(r.Tensors))] {
		p.Largest = append(p.Largest, PlanTensors{Owner: t.Role.String(), Name: t.Name, Count: t.Count, Bytes: t.Bytes})
	}
	return p
}

// planRounding is the planner for backend be: the CUDA caching allocator's
// sizes on the CUDA backend (and when be is nil: a plan for a GPU made
// without one), exact bytes elsewhere.
func planRounding(be kdrt.Backend) plan.Options {
	return plan.Options{Exact: be != nil && be.Name() != "cuda"}
}

// PlanPrecision resolves a precision name (auto, bf16, fp32, tf32) for a
// plan: on be (runtime.UsePrecision, which also configures be) when there
// is one, else for the GPU a plan without a device is sized for, where
// auto means bf16.
func PlanPrecision(be kdrt.Backend, name string) (kdrt.Precision, error) {
	if be != nil {
		return kdrt.UsePrecision(be, name)
	}
	p, auto, err := kdrt.ParsePrecision(name)
	if auto {
		p = kdrt.PrecisionBF16
	}
	return p, err
}

// PlanBench plans the memory of Bench's step for c at precision prec
// (resolved: PlanPrecision or runtime.UsePrecision): the models, gradients
// and optimizer are built and two steps run on the planner, with sizes as
// opt says. Nothing is computed and no weights are read.
func PlanBench(c BenchConfig, prec kdrt.Precision, opt plan.Options) (MemoryPlan, error) {
	if c.Model == "" && c.Config == "" {
		return MemoryPlan{}, fmt.Errorf("bench: give --model or --config")
	}
	if c.B <= 0 || c.T <= 0 {
		return MemoryPlan{}, fmt.Errorf("bench: batch %d and sequence %d must be positive", c.B, c.T)
	}
	return planBatch(c.B, c.T, 1, benchPlanner(c, prec, opt))
}

// planner plans a step at batch size B by running it on the planner.
type planner func(B int) (MemoryPlan, error)

// memo remembers a planner's plans (a bisection asks for some twice).
func memo(at planner) planner {
	seen := map[int]MemoryPlan{}
	return func(B int) (MemoryPlan, error) {
		if p, ok := seen[B]; ok {
			return p, nil
		}
		p, err := at(B)
		if err == nil {
			seen[B] = p
		}
		return p, err
	}
}

// benchPlanner plans Bench's step for c at precision prec at any batch size.
func benchPlanner(c BenchConfig, prec kdrt.Precision, opt plan.Options) planner {
	return memo(func(B int) (MemoryPlan, error) {
		c.B = B
		pb := plan.New(opt)
		var p MemoryPlan
		err := plan.Run(func() error {
			run, err := newBenchRun(c, prec, planRoles(pb))
			if err != nil {
				return err
			}
			// Two steps: the second must find everything the first
			// allocated (a plan of one step would hide a leak).
			for range 2 {
				if _, err := run.step(); err != nil {
					return err
				}
			}
			run.free()
			p = newMemoryPlan(pb.Report())
			p.Step, p.Model, p.layers = "train", describeModel(run.m.Config), run.m.Config.Layers
			if run.teacher != nil {
				p.Step, p.Teacher = "kd", describeModel(run.teacher.Config)
			}
			p.Storage = precision(run.m)
			return nil
		})
		p.Batch, p.Seq, p.Precision = B, c.T, prec.String()
		return p, err
	})
}

// planBatch plans batch size B (of T tokens, rowsPer rows per batch
// element) with planAt, which runs the step on the planner — or, when
// that many tokens would not fit maxPlanTokens, extends linearly the plans
// of the largest batch size that fits and of half of it (the step's
// buffers grow in proportion to the batch, its fixed ones stay).
func planBatch(B, T, rowsPer int, planAt planner) (MemoryPlan, error) {
	maxB := max(1, maxPlanTokens/T/rowsPer)
	if B <= maxB {
		p, err := planAt(B)
		p.rowsPer = rowsPer
		return p, err
	}
	hi, err := planAt(maxB)
	if err != nil {
		return hi, err
	}
	lo := MemoryPlan{Breakdown: map[string]uint64{}} // batch 0: nothing grows
	if maxB > 1 {
		if lo, err = planAt(maxB / 2); err != nil {
			return lo, err
		}
	}
	x0, x1 := float64(lo.Batch), float64(hi.Batch)
	extend := func(y0, y1 uint64) uint64 {
		v := float64(y1) + (float64(y1)-float64(y0))/(x1-x0)*(float64(B)-x1)
		if v >= 1<<63 {
			return 1<<63 - 1
		}
		return uint64(max(v, float64(y1)))
	}
	p := hi
	p.rowsPer = rowsPer
	p.Batch, p.Extrapolated, p.PlannedBatches = B, true, [2]int{lo.Batch, hi.Batch}
	p.PeakBytes, p.SteadyBytes = extend(lo.PeakBytes, hi.PeakBytes), extend(lo.SteadyBytes, hi.SteadyBytes)
	p.PeakReservedBytes = extend(lo.PeakReservedBytes, hi.PeakReservedBytes)
	p.AttentionBytes, p.AttentionLSEBytes = extend(lo.AttentionBytes, hi.AttentionBytes), extend(lo.AttentionLSEBytes, hi.AttentionLSEBytes)
	p.Breakdown = map[string]uint64{}
	for k, v := range hi.Breakdown {
		p.Breakdown[k] = extend(lo.Breakdown[k], v)
	}
	p.Largest = nil
	return p, nil
}

// CheckBenchMemory refuses, before anything is allocated, a Bench at
// precision prec whose plan does not fit in be's free memory (when be can
// tell), with the plan's breakdown and the largest batch that fits.
func CheckBenchMemory(be kdrt.Backend, c BenchConfig, prec kdrt.Precision) error {
	free, total, ok := kdrt.FreeMemory(be)
	if !ok {
		return nil
	}
	p, err := PlanBench(c, prec, planRounding(be))
	if err != nil {
		return err
	}
	if p.PeakBytes <= uint64(free) {
		return nil
	}
	if err := ComparePlan(be, c, prec, &p); err != nil {
		return err
	}
	return &PlanError{Plan: p, Free: free, Total: total, Backend: be.Name(), Hint: "lower --batch or --seq"}
}

// ComparePlan records in p (PlanBench's plan of c at prec) be's free
// memory and, when p does not fit in it, the largest batch size whose plan
// does.
func ComparePlan(be kdrt.Backend, c BenchConfig, prec kdrt.Precision, p *MemoryPlan) error {
	free, _, ok := kdrt.FreeMemory(be)
	if !ok {
		return nil
	}
	p.FreeBytes = free
	if p.PeakBytes <= uint64(free) {
		return nil
	}
	at := benchPlanner(c, prec, planRounding(be))
	fit, err := fitBatch(c.B-1, uint64(free), func(B int) (uint64, error) {
		q, err := planBatch(B, c.T, 1, at)
		return q.PeakBytes, err
	})
	p.FitBatch = fit
	return err
}

// fitBatch is the largest batch size up to hi whose need fits in free, by
// bisection (a step's memory grows with its batch); 0 when not even 1 fits.
func fitBatch(hi int, free uint64, need func(B int) (uint64, error)) (int, error) {
	lo := 0 // need(lo) fits (0: nothing); need(hi+1) does not
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		n, err := need(mid)
		if err != nil {
			return 0, err
		}
		if n <= free {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}

// PlanError is a run refused before it starts: its plan needs more memory
// than the device has free. It is a *runtime.OutOfMemoryError too
// (errors.As), with the plan's breakdown and the largest batch that fits.
type PlanError struct {
	Plan        MemoryPlan
	Free, Total int64
	// Resident is the part of the plan already allocated (models loaded
	// before the check): the free memory must hold the rest.
	Resident uint64
	Backend  string
	// What names the run ("training with batch_size 8 × data.max_len
	// 1024"); Hint says what to change.
	What, Hint string
}

func (e *PlanError) Error() string {
	what := e.What
	if what == "" {
		step := "training"
		if e.Plan.Step == "kd" {
			step = "KD"
		}
		what = fmt.Sprintf("a %s step of batch %d × %d tokens", step, e.Plan.Batch, e.Plan.Seq)
	}
	need := kdrt.FormatBytes(int64(min(e.Plan.PeakBytes, 1<<63-1)))
	if e.Plan.Extrapolated {
		need = "about " + need
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s needs %s of memory at its peak", what, need)
	if e.Resident > 0 {
		fmt.Fprintf(&b, " (%s of it the models already loaded)", kdrt.FormatBytes(int64(min(e.Resident, 1<<63-1))))
	}
	fmt.Fprintf(&b, ", but the %s backend has %s free", e.Backend, kdrt.FormatBytes(e.Free))
	if e.Total > 0 {
		fmt.Fprintf(&b, " of %s", kdrt.FormatBytes(e.Total))
	}
	b.WriteString(": it would run out of memory. ")
	if e.Plan.FitBatch > 0 {
		about := ""
		if e.Plan.FitBatch*e.Plan.Seq*max(e.Plan.rowsPer, 1) > maxPlanTokens {
			about = "about "
		}
		fmt.Fprintf(&b, "The largest batch that fits is %s%d", about, e.Plan.FitBatch)
	} else {
		b.WriteString("Not even a batch of 1 fits")
	}
	if e.Hint != "" {
		fmt.Fprintf(&b, "; %s", e.Hint)
	}
	b.WriteString(". The plan at its peak:\n")
	e.Plan.writeBreakdown(&b)
	return strings.TrimRight(b.String(), "\n")
}

// OutOfMemory converts e to the runtime's out-of-memory error, for callers
// that test for one.
func (e *PlanError) OutOfMemory() *kdrt.OutOfMemoryError {
	return &kdrt.OutOfMemoryError{What: e.What, Need: int64(min(e.Plan.PeakBytes-e.Resident, 1<<63-1)), Free: e.Free, Total: e.Total, Backend: e.Backend, Hint: e.Hint}
}

// As lets errors.As find a *runtime.OutOfMemoryError in a PlanError.
func (e *PlanError) As(target any) bool {
	if t, ok := target.(**kdrt.OutOfMemoryError); ok {
		*t = e.OutOfMemory()
		return true
	}
	return false
}

// WriteText prints the plan for people.
func (p MemoryPlan) WriteText(w io.Writer) error {
	var b strings.Builder
	what := "training step (cross-entropy)"
	if p.Step == "kd" {
		what = "KD step (online teacher, fused forward KL)"
	}
	fmt.Fprintf(&b, "memory plan of one %s, batch %d × %d tokens\n", what, p.Batch, p.Seq)
	fmt.Fprintf(&b, "student: %s\n", p.Model)
	if p.Teacher != "" {
		fmt.Fprintf(&b, "teacher: %s\n", p.Teacher)
	}
	prec := p.Precision
	if prec == "" {
		prec = "default"
	}
	fmt.Fprintf(&b, "precision %s; tensors stored %s\n", prec, p.Storage)
	fmt.Fprintf(&b, "sizes: %s\n", p.Rounding)
	if p.Extrapolated {
		fmt.Fprintf(&b, "batch %d is too large to plan by running it: the figures are extended linearly from the plans of batches %d and %d\n",
			p.Batch, p.PlannedBatches[0], p.PlannedBatches[1])
	}
	peak := fmt.Sprintf("peak %s (%s) in use", plan.GB(p.PeakBytes), plan.Size(p.PeakBytes))
	if p.PeakReservedBytes > 0 {
		peak += fmt.Sprintf(", %s reserved from the driver", plan.GB(p.PeakReservedBytes))
	}
	fmt.Fprintf(&b, "%s; %s held between steps\n", peak, plan.GB(p.SteadyBytes))
	p.writeBreakdown(&b)
	if p.AttentionBytes > 0 {
		fmt.Fprintf(&b, "attention's saved state (the student's q, k, v, output and log-sum-exp of %d layers): %s, of which the log-sum-exp %s\n",
			p.layers, plan.MiB(p.AttentionBytes), plan.MiB(p.AttentionLSEBytes))
	}
	b.WriteString("largest tensors at the peak:\n")
	for _, t := range p.Largest {
		fmt.Fprintf(&b, "  %-8s %-28s ×%-3d %12s\n", t.Owner, t.Name, t.Count, plan.Size(t.Bytes))
	}
	if p.FreeBytes > 0 {
		fits := "fits"
		if p.PeakBytes > uint64(p.FreeBytes) {
			fits = "does NOT fit"
		}
		fmt.Fprintf(&b, "the device has %s free: the plan %s", plan.GB(uint64(p.FreeBytes)), fits)
		if p.FitBatch > 0 {
			fmt.Fprintf(&b, "; the largest batch that fits is %d", p.FitBatch)
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeBreakdown prints each category's bytes at the peak.
func (p MemoryPlan) writeBreakdown(b *strings.Builder) {
	for c := range plan.NumCategories {
		n := p.Breakdown[c.Key()]
		if n == 0 {
			continue
		}
		fmt.Fprintf(b, "  %-34s %12s %6.1f%%\n", c.String(), plan.Size(n), 100*float64(n)/float64(max(p.PeakBytes, 1)))
	}
}

// WriteJSON writes the plan to path as indented JSON, atomically.
func (p MemoryPlan) WriteJSON(path string) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}

// isOutOfMemory reports whether err is a backend's out of memory: the
// runtime's error, or a device's (which has an IsOutOfMemory method).
func isOutOfMemory(err error) bool {
	var oom *kdrt.OutOfMemoryError
	var dev interface{ IsOutOfMemory() bool }
	return errors.As(err, &oom) || errors.As(err, &dev) && dev.IsOutOfMemory()
}

// withPlan adds to a step's out-of-memory error what the step's plan holds
// at its peak, by category (planOf makes the plan; its own failure leaves
// err as it is).
func withPlan(err error, planOf func() (MemoryPlan, error)) error {
	if err == nil || !isOutOfMemory(err) {
		return err
	}
	p, perr := planOf()
	if perr != nil {
		return err
	}
	var b strings.Builder
	p.writeBreakdown(&b)
	return fmt.Errorf("%w\nthe memory plan of this step (%s) holds %s at its peak:\n%s", err, p.Rounding, plan.GB(p.PeakBytes), strings.TrimRight(b.String(), "\n"))
}
