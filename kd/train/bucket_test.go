package train

import (
	"io"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// TestPaddingChangesNoLoss: a batch padded to a length bucket (here 64,
// from rows of about 20 tokens) gives the loss and every gradient the
// unpadded batch gives, up to float32 rounding (the padding positions have
// no targets and attention is causal with the padding on the right), for
// sft + online kd and for dpo.
func TestPaddingChangesNoLoss(t *testing.T) {
	w := newWorld(t)
	for _, c := range []struct {
		name string
		edit func(r *Recipe)
	}{
		{"sft+kd", func(r *Recipe) {
			r.Teacher = w.teacher
			r.Objectives.SFT = &SFTTerm{Weight: 1}
			r.Objectives.KD = &KDTerm{Weight: 0.5, Temperature: 2}
		}},
		{"dpo", func(r *Recipe) {
			r.Data.Train = w.pairs
			r.Objectives.DPO = &DPOTerm{Weight: 1, Beta: 0.1}
		}},
	} {
		r := w.recipe(filepath.Join(w.dir, "pad-"+c.name))
		r.BatchSize = 3
		c.edit(&r)
		tr := &trainer{r: r, be: cpu.New(), log: io.Discard, start: time.Now()}
		if err := tr.setup(Options{}); err != nil {
			t.Fatal(err)
		}
		var pairs []data.Pair
		if tr.pairs != nil {
			var err error
			pairs, _, _, err = data.LoadPairs(r.Data.Train, tr.tok, data.Options{MaxLen: r.Data.MaxLen, Overflow: "truncate",
				Template: "none", OnBadLine: "skip", Vocab: tr.student.Config.Vocab})
			if err != nil {
				t.Fatal(err)
			}
		}
		run := func(buckets []int) (l float64, T int, grads [][]float32) {
			lc := data.LoaderConfig{PadID: tr.pad, NoShuffle: true, Buckets: buckets, MaxLen: r.Data.MaxLen}
			var st stepStats
			tr.sums.Reset() // as each step does (trainStep)
			if err := tr.student.ZeroGrad(); err != nil {
				t.Fatal(err)
			}
			var err error
			if pairs != nil {
				probe, perr := data.NewPairLoader(pairs, lc)
				if perr != nil {
					t.Fatal(perr)
				}
				b, _ := probe.Next(r.BatchSize)
				T = b.T
				tr.pairs, _ = data.NewPairLoader(pairs, lc)
				err = tr.dpoMicroBatch(&st, 1)
			} else {
				probe, perr := data.NewLoader(tr.train, lc)
				if perr != nil {
					t.Fatal(perr)
				}
				b, _ := probe.Next(r.BatchSize)
				T = b.T
				tr.loader, _ = data.NewLoader(tr.train, lc)
				err = tr.sftMicroBatch(&st, 1)
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tr.student.Params() {
				g := make([]float32, p.G.Numel())
				tr.be.Download(p.G, g)
				grads = append(grads, g)
			}
			return st.loss, T, grads
		}
		l0, T0, g0 := run(nil)
		l1, T1, g1 := run([]int{64})
		t.Logf("%s: loss %.9g at T=%d, %.9g padded to T=%d", c.name, l0, T0, l1, T1)
		if T1 != 64 || T0 >= 64 {
			t.Fatalf("%s: batch lengths %d and %d; want a short batch and one padded to 64", c.name, T0, T1)
		}
		if math.Abs(l1-l0) > 1e-6*math.Abs(l0) {
			t.Errorf("%s: loss %.9g unpadded, %.9g padded", c.name, l0, l1)
		}
		var num, den float64
		for i := range g0 {
			for j := range g0[i] {
				d := float64(g1[i][j] - g0[i][j])
				num += d * d
				den += float64(g0[i][j]) * float64(g0[i][j])
			}
		}
		if rel := math.Sqrt(num / den); !(rel < 1e-5) || den == 0 {
			t.Errorf("%s: the gradients differ by %.3g (relative L2) when padded", c.name, rel)
		}
		tr.metrics.close()
	}
}

// TestLengthBucketsKey: data.length_buckets defaults to multiples of 64,
// reads from a recipe and from --set, and bad lists are refused naming the
// key.
func TestLengthBucketsKey(t *testing.T) {
	if got := DefaultRecipe().Data.LengthBuckets; len(got) != 1 || got[0] != 64 {
		t.Errorf("default length_buckets %v, want [64]", got)
	}
	r, err := ParseRecipe([]byte("student: s\noutput: o\ndata: {train: t.jsonl, length_buckets: [256, 512, 1024]}\nobjectives: {sft: {weight: 1}}\n"), "r.yaml")
	if err != nil || len(r.Data.LengthBuckets) != 3 || r.Data.LengthBuckets[2] != 1024 {
		t.Fatalf("recipe with length_buckets: %v, %v", r.Data.LengthBuckets, err)
	}
	if err := r.Set("data.length_buckets=[1]"); err != nil || len(r.Data.LengthBuckets) != 1 || r.Data.LengthBuckets[0] != 1 {
		t.Errorf("--set data.length_buckets=[1]: %v, %v", r.Data.LengthBuckets, err)
	}
	if err := r.Validate(); err != nil {
		t.Errorf("a good recipe: %v", err)
	}
	for _, bad := range []string{"[512, 256]", "[0]", "[64, 64]"} {
		if err := r.Set("data.length_buckets=" + bad); err != nil {
			t.Fatal(err)
		}
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "data.length_buckets") {
			t.Errorf("length_buckets %s: %v", bad, err)
		}
	}
}
