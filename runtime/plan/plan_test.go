package plan

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cachealloc"
)

// TestDefinesEveryBackendMethod: every method of runtime.Backend (with
// the interfaces it embeds) is declared on *plan.Backend itself, read from
// the sources; a method added to the interface is otherwise promoted from
// the nil embedded Backend and panics in a plan.
func TestDefinesEveryBackendMethod(t *testing.T) {
	fset := token.NewFileSet()
	parse := func(dir string) []*ast.File {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		var out []*ast.File
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(fset, f, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, af)
		}
		return out
	}
	ifaces := map[string]*ast.InterfaceType{}
	for _, f := range parse("..") {
		for _, d := range f.Decls {
			if g, ok := d.(*ast.GenDecl); ok {
				for _, s := range g.Specs {
					if ts, ok := s.(*ast.TypeSpec); ok {
						if it, ok := ts.Type.(*ast.InterfaceType); ok {
							ifaces[ts.Name.Name] = it
						}
					}
				}
			}
		}
	}
	var want []string
	var collect func(name string)
	collect = func(name string) {
		it := ifaces[name]
		if it == nil {
			t.Fatalf("runtime declares no interface %s", name)
		}
		for _, m := range it.Methods.List {
			if len(m.Names) == 0 {
				collect(m.Type.(*ast.Ident).Name)
			}
			for _, n := range m.Names {
				want = append(want, n.Name)
			}
		}
	}
	collect("Backend")
	var have []string
	for _, f := range parse(".") {
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv != nil {
				if st, ok := fd.Recv.List[0].Type.(*ast.StarExpr); ok && st.X.(*ast.Ident).Name == "Backend" {
					have = append(have, fd.Name.Name)
				}
			}
		}
	}
	for _, m := range want {
		if !slices.Contains(have, m) {
			t.Errorf("runtime.Backend's %s is not declared on *plan.Backend: a plan that calls it panics (add it, checking its operands)", m)
		}
	}
	if len(want) < 40 {
		t.Errorf("found only %d methods in runtime.Backend: %v", len(want), want)
	}
}

// TestCategories: role and phase decide the category, with the few names
// that refine them.
func TestCategories(t *testing.T) {
	for _, c := range []struct {
		role  Role
		phase Phase
		name  string
		want  Category
	}{
		{Student, PhaseModel, "model.layers.0.mlp.up_proj.weight", Weights},
		{Student, PhaseModel, "rope.inv_freq", Weights},
		{Student, PhaseModel, "master.model.embed_tokens.weight", MasterWeights},
		{Step, PhaseOptimizer, "master.lm_head.weight", MasterWeights},
		{Student, PhaseGradients, "grads", Gradients},
		{Step, PhaseOptimizer, "adamw.m.lm_head.weight", Moments},
		{Frozen, PhaseModel, "model.norm.weight", TeacherWeights},
		{Frozen, PhaseStep, "mlp.up", TeacherActivations},
		{Frozen, PhaseStep, "logits", TeacherActivations},
		{Student, PhaseStep, "attention.lse", Activations},
		{Student, PhaseStep, "hidden", Activations},
		{Student, PhaseStep, "logits", Logits},
		{Student, PhaseStep, "grad.logits", Logits},
		{Student, PhaseStep, "grad.logits.BF16", Logits},
		{Student, PhaseStep, "grad.residual", Workspace},
		{Step, PhaseStep, "loss.logits", LossChunks},
		{Step, PhaseStep, "teacher.topk.ids", LossChunks},
		{Step, PhaseStep, "grad.hidden", Workspace},
		{Step, PhaseStep, "adamw.grad_norm", Workspace},
	} {
		if got := category(c.role, c.phase, c.name); got != c.want {
			t.Errorf("%v %v %q: %v, want %v", c.role, c.phase, c.name, got, c.want)
		}
	}
}

