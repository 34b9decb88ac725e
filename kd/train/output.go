package train

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// The output folders kdnative writes (a run's, init-model's) are never
// written over silently: a folder that holds anything is refused unless the
// user says --overwrite (or, for a run, --resume). Overwriting removes only
// the files kdnative itself writes there, never others.

// refuseUsed returns an error when dir exists and holds anything, naming
// what it holds; what says which command, and hint what to do instead.
func refuseUsed(dir, what, hint string) error {
	entries, err := os.ReadDir(dir)
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if len(entries) == 0 {
		return nil
	}
	var names []string
	for _, e := range entries {
		if len(names) == 4 {
			names = append(names, "…")
			break
		}
		names = append(names, e.Name())
	}
	return fmt.Errorf("%s: %s is not empty (it holds %s): %s", what, dir, strings.Join(names, ", "), hint)
}

// modelFile matches the files of a Hugging Face model folder that kdnative
// writes or a loader would read: config.json and the weights, whole or
// sharded.
var modelFile = regexp.MustCompile(`^(config\.json|model\.safetensors|model\.safetensors\.index\.json|model-\d{5}-of-\d{5}\.safetensors)$`)

// runFile matches the other files and folders of a run's output.
var runFile = regexp.MustCompile(`^(recipe\.yaml|metrics\.jsonl|samples\.jsonl|loss\.png|checkpoint-\d+|checkpoint-\d+\.old)$`)

// isTemp says whether name is a temporary file or folder kdnative writes on
// the way to a rename: ".checkpoint-N.tmp", ".model.safetensors.tmp-*",
// ".config.json.tmp*" and the like. A kill leaves them behind.
func isTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name[1:], ".tmp")
}

// removeModelFiles removes the model and tokenizer files (and temporary
// files) in dir, for init-model --overwrite.
func removeModelFiles(dir string) error {
	return removeMatching(dir, func(name string) bool {
		return modelFile.MatchString(name) || isTokenizerFile(name) || isTemp(name)
	})
}

// clearRun removes what an earlier run left in out (model, tokenizer,
// checkpoints, metrics, recipe, temporary files), for train --overwrite.
func clearRun(out string) error {
	return removeMatching(out, func(name string) bool {
		return modelFile.MatchString(name) || runFile.MatchString(name) || isTokenizerFile(name) || isTemp(name)
	})
}

// cleanStale removes the temporary files and folders a killed or failed run
// left in out (a half-written checkpoint, a final save cut short: gigabytes
// for a real model), and puts back a checkpoint-N.old that a kill left
// without its replacement. It returns what it removed.
func cleanStale(out string) ([]string, error) {
	entries, err := os.ReadDir(out)
	if err != nil {
		if isNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		name := e.Name()
		switch {
		case isTemp(name):
			if err := os.RemoveAll(filepath.Join(out, name)); err != nil {
				return removed, err
			}
			removed = append(removed, name)
		case strings.HasSuffix(name, ".old") && runFile.MatchString(name):
			cur := filepath.Join(out, strings.TrimSuffix(name, ".old"))
			if _, err := os.Stat(cur); isNotExist(err) {
				if err := os.Rename(filepath.Join(out, name), cur); err != nil {
					return removed, err
				}
				continue
			}
			if err := os.RemoveAll(filepath.Join(out, name)); err != nil {
				return removed, err
			}
			removed = append(removed, name)
		}
	}
	return removed, nil
}

func isTokenizerFile(name string) bool {
	for _, n := range tokenizerFiles {
		if n == name {
			return true
		}
	}
	for _, n := range tokenizerDirs {
		if n == name {
			return true
		}
	}
	return false
}

// removeMatching removes the entries of dir whose names match.
func removeMatching(dir string, match func(string) bool) error {
	entries, err := os.ReadDir(dir)
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if match(e.Name()) {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
		}
	}
	return errors.Join(errs...)
}

// sameDir says whether a and b name the same folder.
func sameDir(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	if errA == nil && errB == nil {
		return os.SameFile(fa, fb)
	}
	aa, _ := filepath.Abs(a)
	ab, _ := filepath.Abs(b)
	return aa == ab
}

// checkOutput refuses an output folder that a run would spoil or mix with an
// earlier one: a model folder the recipe reads from, or (without --resume or
// --overwrite) a folder that holds anything.
func checkOutput(r *Recipe, opt Options) error {
	if opt.Resume && opt.Overwrite {
		return errors.New("--resume continues the run in the output folder and --overwrite replaces it: choose one")
	}
	inputs := []struct{ key, dir string }{{"student", r.Student}, {"teacher", r.Teacher}, {"tokenizer", r.Tokenizer}}
	if r.Objectives.DPO != nil {
		inputs = append(inputs, struct{ key, dir string }{"objectives.dpo.reference", r.Objectives.DPO.Reference})
	}
	if r.Objectives.KD != nil {
		inputs = append(inputs, struct{ key, dir string }{"objectives.kd.cache", r.Objectives.KD.Cache})
	}
	for _, in := range inputs {
		if sameDir(r.Output, in.dir) {
			return fmt.Errorf("output %s is the %s folder, which the run reads: choose another output folder", r.Output, in.key)
		}
	}
	if opt.Resume || opt.Overwrite {
		return nil
	}
	return refuseUsed(r.Output, "train", "continue that run with --resume, replace it with --overwrite, or choose another output folder")
}

// prepareOutput makes the output folder ready for the run: created, and
// under --overwrite the earlier run removed. It runs once everything is
// loaded, so a mistake found while loading leaves the folder as it was.
func (t *trainer) prepareOutput(overwrite bool) error {
	if overwrite {
		if err := clearRun(t.r.Output); err != nil {
			return fmt.Errorf("--overwrite: removing the earlier run in %s: %w", t.r.Output, err)
		}
	}
	return os.MkdirAll(t.r.Output, 0o755)
}

// cleanOutput removes the temporary files of a killed or failed run before
// a resume looks for its checkpoint, and says what it removed.
func (t *trainer) cleanOutput() error {
	removed, err := cleanStale(t.r.Output)
	if err != nil {
		return fmt.Errorf("removing temporary files in %s: %w", t.r.Output, err)
	}
	if len(removed) > 0 {
		t.logf("removed what an interrupted run left in %s: %s", t.r.Output, strings.Join(removed, ", "))
	}
	return nil
}
