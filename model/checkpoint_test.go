package model_test

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/safetensors"
	kdrt "github.com/kdnative/kdnative/runtime"
	"github.com/kdnative/kdnative/runtime/cpu"
	"github.com/kdnative/kdnative/runtime/half"
)

// TestSaveRoundTrip saves each fixture model and checks that the folder holds
// exactly the tensors transformers wrote (same names, shapes and values, so
// transformers loads it unchanged) and that loading it back gives the same
// logits.
func TestSaveRoundTrip(t *testing.T) {
	for _, name := range fixtureCases {
		t.Run(name, func(t *testing.T) {
			fx := openFixture(t, name)
			m, err := model.LoadDir(fx.dir, cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			out := t.TempDir()
			if err := m.SaveDir(out, 0); err != nil {
				t.Fatal(err)
			}
			orig, err := safetensors.OpenDir(fx.dir)
			if err != nil {
				t.Fatal(err)
			}
			defer orig.Close()
			saved, err := safetensors.OpenDir(out)
			if err != nil {
				t.Fatal(err)
			}
			defer saved.Close()
			if a, b := strings.Join(orig.Names(), " "), strings.Join(saved.Names(), " "); a != b {
				t.Fatalf("saved tensor names differ:\n saved %s\n HF    %s", b, a)
			}
			for _, n := range orig.Names() {
				oi, _ := orig.Info(n)
				si, _ := saved.Info(n)
				if !kdrt.SameShape(oi.Shape, si.Shape) {
					t.Fatalf("%s: saved shape %v, HF %v", n, si.Shape, oi.Shape)
				}
				ov, _ := orig.Float32(n)
				sv, _ := saved.Float32(n)
				for i := range ov {
					if ov[i] != sv[i] {
						t.Fatalf("%s[%d]: saved %g, HF %g", n, i, sv[i], ov[i])
					}
				}
			}
			sf, err := safetensors.Open(filepath.Join(out, "model.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			defer sf.Close()
			if md := sf.Metadata(); md["format"] != "pt" {
				t.Errorf("metadata %v lacks format=pt, which transformers requires", md)
			}
			var origCfg, savedCfg map[string]any
			readJSON(t, filepath.Join(fx.dir, "config.json"), &origCfg)
			readJSON(t, filepath.Join(out, "config.json"), &savedCfg)
			for k, v := range origCfg {
				if k == "dtype" || k == "torch_dtype" {
					continue
				}
				a, _ := json.Marshal(v)
				b, _ := json.Marshal(savedCfg[k])
				if string(a) != string(b) {
					t.Errorf("config %s: saved %s, source %s", k, b, a)
				}
			}
			m2, err := model.LoadDir(out, cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			b := fx.batch(t)
			l1, _ := m.Forward(b)
			l2, err := m2.Forward(b)
			if err != nil || l1 != l2 {
				t.Fatalf("reloaded loss %v (err %v), original %v", l2, err, l1)
			}
		})
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatal(err)
	}
}

// TestSaveSharded writes a model in several shards and loads it back.
func TestSaveSharded(t *testing.T) {
	fx := openFixture(t, "llama_gqa")
	m, err := model.LoadDir(fx.dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := m.SaveDir(out, 40_000); err != nil {
		t.Fatal(err)
	}
	shards, _ := filepath.Glob(filepath.Join(out, "model-*-of-*.safetensors"))
	if len(shards) < 3 {
		t.Fatalf("want ≥3 shards, got %v", shards)
	}
	m2, err := model.LoadDir(out, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	b := fx.batch(t)
	l1, _ := m.Forward(b)
	l2, _ := m2.Forward(b)
	if l1 != l2 {
		t.Fatalf("sharded reload loss %v, original %v", l2, l1)
	}
}

// TestSaveConfigFails: when config.json cannot be put in place (a folder
// that is not empty stands at its name) SaveDir says which file, leaves what
// stood there untouched and no temporary file; the weights written before it
// are whole and shared (mode 0644, not os.CreateTemp's 0600).
func TestSaveConfigFails(t *testing.T) {
	fx := openFixture(t, "llama_gqa")
	m, err := model.LoadDir(fx.dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cfg := filepath.Join(out, "config.json")
	if err := os.MkdirAll(cfg, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg, "keep"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = m.SaveDir(out, 0)
	if err == nil || !strings.Contains(err.Error(), "writing "+cfg) {
		t.Fatalf("got %v, want an error writing %s", err, cfg)
	}
	if b, _ := os.ReadFile(filepath.Join(cfg, "keep")); string(b) != "kept" {
		t.Fatalf("what stood at config.json now holds %q", b)
	}
	if tmp, _ := filepath.Glob(filepath.Join(out, ".*")); len(tmp) != 0 {
		t.Fatalf("temporary files left: %v", tmp)
	}
	weights := filepath.Join(out, safetensors.SingleFileName)
	st, err := os.Stat(weights)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Fatalf("%s has mode %v, want 0644", weights, st.Mode().Perm())
	}
	f, err := safetensors.Open(weights)
	if err != nil {
		t.Fatalf("the weights written before the failure: %v", err)
	}
	f.Close()
}

// copyFixture copies a fixture model folder so a test can break it.
func copyFixture(t *testing.T, name string) string {
	t.Helper()
	src := filepath.Join("testdata", "fixtures", name)
	dst := t.TempDir()
	for _, f := range []string{"config.json", "model.safetensors"} {
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// rewriteWeights rewrites a folder's model.safetensors after edit changes
// its tensor list.
func rewriteWeights(t *testing.T, dir string, edit func([]safetensors.Tensor) []safetensors.Tensor) {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	var ts []safetensors.Tensor
	for _, n := range f.Names() {
		info, _ := f.Info(n)
		v, _ := f.Float32(n)
		ts = append(ts, safetensors.Tensor{Name: n, DType: kdrt.F32, Shape: info.Shape, F32: v})
	}
	f.Close()
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), edit(ts), map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
}

func editConfig(t *testing.T, dir string, edit func(map[string]any)) {
	t.Helper()
	var cfg map[string]any
	readJSON(t, filepath.Join(dir, "config.json"), &cfg)
	edit(cfg)
	data, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrors(t *testing.T) {
	cases := []struct {
		name   string
		base   string
		break_ func(t *testing.T, dir string)
		want   []string // substrings of the error
	}{
		{"missing weight", "llama_gqa", func(t *testing.T, dir string) {
			rewriteWeights(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				var out []safetensors.Tensor
				for _, x := range ts {
					if x.Name != "model.layers.1.mlp.up_proj.weight" {
						out = append(out, x)
					}
				}
				return out
			})
		}, []string{"missing", "model.layers.1.mlp.up_proj.weight", "[80 48]"}},
		{"extra weight", "qwen2_bias", func(t *testing.T, dir string) {
			rewriteWeights(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				return append(ts, safetensors.Tensor{Name: "model.layers.0.self_attn.o_proj.bias", DType: kdrt.F32, Shape: []int{48}, F32: make([]float32, 48)})
			})
		}, []string{"model.layers.0.self_attn.o_proj.bias", "does not have"}},
		{"wrong shape", "gpt2", func(t *testing.T, dir string) {
			rewriteWeights(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				for i, x := range ts {
					if x.Name == "transformer.wpe.weight" {
						ts[i].Shape, ts[i].F32 = []int{8, 48}, x.F32[:8*48]
					}
				}
				return ts
			})
		}, []string{"transformer.wpe.weight", "[8 48]", "[16 48]"}},
		{"unsupported model_type", "llama_gqa", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c map[string]any) { c["model_type"] = "bert" })
		}, []string{"config.json", `model_type "bert" is not supported`}},
		{"heads do not divide", "llama_gqa", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c map[string]any) { c["num_key_value_heads"] = 4 })
		}, []string{"config.json", "num_attention_heads 6 is not a multiple of num_key_value_heads 4"}},
		{"hidden does not split into heads", "gpt2", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c map[string]any) { c["n_head"] = 5 })
		}, []string{"config.json", "n_embd 48 is not a multiple of n_head 5"}},
		{"missing size", "mistral_window", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c map[string]any) { delete(c, "intermediate_size") })
		}, []string{"config.json", "missing intermediate_size"}},
		{"negative size", "llama_gqa", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c map[string]any) { c["vocab_size"] = -3 })
		}, []string{"config.json", "vocab_size = -3"}},
		{"config says more layers than the weights hold", "llama_tied", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c map[string]any) { c["num_hidden_layers"] = 3 })
		}, []string{"missing", "model.layers.2."}},
		// The damaged config.json sizes: each panicked or ran the
		// process out of memory before any error.
		{"head_dim 2^40", "llama_gqa", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c map[string]any) { c["head_dim"] = 1 << 40 })
		}, []string{"config.json", "head_dim = 1099511627776 is larger than kdnative supports (at most 4096)"}},
		{"num_hidden_layers 2^62", "llama_gqa", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c map[string]any) { c["num_hidden_layers"] = 1 << 62 })
		}, []string{"config.json", "num_hidden_layers = 4611686018427387904 is larger than kdnative supports"}},
		{"vocab_size 1e10", "llama_gqa", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c map[string]any) { c["vocab_size"] = 10_000_000_000 })
		}, []string{"config.json", "vocab_size = 10000000000 is larger than kdnative supports (at most 16777216)"}},
		{"vocab_size in bounds but not the weights'", "llama_gqa", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c map[string]any) { c["vocab_size"] = model.MaxVocab })
		}, []string{"model.embed_tokens.weight", "has shape [97 48], config.json implies [16777216 48]"}},
		{"n_positions 2^40", "gpt2", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c map[string]any) { c["n_positions"] = 1 << 40 })
		}, []string{"config.json", "n_positions = 1099511627776 is larger than kdnative supports (at most 2147483647)"}},
		// The header of one tensor with 49 million dimensions (here
		// 1,000) loaded for minutes and then reported "missing 20 weights".
		{"tensor of 1,000 dimensions", "llama_gqa", func(t *testing.T, dir string) {
			header := `{"model.embed_tokens.weight":{"dtype":"F32","shape":[` + strings.Repeat("1,", 999) + `1],"data_offsets":[0,4]}}`
			file := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
			file = append(append(file, header...), 0, 0, 0, 0)
			os.WriteFile(filepath.Join(dir, "model.safetensors"), file, 0o644)
		}, []string{"model.safetensors", `"model.embed_tokens.weight"`, "more than 64 dimensions"}},
		{"config not JSON", "llama_gqa", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "config.json"), []byte("{\"model_type\": "), 0o644)
		}, []string{"config.json", "not valid JSON"}},
		{"truncated weights", "llama_gqa", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model.safetensors")
			data, _ := os.ReadFile(p)
			os.WriteFile(p, data[:len(data)-100], 0o644)
		}, []string{"model.safetensors"}},
		{"no weights", "llama_gqa", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "model.safetensors"))
		}, []string{dirToken}},
		{"unsupported activation", "gpt2", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c map[string]any) { c["activation_function"] = "relu" })
		}, []string{"config.json", "relu"}},
		{"unsupported rope scaling", "llama_gqa", func(t *testing.T, dir string) {
			editConfig(t, dir, func(c map[string]any) {
				c["rope_parameters"] = map[string]any{"rope_theta": 10000.0, "rope_type": "yarn", "factor": 4.0}
			})
		}, []string{"config.json", `"yarn"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyFixture(t, tc.base)
			tc.break_(t, dir)
			_, err := model.LoadDir(dir, cpu.New())
			if err == nil {
				t.Fatal("loaded without error")
			}
			msg := err.Error()
			for _, w := range tc.want {
				if w == dirToken {
					w = dir
				}
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
		})
	}
}

// dirToken in a case's wants stands for the broken folder's path.
const dirToken = "\x00dir"

func TestBatchErrors(t *testing.T) {
	fx := openFixture(t, "gpt2")
	m, err := model.LoadDir(fx.dir, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	long := make([]int32, 17) // GPT-2 fixture has n_positions 16
	cases := []struct {
		b    model.Batch
		want string
	}{
		{model.Batch{B: 1, T: 17, IDs: long}, "longer than the model allows (16 positions)"},
		{model.Batch{B: 1, T: 2, IDs: []int32{1, 97}}, "token id 97 at index 1 is outside the vocabulary [0, 97)"},
		{model.Batch{B: 1, T: 2, IDs: []int32{1, 2}, Targets: []int32{5, 200}}, "target 200"},
		{model.Batch{B: 2, T: 2, IDs: []int32{1, 2}}, "has 2 input ids"},
		{model.Batch{B: 1, T: 2, IDs: []int32{1, 2}, Targets: []int32{kdrt.IgnoreIndex, kdrt.IgnoreIndex}}, "no target tokens"},
	}
	for _, c := range cases {
		_, err := m.Forward(c.b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("batch %+v: error %v, want it to mention %q", c.b, err, c.want)
		}
	}
	if err := m.Backward(); err == nil {
		t.Error("Backward after a failed forward gave no error")
	}
}

// TestLoadHalfPrecision loads checkpoints stored in BF16 and F16: the model's
// weights are the stored values widened exactly to float32.
func TestLoadHalfPrecision(t *testing.T) {
	for _, dt := range []kdrt.DType{kdrt.BF16, kdrt.F16} {
		t.Run(dt.String(), func(t *testing.T) {
			dir := copyFixture(t, "qwen2_bias")
			want := map[string][]float32{}
			rewriteWeights(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				for i := range ts {
					ts[i].DType = dt
					w := make([]float32, len(ts[i].F32))
					for j, v := range ts[i].F32 {
						if dt == kdrt.BF16 {
							w[j] = half.BF16ToF32(half.F32ToBF16(v))
						} else {
							w[j] = half.F16ToF32(half.F32ToF16(v))
						}
					}
					want[ts[i].Name] = w
				}
				return ts
			})
			m, err := model.LoadDir(dir, cpu.New())
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := m.ExportTensors(false)
			if err != nil {
				t.Fatal(err)
			}
			for n, w := range want {
				for i := range w {
					if got[n][i] != w[i] {
						t.Fatalf("%s[%d] = %g, stored %s value %g", n, i, got[n][i], dt, w[i])
					}
				}
			}
		})
	}
}
