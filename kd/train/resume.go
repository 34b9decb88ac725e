package train

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ResumableKeys are the recipe keys that may differ between a checkpoint's
// recipe and the recipe --resume continues it with: how long the run goes on
// (the learning-rate schedule follows the new length), how often it
// evaluates, saves and logs, the device and the precision (master weights
// and moments are saved in fp32 either way). Any other change (the data, the
// objectives, the optimizer, the batch, the seed) would make the resumed run
// a different run than the one checkpointed, and is refused.
var ResumableKeys = []string{"max_steps", "epochs", "eval_every", "save_every", "log_every", "device", "precision", "output"}

// pathKeys name files and folders. They may change on resume (folders move;
// the demo unpacks its assets to a new temporary folder each time): what
// they hold is checked on its own (the data's fingerprint, the tokenizer's
// hash, the teacher cache's header), and the change is reported.
var pathKeys = []string{"student", "teacher", "tokenizer", "data.train", "data.val", "objectives.kd.cache", "objectives.dpo.reference",
	"objectives.onpolicy.teacher", "objectives.onpolicy.teacher_endpoint", "objectives.rl.judge", "objectives.rl.judge_endpoint"}

// checkResumeRecipe compares the recipe with the one the checkpoint dir was
// made with (its recipe.yaml, else the output folder's) and refuses a change
// outside ResumableKeys and pathKeys, listing every changed key with its old
// and new value; allowed changes are reported on log.
func (t *trainer) checkResumeRecipe(dir string) error {
	path := filepath.Join(dir, recipeFile)
	raw, err := os.ReadFile(path)
	if isNotExist(err) {
		path = filepath.Join(t.r.Output, recipeFile)
		raw, err = os.ReadFile(path)
	}
	if isNotExist(err) {
		t.logf("resume: no recipe saved with %s: the recipe is not compared", filepath.Base(dir))
		return nil
	}
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	saved := DefaultRecipe()
	if err := decodeRecipe(raw, &saved); err != nil {
		t.logf("resume: the saved recipe %s does not read (%v): the recipe is not compared", path, err)
		return nil
	}
	oldKV, newKV := flattenRecipe(saved), flattenRecipe(t.r)
	var refused, allowed, moved []string
	for _, k := range unionKeys(oldKV, newKV) {
		o, n := oldKV[k], newKV[k]
		if o == n {
			continue
		}
		change := fmt.Sprintf("%s: %s → %s", k, o, n)
		switch {
		case contains(pathKeys, k):
			if filepath.Clean(o) != filepath.Clean(n) {
				moved = append(moved, change)
			}
		case contains(ResumableKeys, k):
			if k != "output" {
				allowed = append(allowed, change)
			}
		default:
			refused = append(refused, change)
		}
	}
	if len(refused) > 0 {
		return fmt.Errorf("resume: the recipe differs from the one %s was made with (%s):\n  %s\n"+
			"only %s may change on resume (and paths, when files moved): set these back, or start a new run (another output folder, or --overwrite)",
			filepath.Base(dir), path, strings.Join(refused, "\n  "), strings.Join(ResumableKeys, ", "))
	}
	if len(allowed) > 0 {
		t.logf("resume: changed since %s: %s", filepath.Base(dir), strings.Join(allowed, "; "))
	}
	if len(moved) > 0 {
		t.logf("resume: paths changed since %s: %s", filepath.Base(dir), strings.Join(moved, "; "))
	}
	return nil
}

// flattenRecipe maps each recipe key path (optim.lr) to its value as YAML
// writes it; an objective that is off is one key, "(off)".
func flattenRecipe(r Recipe) map[string]string {
	out := map[string]string{}
	data, err := yaml.Marshal(&r)
	if err != nil {
		return out
	}
	var tree map[string]any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return out
	}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				walk(prefix+k+".", x)
			}
		case nil:
			out[strings.TrimSuffix(prefix, ".")] = "(off)"
		default:
			s := fmt.Sprint(v)
			if s == "" {
				s = `""`
			}
			out[strings.TrimSuffix(prefix, ".")] = s
		}
	}
	walk("", tree)
	return out
}

// unionKeys is the sorted union of a's and b's keys; a key missing on one
// side reads "(off)" there (an objective switched on or off).
func unionKeys(a, b map[string]string) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
		if _, ok := b[k]; !ok {
			b[k] = "(off)"
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
			a[k] = "(off)"
		}
	}
	sort.Strings(keys)
	return keys
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
