package train

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/kd/loss"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// Validate checks the recipe's values before anything is loaded, so that a
// wrong value is reported at once and names its key.
func (r *Recipe) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
	// NaN and ±Inf first, alone: every range check below would misread them.
	if keys := nonFinite(r); len(keys) > 0 {
		for _, k := range keys {
			errs = append(errs, errors.New(k))
		}
		return errors.Join(errs...)
	}
	if r.Student == "" {
		bad("student", "required (a Hugging Face model folder)")
	}
	if r.Data.Train == "" {
		bad("data.train", "required (a JSONL file)")
	}
	if !(r.Data.ValFraction >= 0 && r.Data.ValFraction < 1) {
		bad("data.val_fraction", "%g must be in [0, 1)", r.Data.ValFraction)
	}
	if r.Data.MaxLen <= 0 {
		bad("data.max_len", "%d must be positive", r.Data.MaxLen)
	}
	oneOf := func(key, v string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		bad(key, "%q is not one of %v", v, allowed)
	}
	oneOf("data.overflow", r.Data.Overflow, "truncate", "drop", "error")
	if err := data.CheckBuckets(r.Data.LengthBuckets); err != nil {
		bad("data.length_buckets", "%v are not positive lengths in ascending order", r.Data.LengthBuckets)
	}
	if !strings.HasSuffix(r.Data.Template, ".jinja") { // a chat template file
		oneOf("data.template", r.Data.Template, "auto", "jinja", "chatml", "qwen3", "none")
	}
	oneOf("data.on_bad_line", r.Data.OnBadLine, "skip", "stop")
	o := r.Objectives
	if o.SFT == nil && o.KD == nil && o.DPO == nil && o.Feature == nil && o.OnPolicy == nil && o.RL == nil {
		bad("objectives", "at least one of sft, kd, dpo, feature, onpolicy, rl is required")
	}
	weight := func(key string, w float64) {
		if !(w > 0) || math.IsInf(w, 0) {
			bad(key+".weight", "%g must be positive", w)
		}
	}
	if o.SFT != nil {
		weight("objectives.sft", o.SFT.Weight)
	}
	if o.KD != nil {
		weight("objectives.kd", o.KD.Weight)
		if _, err := o.KD.Config(); err != nil {
			bad("objectives.kd", "%v", err)
		}
		r.validateCrossTokenizer(bad)
	}
	if o.DPO != nil {
		weight("objectives.dpo", o.DPO.Weight)
		if _, err := o.DPO.Config(); err != nil {
			bad("objectives.dpo", "%v", err)
		}
		if o.SFT != nil || o.KD != nil || o.Feature != nil || o.OnPolicy != nil || o.RL != nil {
			bad("objectives.dpo", "trains on preference pairs and cannot be mixed with sft, kd, feature, onpolicy or rl in one run")
		}
	}
	if o.Feature != nil {
		weight("objectives.feature", o.Feature.Weight)
		oneOf("objectives.feature.loss", o.Feature.Loss, "mse", "cosine", "relation")
		if r.Teacher == "" {
			bad("objectives.feature", "needs an online teacher (teacher: a model folder)")
		}
	}
	if o.OnPolicy != nil {
		o.OnPolicy.check(r, bad)
	}
	if o.RL != nil {
		o.RL.check(r, bad)
	}
	p := r.Optim
	if !(p.LR > 0) {
		bad("optim.lr", "%g must be positive", p.LR)
	}
	if !(p.Beta1 >= 0 && p.Beta1 < 1) {
		bad("optim.beta1", "%g must be in [0, 1)", p.Beta1)
	}
	if !(p.Beta2 >= 0 && p.Beta2 < 1) {
		bad("optim.beta2", "%g must be in [0, 1)", p.Beta2)
	}
	if !(p.Eps > 0) {
		bad("optim.eps", "%g must be positive", p.Eps)
	}
	if !(p.WeightDecay >= 0) {
		bad("optim.weight_decay", "%g must be ≥ 0", p.WeightDecay)
	}
	if !(p.MaxGradNorm >= 0) {
		bad("optim.max_grad_norm", "%g must be ≥ 0 (0 turns clipping off)", p.MaxGradNorm)
	}
	oneOf("schedule.kind", r.Schedule.Kind, "cosine", "linear", "constant")
	if r.Schedule.WarmupSteps < 0 {
		bad("schedule.warmup_steps", "%d must be ≥ 0", r.Schedule.WarmupSteps)
	}
	if !(r.Schedule.MinLRRatio >= 0 && r.Schedule.MinLRRatio <= 1) {
		bad("schedule.min_lr_ratio", "%g must be in [0, 1]", r.Schedule.MinLRRatio)
	}
	if r.BatchSize <= 0 {
		bad("batch_size", "%d must be positive", r.BatchSize)
	}
	if r.GradAccum <= 0 {
		bad("grad_accum", "%d must be positive", r.GradAccum)
	}
	switch {
	case r.MaxSteps < 0:
		bad("max_steps", "%d must be ≥ 0 (0: run for epochs)", r.MaxSteps)
	case r.Epochs < 0:
		bad("epochs", "%g must be ≥ 0", r.Epochs)
	case r.MaxSteps == 0 && r.Epochs == 0:
		bad("max_steps", "set max_steps > 0 or epochs > 0")
	}
	for key, v := range map[string]int{"eval_every": r.EvalEvery, "save_every": r.SaveEvery, "log_every": r.LogEvery} {
		if v < 0 {
			bad(key, "%d must be ≥ 0", v)
		}
	}
	if r.Output == "" {
		bad("output", "required (the run's folder)")
	}
	oneOf("device", r.Device, "auto", "cpu", "cuda")
	oneOf("precision", r.Precision, "auto", "bf16", "fp32", "tf32")
	return errors.Join(errs...)
}

