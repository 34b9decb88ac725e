package train

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Recipe says everything about a training run. It is read from YAML (unknown
// keys are errors, so a typo cannot silently fall back to a default), and
// every field can be overridden from the command line with --set key=value
// using the YAML key path (--set optim.lr=1e-4).
type Recipe struct {
	// Student is the model to train: a Hugging Face folder.
	Student string `yaml:"student"`
	// Teacher is an online teacher (a Hugging Face folder run without
	// gradients beside the student); empty when the teacher comes from the
	// data (top-k fields) or there is none (pure SFT or DPO).
	Teacher string `yaml:"teacher"`
	// Tokenizer is the folder holding tokenizer.json; empty means the
	// student's folder.
	Tokenizer string     `yaml:"tokenizer"`
	Data      DataRecipe `yaml:"data"`
	// Objectives are the weighted terms of the loss; at least one is needed.
	Objectives Objectives     `yaml:"objectives"`
	Optim      OptimRecipe    `yaml:"optim"`
	Schedule   ScheduleRecipe `yaml:"schedule"`
	// BatchSize is the sequences per micro-batch; GradAccum micro-batches
	// make one optimizer step.
	BatchSize int `yaml:"batch_size"`
	GradAccum int `yaml:"grad_accum"`
	// MaxSteps (optimizer steps) or Epochs bounds the run; MaxSteps wins when
	// both are set.
	MaxSteps int     `yaml:"max_steps"`
	Epochs   float64 `yaml:"epochs"`
	// EvalEvery and SaveEvery are in optimizer steps (0: only at the end).
	EvalEvery int `yaml:"eval_every"`
	SaveEvery int `yaml:"save_every"`
	// EvalTasks are task files (kd/tasks) the student is evaluated on at
	// every evaluation, into metrics.jsonl and tasks.png.
	EvalTasks []EvalTask `yaml:"eval_tasks"`
	// LogEvery is how often a line of metrics is written (steps).
	LogEvery int    `yaml:"log_every"`
	Output   string `yaml:"output"`
	Seed     uint64 `yaml:"seed"`
	// Device is auto, cpu or cuda.
	Device string `yaml:"device"`
	// Precision is auto (bf16 on CUDA, fp32 on the CPU), bf16 (weights and
	// activations bf16; products, gradients, master weights, AdamW moments,
	// logits and losses fp32), fp32, or tf32 (fp32 with cuBLAS's TF32
	// tensor-core products; CUDA only).
	Precision string `yaml:"precision"`
}

// DataRecipe is where the examples come from and how they are shaped.
type DataRecipe struct {
	Train string `yaml:"train"`
	// Val is a separate validation file; without it ValFraction of the
	// training lines are held out.
	Val         string  `yaml:"val"`
	ValFraction float64 `yaml:"val_fraction"`
	MaxLen      int     `yaml:"max_len"`
	// Overflow is truncate, drop or error for sequences longer than MaxLen.
	Overflow string `yaml:"overflow"`
	Pack     bool   `yaml:"pack"`
	// LengthBuckets pad each batch to one of a few lengths
	// (data.BucketLength): the smallest listed one not below its longest
	// row, beyond the largest the next multiple of it, never beyond
	// MaxLen. Fixed shapes let the device reuse its buffers and kernels.
	// [64] (the default) pads to multiples of 64; [1] to the longest row.
	LengthBuckets []int `yaml:"length_buckets"`
	// Template is auto (the model's own chat template, rendered as
	// transformers does), jinja, a .jinja file, chatml, qwen3 or none.
	Template     string `yaml:"template"`
	SystemPrompt string `yaml:"system_prompt"`
	// OnBadLine is skip (count and report) or stop.
	OnBadLine string `yaml:"on_bad_line"`
}

// Objectives are the loss terms; a nil term is off.
type Objectives struct {
	SFT     *SFTTerm     `yaml:"sft"`
	KD      *KDTerm      `yaml:"kd"`
	DPO     *DPOTerm     `yaml:"dpo"`
	Feature *FeatureTerm `yaml:"feature"`
	// OnPolicy is on-policy distillation (onpolicy.go).
	OnPolicy *OnPolicyTerm `yaml:"onpolicy"`
	// RL is GRPO from a rule or the teacher's judgement (rl.go).
	RL *RLTerm `yaml:"rl"`
}

// SFTTerm is cross-entropy on the data's responses.
type SFTTerm struct {
	Weight float64 `yaml:"weight"`
}

// KDTerm is a divergence to the teacher's next-token distribution.
type KDTerm struct {
	Weight float64 `yaml:"weight"`
	// Divergence is forward_kl, reverse_kl, jsd, tvd, skew_kl or skew_reverse_kl.
	Divergence  string  `yaml:"divergence"`
	Temperature float64 `yaml:"temperature"`
	Beta        float64 `yaml:"beta"`
	Alpha       float64 `yaml:"alpha"`
	// TSquared multiplies the loss by T² (Hinton); default true.
	TSquared *bool `yaml:"t_squared"`
	// Tail is renormalize or tail, for a sparse (top-k) teacher.
	Tail string `yaml:"tail"`
	// Cache is a teacher cache (kdnative cache-teacher) to use as the
	// teacher instead of running one.
	Cache string `yaml:"cache"`
	// CrossTokenizer, uld or align, distills from a teacher whose tokenizer
	// differs from the student's, aligning the two tokenizations by their
	// text (docs/cross-tokenizer.md): uld compares sorted probabilities
	// (Universal Logit Distillation), align the ids both vocabularies have
	// by forward KL and the rest by ULD (TRL's GOLD).
	CrossTokenizer string `yaml:"cross_tokenizer"`
	// MatchedWeight (align) weighs the forward KL over the shared ids, and
	// 1 − it ULD over the rest; unset: GOLD's share of shared ids in the
	// teacher's vocabulary.
	MatchedWeight *float64 `yaml:"matched_weight"`
	// TeacherMaxLen is the teacher's longest sequence in its own tokens
	// (cross_tokenizer; 0: the teacher's max_position_embeddings, as
	// cache-teacher's default).
	TeacherMaxLen int `yaml:"teacher_max_len"`
}

// DPOTerm is preference optimization on (prompt, chosen, rejected).
type DPOTerm struct {
	Weight float64 `yaml:"weight"`
	// Kind is sigmoid, hinge, ipo, robust or simpo.
	Kind           string  `yaml:"kind"`
	Beta           float64 `yaml:"beta"`
	LabelSmoothing float64 `yaml:"label_smoothing"`
	Gamma          float64 `yaml:"gamma"`
	// Reference is the frozen reference model's folder; empty means the
	// student as it was at step 0.
	Reference string `yaml:"reference"`
}

// FeatureTerm matches hidden states of mapped layers.
type FeatureTerm struct {
	Weight  float64 `yaml:"weight"`
	Loss    string  `yaml:"loss"`
	Layers  string  `yaml:"layers"`
	Project bool    `yaml:"project"`
}

// OptimRecipe is AdamW's configuration.
type OptimRecipe struct {
	LR          float64 `yaml:"lr"`
	Beta1       float64 `yaml:"beta1"`
	Beta2       float64 `yaml:"beta2"`
	Eps         float64 `yaml:"eps"`
	WeightDecay float64 `yaml:"weight_decay"`
	MaxGradNorm float64 `yaml:"max_grad_norm"`
}

// ScheduleRecipe is the learning-rate schedule: linear warmup, then cosine,
// linear or constant.
type ScheduleRecipe struct {
	Kind        string  `yaml:"kind"`
	WarmupSteps int     `yaml:"warmup_steps"`
	MinLRRatio  float64 `yaml:"min_lr_ratio"`
}

// DefaultRecipe has the values a recipe starts from before its file and
// flags are applied.
func DefaultRecipe() Recipe {
	return Recipe{
		Data:      DataRecipe{ValFraction: 0.05, MaxLen: 512, Overflow: "truncate", Template: "auto", OnBadLine: "skip", LengthBuckets: []int{64}},
		Optim:     OptimRecipe{LR: 1e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, MaxGradNorm: 1},
		Schedule:  ScheduleRecipe{Kind: "cosine", WarmupSteps: 0, MinLRRatio: 0.1},
		BatchSize: 8, GradAccum: 1, Epochs: 1, LogEvery: 1, Seed: 1, Device: "auto", Precision: "auto",
	}
}

// LoadRecipe reads a YAML recipe over the defaults. Unknown keys, wrong
// types, non-finite numbers and duplicate keys are errors naming the file,
// the line and the key: "recipe r.yaml:7: unknown key data.max_lenn (did you
// mean max_len?)".
func LoadRecipe(path string) (Recipe, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return DefaultRecipe(), fmt.Errorf("recipe: %w", err)
	}
	return ParseRecipe(data, path)
}

