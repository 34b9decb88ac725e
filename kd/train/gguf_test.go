package train

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/gguf"
	"github.com/kdnative/kdnative/model/safetensors"
	"github.com/kdnative/kdnative/model/tokenizer"
	"github.com/kdnative/kdnative/runtime/cpu"
)

// folderToGGUF writes a world model folder (llama, byte tokenizer) as a GGUF
// file the way llama.cpp's converter does: llama.cpp's tensor names, Q and K
// rows permuted (LlamaModel.permute), float32, the tokenizer as metadata.
func folderToGGUF(t *testing.T, dir, out string) {
	t.Helper()
	cfg, err := model.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	u32 := func(x int) gguf.Value { return gguf.Uint32Value(uint32(x)) }
	var tj struct {
		Model struct {
			Vocab map[string]int `json:"vocab"`
		} `json:"model"`
		Added []struct {
			ID int `json:"id"`
		} `json:"added_tokens"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &tj); err != nil {
		t.Fatal(err)
	}
	tokens := make([]string, len(tj.Model.Vocab))
	types := make([]int64, len(tokens))
	for tok, id := range tj.Model.Vocab {
		tokens[id], types[id] = tok, 1
	}
	for _, a := range tj.Added {
		types[a.ID] = 3 // control
	}
	md := []gguf.KV{
		{Key: "general.architecture", Value: gguf.StringValue("llama")},
		{Key: "llama.block_count", Value: u32(cfg.Layers)},
		{Key: "llama.context_length", Value: u32(cfg.MaxPositions)},
		{Key: "llama.embedding_length", Value: u32(cfg.Hidden)},
		{Key: "llama.feed_forward_length", Value: u32(cfg.Intermediate)},
		{Key: "llama.attention.head_count", Value: u32(cfg.Heads)},
		{Key: "llama.attention.head_count_kv", Value: u32(cfg.KVHeads)},
		{Key: "llama.attention.layer_norm_rms_epsilon", Value: gguf.Float32Value(float32(cfg.NormEps))},
		{Key: "llama.rope.freq_base", Value: gguf.Float32Value(float32(cfg.RopeTheta))},
		{Key: "llama.vocab_size", Value: u32(cfg.Vocab)},
		{Key: "tokenizer.ggml.model", Value: gguf.StringValue("gpt2")},
		{Key: "tokenizer.ggml.pre", Value: gguf.StringValue("gpt2")},
		{Key: "tokenizer.ggml.tokens", Value: gguf.StringsValue(tokens)},
		{Key: "tokenizer.ggml.token_type", Value: gguf.IntsValue(gguf.TypeInt32, types)},
		{Key: "tokenizer.ggml.merges", Value: gguf.StringsValue(nil)},
		{Key: "tokenizer.ggml.eos_token_id", Value: u32(tj.Model.Vocab["<|endoftext|>"])},
		{Key: "tokenizer.ggml.padding_token_id", Value: u32(tj.Model.Vocab["<|endoftext|>"])},
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	names := map[string]string{"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
	layer := regexp.MustCompile(`^model\.layers\.(\d+)\.(.+)\.weight$`)
	parts := map[string]string{"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
		"self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
		"mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
	var ts []gguf.WriteTensor
	for _, name := range set.Names() {
		info, _ := set.Info(name)
		v, err := set.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		g, ok := names[name]
		if m := layer.FindStringSubmatch(name); m != nil {
			g, ok = "blk."+m[1]+"."+parts[m[2]]+".weight", parts[m[2]] != ""
			if heads := map[string]int{"attn_q": cfg.Heads, "attn_k": cfg.KVHeads}[parts[m[2]]]; heads > 0 {
				v = permute(v, info.Shape[0], heads)
			}
		}
		if !ok {
			t.Fatalf("no GGUF name for %s", name)
		}
		dims := make([]int64, len(info.Shape))
		for i, d := range info.Shape {
			dims[len(dims)-1-i] = int64(d)
		}
		data := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(x))
		}
		ts = append(ts, gguf.WriteTensor{Name: g, Dims: dims, Type: gguf.F32, Data: data})
	}
	b, err := gguf.Encode(md, ts)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// permute is convert_hf_to_gguf.py's LlamaModel.permute on a [rows, cols]
// matrix: within each head, row p·hd/2 + i moves to row 2i + p.
func permute(w []float32, rows, heads int) []float32 {
	cols, hd := len(w)/rows, rows/heads
	out := make([]float32, len(w))
	for h := range heads {
		for i := range hd / 2 {
			for p := range 2 {
				copy(out[(h*hd+2*i+p)*cols:][:cols], w[(h*hd+p*hd/2+i)*cols:][:cols])
			}
		}
	}
	return out
}

// A KD run whose teacher and student are GGUF files is the same run as with
// the model folders they were made from: the same validation loss and KL
// before and after, bit for bit, and the saved student (with tokenizer files
// written from the GGUF metadata) loads and holds the same weights.
func TestGGUFTeacherAndStudent(t *testing.T) {
	w := newWorld(t)
	sg, tg := filepath.Join(w.dir, "student.gguf"), filepath.Join(w.dir, "teacher.gguf")
	folderToGGUF(t, w.student, sg)
	folderToGGUF(t, w.teacher, tg)
	kd := &KDTerm{Weight: 1, Divergence: "forward_kl", Temperature: 1}
	r1 := w.recipe(filepath.Join(w.dir, "folders"))
	r1.Teacher, r1.Objectives.KD = w.teacher, kd
	r2 := w.recipe(filepath.Join(w.dir, "gguf"))
	r2.Student, r2.Teacher, r2.Objectives.KD = sg, tg, kd
	s1, _ := run(t, r1, false)
	s2, _ := run(t, r2, false)
	if s1.Before != s2.Before || s1.After != s2.After {
		t.Fatalf("folders: %+v → %+v\nGGUF:    %+v → %+v", s1.Before, s1.After, s2.Before, s2.After)
	}
	if !(s2.After.KL < s2.Before.KL) {
		t.Errorf("KL %.4f → %.4f did not fall", s2.Before.KL, s2.After.KL)
	}
	a, err := model.LoadDir(r1.Output, cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	b, err := model.LoadDir(r2.Output, cpu.New())
	if err != nil {
		t.Fatalf("the student trained from a GGUF does not load: %v", err)
	}
	va, _, _ := a.ExportTensors(false)
	vb, _, _ := b.ExportTensors(false)
	for name, x := range va {
		for i := range x {
			if x[i] != vb[name][i] {
				t.Fatalf("%s[%d]: %g from folders, %g from GGUF", name, i, x[i], vb[name][i])
			}
		}
	}
	ta, _ := tokenizer.LoadDir(r1.Output)
	tb, err := tokenizer.LoadDir(r2.Output)
	if err != nil || ta.Hash() != tb.Hash() {
		t.Fatalf("the saved GGUF student's tokenizer: %v (same as the folder's: %v)", err, err == nil && ta.Hash() == tb.Hash())
	}
}

// TestInitModelFromGGUFTokenizer: init-model takes a GGUF file as its
// tokenizer (a new student for a GGUF teacher), writing the tokenizer files
// its metadata describes; the student and the GGUF then share the
// tokenizer, as a distillation run checks.
func TestInitModelFromGGUFTokenizer(t *testing.T) {
	w := newWorld(t)
	tg := filepath.Join(w.dir, "teacher.gguf")
	folderToGGUF(t, w.teacher, tg)
	out := filepath.Join(w.dir, "new-student")
	if err := InitModel(cpu.New(), filepath.Join(w.student, "config.json"), tg, 1, out, false); err != nil {
		t.Fatal(err)
	}
	a, err := tokenizer.LoadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tokenizer.LoadDir(tg)
	if err != nil || a.Hash() != b.Hash() {
		t.Fatalf("the new student's tokenizer differs from the GGUF's (%v)", err)
	}
}
