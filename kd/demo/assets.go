package demo

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/kdnative/kdnative/internal/atomicfile"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/kdnative/kdnative/kd/train"
	kdrt "github.com/kdnative/kdnative/runtime"
)

// Assets are the files `kdnative demo-assets DIR` writes, and the demo
// itself uses: the example recipes (examples/recipes/) name them by their
// paths under "demo-assets/", so that every example runs as is.
type Assets struct {
	Dir string
	// Teacher is the built-in teacher: config.json, model.safetensors and its
	// tokenizer (tokenizer.json, tokenizer_config.json).
	Teacher string
	// StudentInit is the demo's student architecture with random weights
	// (seed 1) and the teacher's tokenizer: what init-model would make.
	StudentInit string
	// Train and Val are Moby-Dick as {"text"} lines, about 120 characters
	// each; Val's lines are never trained on.
	Train, Val string
	// ChatTrain and ChatVal are {"messages"} conversations made from
	// consecutive lines: the user gives one line, the assistant continues
	// with the next.
	ChatTrain, ChatVal string
	// PairsTrain and PairsVal are {"prompt","chosen","rejected"} preference
	// pairs: a line, the true next line (chosen), and a line from elsewhere
	// in the book (rejected).
	PairsTrain, PairsVal string
}

// Layout is where the assets are under dir.
func Layout(dir string) Assets {
	j := func(name string) string { return filepath.Join(dir, name) }
	return Assets{Dir: dir, Teacher: j("teacher"), StudentInit: j("student-init"),
		Train: j("train.jsonl"), Val: j("val.jsonl"),
		ChatTrain: j("chat-train.jsonl"), ChatVal: j("chat-val.jsonl"),
		PairsTrain: j("pairs-train.jsonl"), PairsVal: j("pairs-val.jsonl")}
}

// assetsReadme is written as DIR/README.md.
const assetsReadme = `# kdnative demo assets

Written by ` + "`kdnative demo-assets`" + ` from the files built into kdnative. The example recipes
(examples/recipes/*.yaml) and the built-in demo (` + "`kdnative train`" + `) name these paths.

- teacher/             the demo's teacher: a 0.8M-parameter Llama-shaped model trained on Moby-Dick
                       by kdnative itself (kd/demo/assets/recipes/teacher.yaml), with its byte-level
                       tokenizer (259 tokens; it has the ChatML tokens but no chat template)
- student-init/        the demo's student (0.1M parameters) with random weights (seed 1)
- train.jsonl, val.jsonl              {"text"} lines of Moby-Dick (val: a part never trained on)
- chat-train.jsonl, chat-val.jsonl    {"messages"}: the user gives a line, the assistant continues
- pairs-train.jsonl, pairs-val.jsonl  {"prompt","chosen","rejected"}: the true next line is chosen,
                                      a line from elsewhere in the book rejected

For a real model, point a recipe's student, teacher and data at your own folders and files.
`

// WriteAssets writes the demo assets into dir (made if missing) and returns
// their paths. Files already there with the same content are kept; a file
// that differs (edited, or from another version of kdnative) is an error
// naming it, never overwritten. An existing student-init/ with the same
// config.json is kept as it is (its random weights are a student-init all
// the same). Each file is written to a temporary name and renamed.
func WriteAssets(be kdrt.Backend, dir string) (Assets, error) {
	a := Layout(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return a, err
	}
	put := func(path string, data []byte) error { return writeSame(path, data) }
	// The teacher: its weights and config, and the tokenizer.
	for _, src := range []string{"assets/teacher/config.json", "assets/teacher/model.safetensors",
		"assets/tokenizer/tokenizer.json", "assets/tokenizer/tokenizer_config.json"} {
		data, err := assets.ReadFile(src)
		if err != nil {
			return a, err
		}
		if err := put(filepath.Join(a.Teacher, path.Base(src)), data); err != nil {
			return a, err
		}
	}
	if err := writeStudentInit(be, a); err != nil {
		return a, err
	}
	// The data, in its three shapes.
	for _, d := range []struct{ src, plain, chat, pairs string }{
		{"assets/data/train.jsonl.gz", a.Train, a.ChatTrain, a.PairsTrain},
		{"assets/data/val.jsonl.gz", a.Val, a.ChatVal, a.PairsVal},
	} {
		raw, lines, err := readTextLines(d.src)
		if err != nil {
			return a, err
		}
		chat, pairs, err := chatAndPairs(lines)
		if err != nil {
			return a, err
		}
		for _, f := range []struct {
			path string
			data []byte
		}{{d.plain, raw}, {d.chat, chat}, {d.pairs, pairs}} {
			if err := put(f.path, f.data); err != nil {
				return a, err
			}
		}
	}
	return a, put(filepath.Join(dir, "README.md"), []byte(assetsReadme))
}

