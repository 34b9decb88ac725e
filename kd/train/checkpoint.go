package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/kdnative/kdnative/internal/atomicfile"
	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/model"
	"github.com/kdnative/kdnative/model/safetensors"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// A checkpoint is a folder <output>/checkpoint-<step> holding the student as a
// Hugging Face model (config.json, safetensors, tokenizer files) and the
// training state: training_state.safetensors (the AdamW moments, by
// parameter name) with the rest (step, data position) in its metadata. It is
// written under a temporary name and renamed into place, so a crash leaves
// either no checkpoint or a whole one.

const (
	stateFile  = "training_state.safetensors"
	stateKey   = "kdnative_training_state" // the state file's metadata key
	recipeFile = "recipe.yaml"
)

// trainingState is the JSON kept in the state file's metadata.
type trainingState struct {
	Step      int              `json:"step"`
	AdamWStep int              `json:"adamw_step"`
	Tokens    int64            `json:"tokens"`
	Data      data.LoaderState `json:"data"`
	Total     int              `json:"total_steps"`
	// OnPolicy is the on-policy sampling state (onpolicy.go).
	OnPolicy *onpolicyState `json:"onpolicy,omitempty"`
	// RL is the RL sampling state (rl.go).
	RL *rlState `json:"rl,omitempty"`
}

// tokenizerFiles are the tokenizer-side files transformers writes beside a
// model (save_pretrained of the tokenizer, plus generation_config.json); the
// ones a source folder has are copied beside each saved model, so that it
// loads, renders chat and stops generating on its own. chat_template.jinja is
// where transformers 5 keeps the chat template; a folder without it reads as
// a base model and its data as plain text.
var tokenizerFiles = []string{"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
	"added_tokens.json", "chat_template.jinja", "chat_template.json", "generation_config.json",
	"vocab.json", "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model"}

// tokenizerDirs are folders of tokenizer files copied the same way:
// transformers keeps named chat templates other than the default in
// additional_chat_templates/<name>.jinja.
var tokenizerDirs = []string{"additional_chat_templates"}

// checkpoint writes <output>/checkpoint-<step>. A failure (a full disk)
// removes the partial folder, so that it does not hold the space.
func (t *trainer) checkpoint() (dir string, err error) {
	dir = filepath.Join(t.r.Output, fmt.Sprintf("checkpoint-%d", t.step))
	tmp := filepath.Join(t.r.Output, fmt.Sprintf(".checkpoint-%d.tmp", t.step))
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
			err = fmt.Errorf("checkpoint at step %d: %w", t.step, err)
		}
	}()
	if err := t.writeModel(tmp); err != nil {
		return "", err
	}
	if err := t.writeState(filepath.Join(tmp, stateFile)); err != nil {
		return "", err
	}
	// The recipe the checkpoint was made with, which --resume compares.
	if err := t.writeRecipe(filepath.Join(tmp, recipeFile)); err != nil {
		return "", err
	}
	// Replace an older checkpoint of the same step only once the new one is
	// whole (a kill in between leaves checkpoint-N.old, which the next
	// resume puts back).
	if _, err := os.Stat(dir); err == nil {
		old := dir + ".old"
		os.RemoveAll(old)
		if err := os.Rename(dir, old); err != nil {
			return "", err
		}
		if err := os.Rename(tmp, dir); err != nil {
			os.Rename(old, dir)
			return "", err
		}
		os.RemoveAll(old)
	} else if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	// The checkpoint is in place; syncing the folder makes its name durable.
	if err := atomicfile.SyncDir(t.r.Output); err != nil {
		return "", err
	}
	return dir, nil
}

// writeModel saves the student and the tokenizer files into dir.
func (t *trainer) writeModel(dir string) error {
	if err := t.student.SaveDir(dir, 0); err != nil {
		return err
	}
	return CopyTokenizer(t.tokDir(), dir)
}

func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }

func (t *trainer) saveFinal() error {
	if err := t.writeModel(t.r.Output); err != nil {
		// Each file is written through a temporary one; none may stay to
		// hold the space (a full disk is the likely cause).
		removeMatching(t.r.Output, isTemp)
		return fmt.Errorf("saving the final student: %w", err)
	}
	return nil
}

func (t *trainer) writeState(path string) error {
	st := trainingState{Step: t.step, AdamWStep: t.opt.StepCount(), Tokens: t.tokens, Total: t.total, OnPolicy: t.saveOnPolicy(), RL: t.saveRL()}
	if t.pairs != nil {
		st.Data = t.pairs.State()
	} else {
		st.Data = t.loader.State()
	}
	js, err := json.Marshal(st)
	if err != nil {
		return err
	}
	m, v := t.opt.Moments()
	var tensors []safetensors.Tensor
	nStudent := len(t.student.Params())
	for i, sl := range t.slots {
		saved := []struct {
			prefix string
			t      *kdrt.Tensor
		}{{"adamw.m.", m[i]}, {"adamw.v.", v[i]}}
		if i >= nStudent { // a feature projection: not in the model folder
			saved = append(saved, struct {
				prefix string
				t      *kdrt.Tensor
			}{"param.", sl.W})
		}
		for _, mv := range saved {
			vals := make([]float32, mv.t.Numel())
			if err := t.be.Download(mv.t, vals); err != nil {
				return err
			}
			tensors = append(tensors, safetensors.Tensor{Name: mv.prefix + sl.Name, DType: kdrt.F32, Shape: sl.W.Shape, F32: vals})
		}
	}
	return safetensors.Write(path, tensors, map[string]string{stateKey: string(js)})
}

