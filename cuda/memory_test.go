package cuda

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/kd/optim"
	"github.com/kdnative/kdnative/model"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cachealloc"
	"github.com/kdnative/kdnative/runtime/plan"
)

// carvingBackend is a backend whose allocator carves tensors from shared
// segments, as on a GPU: the GPU's own backend, or on the kernel emulator
// a second backend over the same emulated device with the production
// allocator (the emulator's default gives every tensor its own allocation,
// so that its guard bytes sit right after each one).
func carvingBackend(t *testing.T) *Backend {
	t.Helper()
	g := gpuOrSkip(t)
	if g.alloc.opt == (cachealloc.Options{}) {
		return g
	}
	b := &Backend{api: g.api, blas: g.blas, nvrtc: g.nvrtc, driverVersion: g.driverVersion, dev: g.dev, devOrdinal: g.devOrdinal,
		ctx: g.ctx, stream: g.stream, sms: g.sms, index: g.index,
		modules: maps.Clone(g.modules), funcs: maps.Clone(g.funcs)}
	b.alloc.poison = g.alloc.poison
	return b
}

// TestCarvedTensorsKeepTheirValues: small tensors come from one segment,
// one after another, each keeping its own values; freed and merged, their
// blocks serve a larger tensor without the driver.
func TestCarvedTensorsKeepTheirValues(t *testing.T) {
	g := carvingBackend(t)
	before := g.Memory()
	var ts []*kdrt.Tensor
	for i := range 8 {
		x, err := g.Alloc("x", kdrt.F32, 1000+i)
		if err != nil {
			t.Fatal(err)
		}
		vals := make([]float32, 1000+i)
		for j := range vals {
			vals[j] = float32(i*10000 + j)
		}
		if err := g.Upload(x, vals); err != nil {
			t.Fatal(err)
		}
		ts = append(ts, x)
	}
	for i, x := range ts {
		got := values(t, g, x)
		for j, v := range got {
			if v != float32(i*10000+j) {
				t.Fatalf("tensor %d element %d is %g: a neighbour overwrote it", i, j, v)
			}
		}
		if i > 0 && g.dptr(x) != g.dptr(ts[i-1])+RoundSize(uint64(4*(1000+i-1))) && g.Memory().DriverAllocs == before.DriverAllocs+1 {
			t.Errorf("tensor %d at %#x, not right after tensor %d", i, g.dptr(x), i-1)
		}
	}
	if d := g.Memory().DriverAllocs - before.DriverAllocs; d > 1 {
		t.Errorf("8 small tensors took %d driver allocations, want at most one segment", d)
	}
	for _, x := range ts {
		g.Free(x)
	}
	mid := g.Memory()
	y, err := g.Alloc("y", kdrt.F32, 8000) // fits the merged blocks
	if err != nil {
		t.Fatal(err)
	}
	if after := g.Memory(); after.DriverAllocs != mid.DriverAllocs || after.InUse != mid.InUse+RoundSize(32000) {
		t.Errorf("a 32000-byte tensor after freeing 8 small ones: %+v (before %+v)", after, mid)
	}
	if got := values(t, g, y); slicesMax(got) != 0 || slicesMin(got) != 0 {
		t.Error("Alloc did not zero-fill a reused block")
	}
	g.Free(y)
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestSteadyStateMakesNoDriverCalls: a KD training step (the student's and
// the teacher's forwards, the fused loss's chunks, the hidden state's
// gradient, the backward, AdamW) allocates from the driver while it warms
// up; after that, steps of the same length and of shorter ones make no
// cuMemAlloc or cuMemFree call: everything comes from the cache.
func TestSteadyStateMakesNoDriverCalls(t *testing.T) {
	for _, prec := range []kdrt.Precision{kdrt.PrecisionFP32, kdrt.PrecisionBF16} {
		t.Run(prec.String(), func(t *testing.T) { checkSteadyState(t, prec) })
	}
}

func checkSteadyState(t *testing.T, prec kdrt.Precision) {
	g := carvingBackend(t)
	// A vocabulary of 4096 makes the loss's chunks [N, V] and the
	// embedding large blocks (over 1 MiB), the activations small ones.
	cfg, err := model.ParseConfig([]byte(`{"model_type": "qwen2", "vocab_size": 4096, "hidden_size": 64, "intermediate_size": 128,
		"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
		"rms_norm_eps": 1e-6, "tie_word_embeddings": true}`), "test")
	if err != nil {
		t.Fatal(err)
	}
	newModel := func(seed uint64, train bool) *model.Model {
		m, err := model.New(cfg, g, model.ForPrecision(prec, train)...)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.InitRandom(seed); err != nil {
			t.Fatal(err)
		}
		return m
	}
	m, teacher := newModel(1, true), newModel(2, false)
	if err := m.ZeroGrad(); err != nil {
		t.Fatal(err)
	}
	var slots []optim.Slot
	for _, p := range m.Params() {
		slots = append(slots, optim.Slot{Name: p.Name, W: p.W, G: p.G, Master: p.Master, Decay: !p.NoDecay})
	}
	o, err := optim.NewAdamW(g, slots, optim.DefaultAdamW)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	step := func(T int) {
		t.Helper()
		b := randomBatch(rng, 2, T, m.Config.Vocab)
		if err := m.ZeroGrad(); err != nil {
			t.Fatal(err)
		}
		h, err := m.ForwardHidden(b)
		if err != nil {
			t.Fatal(err)
		}
		th, err := teacher.InferHidden(b)
		if err != nil {
			t.Fatal(err)
		}
		dh, err := g.Alloc("grad.hidden", h.DType, h.Shape...)
		if err != nil {
			t.Fatal(err)
		}
		res, err := loss.KD(g, h, loss.Head{W: m.Head().W, G: m.Head().G}, dh, loss.TeacherHidden{Hidden: th, Head: teacher.Head().W},
			nil, loss.KDConfig{Divergence: kdrt.ForwardKL, Temperature: 2}, 1, loss.Options{})
		if err != nil || math.IsNaN(res.Loss) {
			t.Fatalf("loss %g: %v", res.Loss, err)
		}
		if err := m.BackwardHidden(dh); err != nil {
			t.Fatal(err)
		}
		g.Free(dh)
		if _, err := o.Step(1e-3); err != nil {
			t.Fatal(err)
		}
	}
	step(64)
	step(64)
	warm := g.Memory()
	for _, T := range []int{64, 37, 64, 5, 50, 64} {
		step(T)
	}
	after := g.Memory()
	t.Logf("warm-up: %d driver allocations, %s reserved, %s in use at most; after 6 more steps: %d allocations, %d frees, largest free block %s",
		warm.DriverAllocs, mib(warm.Reserved), mib(warm.PeakInUse), after.DriverAllocs, after.DriverFrees, mib(after.LargestFree))
	if after.DriverAllocs != warm.DriverAllocs || after.DriverFrees != warm.DriverFrees {
		t.Errorf("steady-state steps called the driver: %d → %d allocations, %d → %d frees",
			warm.DriverAllocs, after.DriverAllocs, warm.DriverFrees, after.DriverFrees)
	}
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestAllocUninit: AllocUninit does not zero-fill (on the emulator it
// fills with NaN bytes, so that an op reading memory nobody wrote shows),
// and it is counted as no memset; Alloc zero-fills with one.
func TestAllocUninit(t *testing.T) {
	g := gpuOrSkip(t)
	g.ResetLaunches()
	x, err := g.Alloc("x", kdrt.F32, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Free(x)
	y, err := kdrt.AllocUninit(g, "y", kdrt.F32, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Free(y)
	if n := g.Launches().Memsets; n != 1 {
		t.Errorf("Alloc and AllocUninit queued %d memsets, want 1", n)
	}
	if got := values(t, g, x); slicesMax(got) != 0 || slicesMin(got) != 0 {
		t.Error("Alloc did not zero-fill")
	}
	if g.alloc.poison {
		for i, v := range values(t, g, y) {
			if !math.IsNaN(float64(v)) {
				t.Fatalf("AllocUninit on the emulator: element %d is %g, want the NaN poison", i, v)
			}
		}
	}
}

// TestOutOfMemoryNamesWhatIsHeld: the error of an allocation the GPU cannot
// make names the tensor, and the largest groups of live tensors.
func TestOutOfMemoryNamesWhatIsHeld(t *testing.T) {
	g := gpuOrSkip(t)
	// Larger than all the tests before it left on the shared backend
	// together (under -count=N they add up), so that it is among the
	// largest groups the error names.
	keep, err := g.Alloc("kept.buffer", kdrt.F32, max(1<<20, int(g.Memory().InUse/2)))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Free(keep)
	_, err = g.Alloc("huge", kdrt.F32, int(g.Device().TotalMem/4)+(1<<28))
	if !IsOutOfMemory(err) || !strings.Contains(err.Error(), "huge") || !strings.Contains(err.Error(), "kept.buffer ×") ||
		!strings.Contains(err.Error(), "bench --plan") {
		t.Errorf("out-of-memory error: %v", err)
	}
}

// TestPlanSizesAdamWTables: the memory planner (runtime/plan, sized as this
// allocator sizes blocks) holds what this backend's PrepareAdamW allocates
// for the multi-tensor AdamW's tables (tensor table, chunk list, the
// norm's partial sums, the clip state), over slots of sizes around the
// chunk length and a BF16 one with a master copy.
func TestPlanSizesAdamWTables(t *testing.T) {
	g := carvingBackend(t)
	sizes := []int{1, 100, optChunk, optChunk + 1, 3*optChunk + 5, 300000}
	slotsOn := func(be kdrt.Backend) []kdrt.AdamWSlot {
		var slots []kdrt.AdamWSlot
		for i, n := range sizes {
			s := kdrt.AdamWSlot{Name: fmt.Sprintf("p%d", i)}
			var err error
			for _, p := range []**kdrt.Tensor{&s.Grad, &s.M, &s.V} {
				if *p, err = be.Alloc("t", kdrt.F32, n); err != nil {
					t.Fatal(err)
				}
			}
			dt := kdrt.F32
			if i == 2 {
				dt = kdrt.BF16
				if s.Master, err = be.Alloc("master", kdrt.F32, n); err != nil {
					t.Fatal(err)
				}
			}
			if s.Param, err = be.Alloc("param", dt, n); err != nil {
				t.Fatal(err)
			}
			slots = append(slots, s)
		}
		return slots
	}
	slots := slotsOn(g)
	before := g.Memory().InUse
	grp, err := g.PrepareAdamW(slots)
	if err != nil {
		t.Fatal(err)
	}
	got := g.Memory().InUse - before
	grp.Free()
	pb := plan.New(plan.Options{})
	ps := slotsOn(pb)
	pbefore := pb.Report().FinalBytes
	pg, err := pb.PrepareAdamW(ps)
	if err != nil {
		t.Fatal(err)
	}
	want := pb.Report().FinalBytes - pbefore
	if got != want || got == 0 {
		t.Errorf("PrepareAdamW over %d slots allocated %d bytes; the plan holds %d", len(sizes), got, want)
	}
	pg.Free()
	if pb.Report().FinalBytes != pbefore {
		t.Errorf("the plan's group freed %d of %d bytes", want-(pb.Report().FinalBytes-pbefore), want)
	}
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
}
