package model_test

import (
	"math"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/safetensors"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// The fixtures are tiny random-weight models made by PyTorch and transformers
// (scripts/fixtures/make_model_fixtures.py; see testdata/fixtures/README.md).
var fixtureCases = []string{"llama_gqa", "llama_tied", "qwen2_bias", "mistral_window", "gpt2"}

// fixture is one case's reference outputs.
type fixture struct {
	dir  string
	file *safetensors.File
}

func openFixture(t *testing.T, name string) *fixture {
	t.Helper()
	dir := filepath.Join("testdata", "fixtures", name)
	f, err := safetensors.Open(filepath.Join(dir, "fixture.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &fixture{dir: dir, file: f}
}

func (f *fixture) f32(t *testing.T, name string) []float32 {
	t.Helper()
	v, err := f.file.Float32(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (f *fixture) batch(t *testing.T) model.Batch {
	t.Helper()
	ids, err := f.file.Int32("input_ids")
	if err != nil {
		t.Fatal(err)
	}
	targets, err := f.file.Int32("targets")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := f.file.Info("input_ids")
	return model.Batch{B: info.Shape[0], T: info.Shape[1], IDs: ids, Targets: targets}
}

// relErr is ‖got − want‖ / ‖want‖ in float64.
func relErr(got, want []float32) float64 {
	var d, w float64
	for i := range want {
		e := float64(got[i]) - float64(want[i])
		d += e * e
		w += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(d) / math.Max(math.Sqrt(w), 1e-30)
}

func download(t *testing.T, x *kdrt.Tensor) []float32 {
	t.Helper()
	out := make([]float32, x.Numel())
	if err := x.Backend().Download(x, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMatchesPyTorch(t *testing.T) {
	for _, name := range fixtureCases {
		t.Run(name, func(t *testing.T) {
			fx := openFixture(t, name)
			m, err := model.LoadDir(fx.dir, cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			b := fx.batch(t)
			loss, err := m.Forward(b)
			if err != nil {
				t.Fatal(err)
			}
			wantLoss := float64(fx.f32(t, "loss")[0])
			if e := math.Abs(loss-wantLoss) / wantLoss; e > 1e-5 {
				t.Errorf("loss %.7f, PyTorch %.7f (relative error %.2g)", loss, wantLoss, e)
			}
			if e := relErr(download(t, m.Logits()), fx.f32(t, "logits")); e > 1e-5 {
				t.Errorf("logits: relative error %.2g", e)
			}
			for i := 0; i <= m.Config.Layers; i++ {
				h, err := m.Hidden(i)
				if err != nil {
					t.Fatal(err)
				}
				if e := relErr(download(t, h), fx.f32(t, "hidden."+itoa(i))); e > 1e-5 {
					t.Errorf("hidden state %d: relative error %.2g", i, e)
				}
			}

			if err := m.ZeroGrad(); err != nil {
				t.Fatal(err)
			}
			if err := m.Backward(); err != nil {
				t.Fatal(err)
			}
			grads, _, err := m.ExportTensors(true)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, n := range fx.file.Names() {
				if strings.HasPrefix(n, "grad.") {
					want = append(want, strings.TrimPrefix(n, "grad."))
				}
			}
			var got []string
			for n := range grads {
				got = append(got, n)
			}
			sort.Strings(got)
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("gradient names differ:\n kdnative %v\n PyTorch  %v", got, want)
			}
			worst := 0.0
			for _, n := range want {
				e := relErr(grads[n], fx.f32(t, "grad."+n))
				worst = math.Max(worst, e)
				if e > 1e-4 {
					t.Errorf("gradient of %s: relative error %.2g", n, e)
				}
			}
			t.Logf("loss %.6f; worst gradient relative error %.2g over %d parameters", loss, worst, len(want))
		})
	}
}

func itoa(i int) string { return string(rune('0' + i)) }
