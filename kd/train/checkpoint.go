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

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/model/safetensors"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// A checkpoint is a folder <output>/checkpoint-<step> holding the student as a
// Hugging Face model (config.json, safetensors, tokenizer files) and the
// training state: training_state.safetensors (the AdamW moments, by
// parameter name) with the rest (step, data position) in its metadata. It is
// written under a temporary name and renamed into place, so a crash leaves
// either no checkpoint or a whole one.

const stateFile = "training_state.safetensors"

// trainingState is the JSON kept in the state file's metadata.
type trainingState struct {
	Step      int              `json:"step"`
	AdamWStep int              `json:"adamw_step"`
	Tokens    int64            `json:"tokens"`
	Data      data.LoaderState `json:"data"`
	Total     int              `json:"total_steps"`
}

// tokenizerFiles are copied beside each saved model so it loads on its own.
var tokenizerFiles = []string{"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
	"generation_config.json", "vocab.json", "merges.txt"}

func (t *trainer) checkpoint() (string, error) {
	dir := filepath.Join(t.r.Output, fmt.Sprintf("checkpoint-%d", t.step))
	tmp := filepath.Join(t.r.Output, fmt.Sprintf(".checkpoint-%d.tmp", t.step))
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := t.writeModel(tmp); err != nil {
		return "", err
	}
	if err := t.writeState(filepath.Join(tmp, stateFile)); err != nil {
		return "", err
	}
	// Replace an older checkpoint of the same step only once the new one is whole.
	if _, err := os.Stat(dir); err == nil {
		old := dir + ".old"
		os.RemoveAll(old)
		if err := os.Rename(dir, old); err != nil {
			return "", err
		}
		defer os.RemoveAll(old)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	syncDir(t.r.Output)
	return dir, nil
}

// writeModel saves the student and the tokenizer files into dir.
func (t *trainer) writeModel(dir string) error {
	if err := t.student.SaveDir(dir, 0); err != nil {
		return err
	}
	src := t.r.Tokenizer
	if src == "" {
		src = t.r.Student
	}
	return CopyTokenizer(src, dir)
}

func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }

func (t *trainer) saveFinal() error {
	if err := t.writeModel(t.r.Output); err != nil {
		return fmt.Errorf("saving the final student: %w", err)
	}
	return nil
}

func (t *trainer) writeState(path string) error {
	st := trainingState{Step: t.step, AdamWStep: t.opt.StepCount(), Tokens: t.tokens, Total: t.total}
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
	return safetensors.Write(path, tensors, map[string]string{"kdnative_training_state": string(js)})
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
	if err := json.Unmarshal([]byte(f.Metadata()["kdnative_training_state"]), &st); err != nil {
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
	if st.Total != t.total {
		return fmt.Errorf("resume from %s: the run had %d steps, this recipe gives %d (change max_steps/epochs back, or start a new output folder)", dir, st.Total, t.total)
	}
	t.opt.SetStepCount(st.AdamWStep)
	t.step, t.startStep, t.tokens = st.Step, st.Step, st.Tokens
	return nil
}

// latestCheckpoint is the checkpoint folder with the highest step in out.
func latestCheckpoint(out string) (string, error) {
	entries, err := os.ReadDir(out)
	if err != nil {
		return "", fmt.Errorf("resume: %w", err)
	}
	var steps []int
	for _, e := range entries {
		if n, ok := strings.CutPrefix(e.Name(), "checkpoint-"); ok && e.IsDir() {
			if s, err := strconv.Atoi(n); err == nil {
				steps = append(steps, s)
			}
		}
	}
	if len(steps) == 0 {
		return "", fmt.Errorf("resume: no checkpoint in %s", out)
	}
	sort.Ints(steps)
	return filepath.Join(out, fmt.Sprintf("checkpoint-%d", steps[len(steps)-1])), nil
}

// saveRecipe writes the run's effective recipe beside its outputs.
func (t *trainer) saveRecipe() error {
	data, err := t.r.Marshal()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(t.r.Output, "recipe.yaml"), data, 0o644)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