// writeStudentInit makes student-init/ as `kdnative init-model --config
// student-config.json --tokenizer teacher/ --seed 1` would, unless one with
// the same config is there.
func writeStudentInit(be kdrt.Backend, a Assets) error {
	cfg, err := assets.ReadFile("assets/student-config.json")
	if err != nil {
		return err
	}
	if have, err := os.ReadFile(filepath.Join(a.StudentInit, "config.json")); err == nil {
		var x, y any
		if json.Unmarshal(have, &x) == nil && json.Unmarshal(cfg, &y) == nil && jsonEqual(x, y) {
			return nil
		}
		return fmt.Errorf("%s holds another model than the demo's student (its config.json differs); move it away or choose another folder", a.StudentInit)
	}
	tmp, err := os.MkdirTemp(a.Dir, ".student-init.tmp-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cfgPath := filepath.Join(tmp, "student-config.json")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		return err
	}
	made := filepath.Join(tmp, "student-init")
	if err := train.InitModel(be, cfgPath, a.Teacher, 1, made, false); err != nil {
		return err
	}
	if err := os.RemoveAll(a.StudentInit); err != nil { // an empty or partial folder
		return err
	}
	return os.Rename(made, a.StudentInit)
}

func jsonEqual(x, y any) bool {
	a, _ := json.Marshal(x)
	b, _ := json.Marshal(y)
	return bytes.Equal(a, b)
}

// writeSame writes data to path atomically, unless path already holds
// exactly data; a path holding something else is an error.
func writeSame(path string, data []byte) error {
	have, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(have, data):
		return nil
	case err == nil:
		return fmt.Errorf("%s exists and differs from the built-in demo file; move it away or choose another folder", path)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data)
}

// readTextLines decompresses an embedded {"text"} JSONL file and returns it
// and its texts.
func readTextLines(name string) ([]byte, []string, error) {
	f, err := assets.Open(name)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	var texts []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		var rec struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		texts = append(texts, rec.Text)
	}
	return raw, texts, sc.Err()
}

// chatAndPairs makes the chat and preference data from consecutive lines
// (0 and 1, 2 and 3, …): the conversation "user: line i, assistant: line
// i+1", and the pair "prompt line i, chosen line i+1, rejected the line half
// the file away".
func chatAndPairs(lines []string) (chat, pairs []byte, err error) {
	var cb, pb bytes.Buffer
	ce, pe := json.NewEncoder(&cb), json.NewEncoder(&pb)
	ce.SetEscapeHTML(false)
	pe.SetEscapeHTML(false)
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	n := len(lines)
	for i := 0; i+1 < n; i += 2 {
		prompt, next := lines[i], lines[i+1]
		if err := ce.Encode(map[string][]msg{"messages": {{"user", prompt}, {"assistant", next}}}); err != nil {
			return nil, nil, err
		}
		rejected := lines[(i+1+n/2)%n]
		if rejected == next {
			continue
		}
		if err := pe.Encode(struct {
			Prompt   string `json:"prompt"`
			Chosen   string `json:"chosen"`
			Rejected string `json:"rejected"`
		}{prompt + " ", next, rejected}); err != nil {
			return nil, nil, err
		}
	}
	return cb.Bytes(), pb.Bytes(), nil
}