func mustAlloc(t *testing.T, be kdrt.Backend, name string, dt kdrt.DType, shape ...int) *kdrt.Tensor {
	t.Helper()
	x, err := be.Alloc(name, dt, shape...)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestPeakAndBreakdown: the peak is the most the live tensors held at once,
// the breakdown what each category held at that moment (not later), sizes
// are the caching allocator's blocks (a 4000-byte tensor takes 4096, a
// 3 MiB one 3 MiB in a 4 MiB segment), and views cost nothing.
func TestPeakAndBreakdown(t *testing.T) {
	b := New(Options{})
	st := b.View(Student)
	b.SetPhase(PhaseModel)
	w := mustAlloc(t, st, "w", kdrt.F32, 1000) // 4000 bytes
	b.SetPhase(PhaseStep)
	a := mustAlloc(t, st, "hidden", kdrt.F32, 3<<20/4)
	v := b.Slice(a, 0, 100)
	b.Free(v) // a view: frees nothing
	b.Free(a)
	l := mustAlloc(t, b, "loss.logits", kdrt.F32, 1<<20/4) // 1 MiB: less than a
	r := b.Report()
	if r.PeakBytes != 4096+3<<20 || r.Breakdown[Weights] != 4096 || r.Breakdown[Activations] != 3<<20 || r.Breakdown[LossChunks] != 0 {
		t.Errorf("peak %d, breakdown %v", r.PeakBytes, r.Breakdown)
	}
	if r.FinalBytes != 4096+1<<20 || r.PeakReserved != 2<<20+4<<20 || r.Allocations != 3 {
		t.Errorf("final %d, reserved %d, %d allocations", r.FinalBytes, r.PeakReserved, r.Allocations)
	}
	if r.Named(Student, "hidden") != 3<<20 || r.Named(Step, "hidden") != 0 || r.Tensors[0].Name != "hidden" {
		t.Errorf("tensors at the peak: %+v", r.Tensors)
	}
	if !strings.Contains(r.Rounding, "512 B") || r.Rounding != cachealloc.Rounding {
		t.Errorf("rounding %q", r.Rounding)
	}
	b.Free(w)
	b.Free(l)
	// Exact: each tensor's own bytes.
	e := New(Options{Exact: true})
	mustAlloc(t, e, "x", kdrt.BF16, 3, 5)
	if r := e.Report(); r.PeakBytes != 30 || r.PeakReserved != 0 || !strings.Contains(r.Rounding, "exact") {
		t.Errorf("exact plan of a [3 5] BF16 tensor: %+v", r)
	}
}

// TestChecksOperands: ops panic on shapes that do not agree and on tensors
// used after Free, and Run turns that into an error naming the tensor;
// downloads give zeros, or what was uploaded to those elements.
func TestChecksOperands(t *testing.T) {
	b := New(Options{})
	x := mustAlloc(t, b, "x", kdrt.F32, 4, 8)
	y := mustAlloc(t, b, "y", kdrt.F32, 8, 3)
	z := mustAlloc(t, b, "z", kdrt.F32, 4, 3)
	if err := Run(func() error { b.MatMul(z, x, y, false, false, 1, 0); return nil }); err != nil {
		t.Errorf("a product of agreeing shapes: %v", err)
	}
	if err := Run(func() error { b.MatMul(z, x, y, true, false, 1, 0); return nil }); err == nil || !strings.Contains(err.Error(), "do not agree") {
		t.Errorf("a product of disagreeing shapes: %v", err)
	}
	b.Free(y)
	if err := Run(func() error { b.MatMul(z, x, y, false, false, 1, 0); return nil }); err == nil {
		t.Error("a freed operand went unnoticed")
	}
	v := b.Slice(x, 1, 3)
	b.Free(x)
	if err := Run(func() error { b.Zero(v); return nil }); err == nil || !strings.Contains(err.Error(), "after it was freed") {
		t.Errorf("a view of a freed tensor: %v", err)
	}
	host := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	if err := b.Download(z, host); err != nil || slices.Max(host) != 0 {
		t.Errorf("download: %v, %v", err, host)
	}
	ids := mustAlloc(t, b, "ids", kdrt.I32, 4, 3)
	if err := b.UploadInt32(b.Slice(ids, 1, 3), []int32{1, 2, 3, 4, 5, 6}); err != nil {
		t.Fatal(err)
	}
	got := make([]int32, 9)
	if err := b.DownloadInt32(b.Slice(ids, 1, 4), got); err != nil || !slices.Equal(got, []int32{1, 2, 3, 4, 5, 6, 0, 0, 0}) {
		t.Errorf("rows 1…3 after uploading rows 1…2: %v, %v", got, err)
	}
	if err := b.Upload(z, host[:5]); err == nil {
		t.Error("an upload of the wrong length was accepted")
	}
	if _, err := b.Alloc("huge", kdrt.F32, 1<<40, 1<<40); err == nil || !strings.Contains(err.Error(), "overflows") {
		t.Errorf("an absurd shape: %v", err)
	}
}
