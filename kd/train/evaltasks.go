package train

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kdnative/kdnative/kd/tasks"
)

// EvalTask is a task file run at every evaluation of a training run. In a
// recipe it is a mapping ({file: …, max_examples: 50}) or just the file.
type EvalTask struct {
	File string `yaml:"file"`
	// MaxExamples, when > 0, runs only the file's first examples (generation
	// is slow beside a validation loss).
	MaxExamples int `yaml:"max_examples"`
}

// UnmarshalYAML reads the mapping, or a plain string as the file.
func (e *EvalTask) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		return n.Decode(&e.File)
	}
	if n.Kind == yaml.MappingNode {
		// A custom unmarshaler loses the decoder's strictness: check the keys.
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i].Value; k != "file" && k != "max_examples" {
				return fmt.Errorf("line %d: unknown key %q in an eval_tasks entry (file, max_examples)", n.Content[i].Line, k)
			}
		}
	}
	type plain EvalTask
	return n.Decode((*plain)(e))
}

// evalTaskSet is what the trainer keeps of the recipe's eval_tasks.
type evalTaskSet struct {
	tasks []*tasks.Task
	max   []int
}

// loadEvalTasks checks every task file before training starts; a task
// scored by a judge is refused (a recipe names no judge endpoint).
func (t *trainer) loadEvalTasks() error {
	for i, e := range t.r.EvalTasks {
		key := fmt.Sprintf("eval_tasks[%d]", i)
		if e.File == "" {
			return fmt.Errorf("%s.file: required (a task file, e.g. examples/tasks/arith.jsonl)", key)
		}
		if e.MaxExamples < 0 {
			return fmt.Errorf("%s.max_examples: %d must be ≥ 0", key, e.MaxExamples)
		}
		task, err := tasks.Load(e.File)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if ex := task.NeedsJudge(); ex != nil {
			return fmt.Errorf("%s: %s:%d is scored by a judge, which a training run cannot call; evaluate judged tasks with kdnative eval --task … --judge-endpoint …", key, e.File, ex.Line)
		}
		for _, prev := range t.evalTasks.tasks {
			if prev.Name == task.Name {
				return fmt.Errorf("%s: task %q (%s) is already in eval_tasks (%s)", key, task.Name, e.File, prev.Path)
			}
		}
		t.evalTasks.tasks = append(t.evalTasks.tasks, task)
		t.evalTasks.max = append(t.evalTasks.max, e.MaxExamples)
	}
	return nil
}

// writeEval records an evaluation in metrics.jsonl: the validation numbers,
// and the eval_tasks' metrics (run now on the student) with their intervals,
// one log line per task.
func (t *trainer) writeEval(step int, ev Eval) error {
	rec := map[string]any{"step": step, "eval": ev.fields()}
	if len(t.evalTasks.tasks) > 0 {
		all := map[string]any{}
		for i, task := range t.evalTasks.tasks {
			res, err := tasks.Evaluate(context.Background(), t.student, t.tok, task, tasks.Options{Template: t.r.Data.Template,
				BatchSize: t.r.BatchSize, MaxExamples: t.evalTasks.max[i], Seed: t.r.Seed})
			if err != nil {
				return fmt.Errorf("step %d: eval task %s: %w", step, task.Name, err)
			}
			ms := map[string]any{}
			var line []string
			for _, m := range res.Metrics {
				ms[m.Name] = map[string]any{"value": m.Value, "ci_lo": m.Lo, "ci_hi": m.Hi, "n": m.N}
				line = append(line, fmt.Sprintf("%s %.3f [%.3f, %.3f]", m.Name, m.Value, m.Lo, m.Hi))
			}
			all[task.Name] = ms
			t.logf("step %d: %s (%d examples): %s", step, task.Name, res.Examples, strings.Join(line, ", "))
		}
		rec["tasks"] = all
	}
	if err := t.evalOnPolicy(step, rec); err != nil {
		return err
	}
	if err := t.evalRL(step, rec); err != nil {
		return err
	}
	t.metrics.write(rec)
	return nil
}

// plotEvalTasks draws tasks.png beside loss.png when the run has eval_tasks.
func (t *trainer) plotEvalTasks() {
	if len(t.evalTasks.tasks) == 0 {
		return
	}
	if err := plotTasks(filepath.Join(t.r.Output, "metrics.jsonl"), filepath.Join(t.r.Output, "tasks.png")); err != nil {
		t.logf("task curves: %v", err)
	}
}