// ParseRecipe is LoadRecipe for a recipe already read; path names it in
// errors.
func ParseRecipe(data []byte, path string) (Recipe, error) {
	r := DefaultRecipe()
	if probs := decodeRecipe(data, &r); len(probs) > 0 {
		lines := make([]string, len(probs))
		for i, p := range probs {
			if p.Line > 0 {
				lines[i] = fmt.Sprintf("recipe %s:%d: %s", path, p.Line, p.Msg)
			} else {
				lines[i] = fmt.Sprintf("recipe %s: %s", path, p.Msg)
			}
		}
		return r, errors.New(strings.Join(lines, "\n"))
	}
	return r, nil
}

// decodeRecipe decodes strictly into r (fields absent from data keep r's
// values). It first checks the YAML against the Recipe type, so that what is
// wrong is said in the recipe's terms; yaml's own strict decoding stays as a
// second guard.
func decodeRecipe(data []byte, r *Recipe) []recipeProblem {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return []recipeProblem{syntaxProblem(err)}
	}
	if probs := checkRecipeYAML(&doc); len(probs) > 0 {
		return probs
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(r); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty recipe is all defaults
		return []recipeProblem{{Msg: cleanYAMLError(err).Error()}}
	}
	return nil
}

// cleanYAMLError drops yaml's "yaml: unmarshal errors:\n  " preamble.
func cleanYAMLError(err error) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
	msg = strings.ReplaceAll(msg, "\n  ", "; ")
	msg = strings.TrimSpace(strings.TrimPrefix(msg, "yaml: "))
	return errors.New(msg)
}