// Config turns the recipe's kd term into the loss package's configuration.
func (k *KDTerm) Config() (loss.KDConfig, error) {
	name := k.Divergence
	if name == "" {
		name = "forward_kl"
	}
	div, err := kdrt.ParseDivergence(name)
	if err != nil {
		return loss.KDConfig{}, err
	}
	c := loss.KDConfig{Divergence: div, Temperature: k.Temperature, Beta: k.Beta, Alpha: k.Alpha}
	if c.Temperature == 0 {
		c.Temperature = 1
	}
	if k.TSquared != nil && !*k.TSquared {
		c.NoTSquared = true
	}
	switch k.Tail {
	case "", "tail":
		c.Tail = kdrt.TailBucket
	case "renormalize":
		c.Tail = kdrt.Renormalize
	default:
		return c, fmt.Errorf("tail %q is not one of [tail renormalize]", k.Tail)
	}
	return c, c.Validate()
}

// Config turns the recipe's dpo term into the loss package's configuration.
func (d *DPOTerm) Config() (loss.DPOConfig, error) {
	name := d.Kind
	if name == "" {
		name = "sigmoid"
	}
	kind, err := loss.ParseDPOKind(name)
	if err != nil {
		return loss.DPOConfig{}, err
	}
	c := loss.DPOConfig{Kind: kind, Beta: d.Beta, LabelSmoothing: d.LabelSmoothing, Gamma: d.Gamma}
	if c.Beta == 0 {
		c.Beta = 0.1 // TRL's default
	}
	return c, c.Validate()
}

// validateCrossTokenizer checks objectives.kd's cross-tokenizer keys.
func (r *Recipe) validateCrossTokenizer(bad func(key, format string, a ...any)) {
	k := r.Objectives.KD
	switch k.CrossTokenizer {
	case "":
		if k.MatchedWeight != nil || k.TeacherMaxLen != 0 {
			bad("objectives.kd", "matched_weight and teacher_max_len apply to cross_tokenizer only")
		}
		return
	case "uld", "align":
	default:
		bad("objectives.kd.cross_tokenizer", "%q is not one of [uld align]", k.CrossTokenizer)
		return
	}
	if k.Divergence != "" && k.Divergence != "forward_kl" {
		bad("objectives.kd.divergence", "%s cannot be used with cross_tokenizer (align compares the shared ids by forward KL, as GOLD does with beta 0; uld sorts)", k.Divergence)
	}
	if w := k.MatchedWeight; w != nil && (k.CrossTokenizer != "align" || !(*w >= 0 && *w <= 1)) {
		bad("objectives.kd.matched_weight", "%g must be in [0, 1], with cross_tokenizer: align", *w)
	}
	if k.TeacherMaxLen < 0 {
		bad("objectives.kd.teacher_max_len", "%d must be ≥ 0", k.TeacherMaxLen)
	}
	if r.Teacher == "" && k.Cache == "" {
		bad("objectives.kd.cross_tokenizer", "needs a teacher (teacher: a model folder or GGUF file) or a teacher cache (objectives.kd.cache)")
	}
	if r.Data.Pack {
		bad("data.pack", "cannot be used with objectives.kd.cross_tokenizer (each example is aligned with the teacher's tokenization of it)")
	}
	if r.Data.Overflow == "drop" {
		bad("data.overflow", "drop cannot be used with objectives.kd.cross_tokenizer (the two tokenizers would drop different examples); use truncate")
	}
	if r.Objectives.Feature != nil {
		bad("objectives.feature", "cannot be used with objectives.kd.cross_tokenizer (the teacher's hidden states are of other tokens)")
	}
}
