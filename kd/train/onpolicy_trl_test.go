package train

import (
	"math"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kd/loss"
	"github.com/kdnative/kdnative/kd/rollout"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/safetensors"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestOnPolicyJSDMatchesTRL: the on-policy jsd term, on sequences TRL's
// GKDTrainer sampled with the student (generate_on_policy_outputs) and laid
// out by kd/rollout, gives the loss of TRL's
// GKDTrainer.generalized_jsd_loss called directly on the two models' logits
// (as its compute_loss calls it) and the same gradient for every student
// parameter, at β 0, 0.1, 0.5 and 1 and temperatures 1 and 2
// (testdata/onpolicy, scripts/fixtures/make_onpolicy_fixtures.py; float64
// references against float32 arithmetic).
func TestOnPolicyJSDMatchesTRL(t *testing.T) {
	be := cpu.New()
	student, err := model.LoadDir("testdata/onpolicy/student", be)
	if err != nil {
		t.Fatal(err)
	}
	teacher, err := model.LoadDir("testdata/onpolicy/teacher", be)
	if err != nil {
		t.Fatal(err)
	}
	fx, err := safetensors.Open("testdata/onpolicy/gkd.safetensors")
	if err != nil {
		t.Fatalf("%v (make it with scripts/fixtures/make_onpolicy_fixtures.py)", err)
	}
	defer fx.Close()
	ints := func(name string) []int32 {
		v, err := fx.Int32(name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	f32 := func(name string) []float32 {
		v, err := fx.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	ids, labels, P := ints("ids"), ints("labels"), int(ints("prompt_len")[0])
	B := 3
	T := len(ids) / B
	// The rows as rollouts: the prompt, then the completion through its
	// first EOS (TRL's labels keep exactly those tokens).
	var rs []rollout.Rollout
	for r := range B {
		row, lab := ids[r*T:(r+1)*T], labels[r*T:(r+1)*T]
		n := 0
		for j := P; j < T && lab[j] != -100; j++ {
			n++
		}
		rs = append(rs, rollout.Rollout{Prompt: row[:P], Response: row[P : P+n]})
	}
	b, err := rollout.MakeBatch(rs, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The batch's targets are TRL's shifted labels (labels[:, 1:]).
	for r := range B {
		for j := 0; j+1 < T && j < b.T; j++ {
			want := labels[r*T+j+1]
			if want == -100 {
				want = kdrt.IgnoreIndex
			}
			if b.Targets[r*b.T+j] != want {
				t.Fatalf("row %d position %d: target %d, TRL's label %d", r, j, b.Targets[r*b.T+j], want)
			}
		}
	}
	for _, c := range []struct{ beta, T float64 }{{0.5, 1}, {0.1, 2}, {0, 1}, {1, 1}} {
		name := "beta=" + trimFloat(c.beta) + ".T=" + trimFloat(c.T)
		if err := student.ZeroGrad(); err != nil {
			t.Fatal(err)
		}
		got, _, err := onpolicyJSD(be, student, teacher, b, c.beta, c.T, 1, loss.Options{})
		if err != nil {
			t.Fatal(err)
		}
		want := float64(f32(name + ".loss")[0])
		if e := math.Abs(got-want) / math.Abs(want); e > 1e-5 {
			t.Fatalf("%s: loss %.8g, TRL %.8g (relative error %.2g)", name, got, want, e)
		}
		grads, _, err := student.ExportTensors(true)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, n := range fx.Names() {
			if p, ok := strings.CutPrefix(n, name+".grad."); ok {
				names = append(names, p)
			}
		}
		sort.Strings(names)
		if len(names) != len(grads) {
			t.Fatalf("%s: %d gradients, TRL %d", name, len(grads), len(names))
		}
		worst := 0.0
		for _, n := range names {
			e := relErr(grads[n], f32(name+".grad."+n))
			worst = math.Max(worst, e)
			if e > 1e-4 {
				t.Errorf("%s: gradient of %s: relative error %.2g", name, n, e)
			}
		}
		t.Logf("%s: loss %.6f (TRL %.6f), worst gradient relative error %.2g", name, got, want, worst)
	}
}

// trimFloat writes x as Python's f"{x:g}" does for these values.
func trimFloat(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

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