// restore reads a checkpoint's training state (the weights were loaded from
// the same folder).
func (t *trainer) restore(dir string) error {
	path := filepath.Join(dir, stateFile)
	f, err := safetensors.Open(path)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	defer f.Close()
	var st trainingState
	if err := json.Unmarshal([]byte(f.Metadata()[stateKey]), &st); err != nil {
		return fmt.Errorf("resume: %s: training state metadata: %v", path, err)
	}
	m, v := t.opt.Moments()
	nStudent := len(t.student.Params())
	for i, sl := range t.slots {
		restored := []struct {
			name string
			t    *kdrt.Tensor
		}{{"adamw.m." + sl.Name, m[i]}, {"adamw.v." + sl.Name, v[i]}}
		if i >= nStudent {
			restored = append(restored, struct {
				name string
				t    *kdrt.Tensor
			}{"param." + sl.Name, sl.W})
		}
		for _, mv := range restored {
			vals, err := f.Float32(mv.name)
			if err != nil {
				return fmt.Errorf("resume: %w", err)
			}
			if err := t.be.Upload(mv.t, vals); err != nil {
				return err
			}
		}
	}
	if t.pairs != nil {
		err = t.pairs.Restore(st.Data)
	} else {
		err = t.loader.Restore(st.Data)
	}
	if err != nil {
		return fmt.Errorf("resume from %s: %w (was the data or the seed changed?)", dir, err)
	}
	if err := t.restoreOnPolicy(st.OnPolicy); err != nil {
		return err
	}
	if err := t.restoreRL(st.RL); err != nil {
		return err
	}
	if st.Total != t.total {
		t.logf("resume: the run now has %d steps (it had %d); the learning-rate schedule follows the new length", t.total, st.Total)
	}
	t.opt.SetStepCount(st.AdamWStep)
	t.step, t.startStep, t.tokens = st.Step, st.Step, st.Tokens
	return nil
}

// checkpointDirs lists the checkpoint folders in out, newest (highest step)
// first.
func checkpointDirs(out string) ([]string, error) {
	entries, err := os.ReadDir(out)
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	var steps []int
	for _, e := range entries {
		if n, ok := strings.CutPrefix(e.Name(), "checkpoint-"); ok && e.IsDir() {
			if s, err := strconv.Atoi(n); err == nil {
				steps = append(steps, s)
			}
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(steps)))
	dirs := make([]string, len(steps))
	for i, s := range steps {
		dirs[i] = filepath.Join(out, fmt.Sprintf("checkpoint-%d", s))
	}
	return dirs, nil
}

// latestCheckpoint is the checkpoint folder with the highest step in out.
func latestCheckpoint(out string) (string, error) {
	dirs, err := checkpointDirs(out)
	if err != nil {
		return "", err
	}
	if len(dirs) == 0 {
		return "", fmt.Errorf("resume: no checkpoint in %s", out)
	}
	return dirs[0], nil
}

// resumePoint is the newest intact checkpoint in out. A damaged newer one
// (a truncated or missing file: a disk error, or a copy cut short) is
// reported on log and passed over.
func resumePoint(out string, log func(format string, a ...any)) (string, error) {
	dirs, err := checkpointDirs(out)
	if err != nil {
		return "", err
	}
	if len(dirs) == 0 {
		return "", fmt.Errorf("resume: no checkpoint in %s", out)
	}
	var damaged []string
	for _, dir := range dirs {
		err := checkIntact(dir)
		if err == nil {
			if len(damaged) > 0 {
				log("resume: %s is damaged; resuming from %s, the newest intact checkpoint", strings.Join(damaged, "; "), filepath.Base(dir))
			}
			return dir, nil
		}
		damaged = append(damaged, fmt.Sprintf("%s (%v)", filepath.Base(dir), err))
	}
	return "", fmt.Errorf("resume: no intact checkpoint in %s: %s", out, strings.Join(damaged, "; "))
}

// checkIntact checks that a checkpoint's files are whole: config.json parses,
// every weight file's header and size agree, the training state opens and
// its metadata parses. (Whether the shapes fit is the load's to say.)
func checkIntact(dir string) error {
	if _, err := model.LoadConfig(filepath.Join(dir, "config.json")); err != nil {
		return err
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return err
	}
	set.Close()
	f, err := safetensors.Open(filepath.Join(dir, stateFile))
	if err != nil {
		return err
	}
	defer f.Close()
	var st trainingState
	if err := json.Unmarshal([]byte(f.Metadata()[stateKey]), &st); err != nil {
		return fmt.Errorf("%s: training state metadata: %v", stateFile, err)
	}
	return nil
}

// saveRecipe writes the run's effective recipe beside its outputs.
func (t *trainer) saveRecipe() error {
	return t.writeRecipe(filepath.Join(t.r.Output, recipeFile))
}

func (t *trainer) writeRecipe(path string) error {
	data, err := t.r.Marshal()
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data)
}

// copyFile copies src to dst through a temporary file beside dst, so that a
// crash leaves dst whole (old or new) and only a hidden temporary file,
// which the next run in that folder removes.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeAtomic(dst, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// writeFileAtomic and writeAtomic write path atomically (internal/atomicfile).
func writeFileAtomic(path string, data []byte) error { return atomicfile.WriteFile(path, data) }

func writeAtomic(path string, fill func(io.Writer) error) error { return atomicfile.Write(path, fill) }