// Set applies one --set key=value override, the key being the YAML path
// (data.max_len, objectives.kd.temperature). The value is parsed as YAML, so
// types are checked as the file's are; an objective named by a key is
// switched on.
func (r *Recipe) Set(kv string) error {
	key, value, ok := strings.Cut(kv, "=")
	if !ok || key == "" {
		return fmt.Errorf("--set %q: want key=value", kv)
	}
	parts := strings.Split(key, ".")
	// Build {a: {b: {c: value}}} and decode it strictly over the recipe.
	var node yaml.Node
	if err := yaml.Unmarshal([]byte(value), &node); err != nil {
		return fmt.Errorf("--set %s: value %q is not valid YAML: %v", key, value, err)
	}
	var val any = &node
	if len(node.Content) > 0 {
		val = node.Content[0]
	}
	for i := len(parts) - 1; i >= 0; i-- {
		val = map[string]any{parts[i]: val}
	}
	data, err := yaml.Marshal(val)
	if err != nil {
		return fmt.Errorf("--set %s: %v", key, err)
	}
	if probs := decodeRecipe(data, r); len(probs) > 0 {
		msgs := make([]string, len(probs))
		for i, p := range probs {
			msgs[i] = p.Msg // lines of the YAML made here mean nothing to the user
		}
		return fmt.Errorf("--set %s: %s", kv, strings.Join(msgs, "; "))
	}
	return nil
}

// Keys lists every settable key path, for help text and error messages.
func Keys() []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		for i := range t.NumField() {
			f := t.Field(i)
			name := strings.Split(f.Tag.Get("yaml"), ",")[0]
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft, prefix+name+".")
				continue
			}
			out = append(out, prefix+name)
		}
	}
	walk(reflect.TypeOf(Recipe{}), "")
	return out
}

// Marshal writes the recipe as YAML (saved beside each run's output so the
// run can be reproduced).
func (r *Recipe) Marshal() ([]byte, error) { return yaml.Marshal(r) }
