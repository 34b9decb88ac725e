package train

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/runtime/cpu"
)

// chatML is a ChatML chat template without a default system prompt, as
// transformers 5 writes it to chat_template.jinja.
const chatML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// tokenizerSideFiles are the files transformers 5 writes beside a model
// besides tokenizer.json and tokenizer_config.json, with made-up contents.
var tokenizerSideFiles = map[string]string{
	"chat_template.jinja":                           chatML,
	"special_tokens_map.json":                       `{"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}`,
	"added_tokens.json":                             `{"<|endoftext|>": 256, "<|im_start|>": 257, "<|im_end|>": 258}`,
	"generation_config.json":                        `{"bos_token_id": 256, "eos_token_id": 258, "max_new_tokens": 40}`,
	"additional_chat_templates/tool_use.jinja":      "{{ messages }}",
	"additional_chat_templates/rag_documents.jinja": "{{ documents }}",
}

// withChatTemplate gives a world's model folder the tokenizer-side files of a
// transformers 5 save: the chat template in chat_template.jinja only (its
// tokenizer_config.json has no chat_template).
func withChatTemplate(t *testing.T, dir string) {
	t.Helper()
	for name, content := range tokenizerSideFiles {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// sameFiles checks that every tokenizer file of src is in dst, byte for byte.
func sameFiles(t *testing.T, src, dst string) {
	t.Helper()
	names := []string{"tokenizer.json", "tokenizer_config.json"}
	for name := range tokenizerSideFiles {
		names = append(names, name)
	}
	for _, name := range names {
		want, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %s missing or different (%v)", dst, name, err)
		}
	}
}

// TestSavedFoldersKeepTheChatTemplate: init-model, every checkpoint and the
// final student carry every tokenizer-side file of the folder they came from
// (chat_template.jinja above all); a student whose template is only in
// chat_template.jinja trains with it, and the saved student evaluates with it
// on its own — the same tokens as naming the template, not plain text.
func TestSavedFoldersKeepTheChatTemplate(t *testing.T) {
	w := newWorld(t)
	withChatTemplate(t, w.teacher)
	student := filepath.Join(w.dir, "student-init")
	if err := InitModel(cpu.New(), filepath.Join(w.student, "config.json"), w.teacher, 1, student, false); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, w.teacher, student)

	r := w.recipe(filepath.Join(w.dir, "run"))
	r.Student, r.Data.Template = student, "auto"
	r.Objectives.SFT = &SFTTerm{Weight: 1}
	r.MaxSteps, r.SaveEvery = 4, 2
	sum, log := run(t, r, false)
	if !strings.Contains(log, "template jinja") || strings.Contains(log, "no chat template") {
		t.Fatalf("the data was not rendered with the folder's template:\n%s", log)
	}
	for _, dir := range append(sum.CheckpointDirs, sum.FinalDir) {
		sameFiles(t, w.teacher, dir)
	}

	eval := func(template string) int {
		var log bytes.Buffer
		res, err := RunEval(cpu.New(), EvalConfig{Model: sum.FinalDir, Data: w.sft, Template: template}, &log)
		if err != nil {
			t.Fatalf("eval with template %q: %v\n%s", template, err, log.String())
		}
		return res.Tokens
	}
	auto, chatml, none := eval(""), eval("chatml"), eval("none")
	if auto != chatml || auto == none {
		t.Fatalf("eval of the saved student: %d tokens under auto, %d under chatml, %d as plain text", auto, chatml, none)
	}
}

// TestTeacherCacheWithTemplate: a teacher cache made over chat-templated data
// is accepted for a student made by init-model from the teacher's tokenizer
// (it renders the same tokens), and a student folder that lost its template
// is told why the cache does not fit.
func TestTeacherCacheWithTemplate(t *testing.T) {
	w := newWorld(t)
	teacher := sharpTeacher(t, w)
	withChatTemplate(t, teacher)
	cacheDir := filepath.Join(w.dir, "cache")
	var log bytes.Buffer
	cc := CacheConfig{Teacher: teacher, Data: w.sft, Output: cacheDir, K: 8, Temperature: 1, MaxLen: 64}
	if err := CacheTeacher(context.Background(), cpu.New(), cc, &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "template jinja") {
		t.Fatalf("the cache was not made over templated data:\n%s", log.String())
	}
	student := filepath.Join(w.dir, "student-init")
	if err := InitModel(cpu.New(), filepath.Join(w.student, "config.json"), teacher, 1, student, false); err != nil {
		t.Fatal(err)
	}
	r := w.recipe(filepath.Join(w.dir, "run"))
	r.Student, r.Data.Template, r.MaxSteps = student, "auto", 2
	r.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1, Cache: cacheDir}
	run(t, r, false)

	// A folder without the template (as init-model used to make) renders
	// plain text: the cache is refused, and the log says why.
	os.Remove(filepath.Join(student, "chat_template.jinja"))
	r.Output = filepath.Join(w.dir, "run2")
	log.Reset()
	_, err := Run(context.Background(), cpu.New(), r, Options{Log: &log})
	if err == nil || !strings.Contains(err.Error(), "made for other data") {
		t.Fatalf("a cache over other tokens: %v", err)
	}
	for _, want := range []string{"the teacher cache's teacher's chat template (jinja, from chat_template.jinja in " + teacher + ")",
		"differs from the student's (" + student + " has none)"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the log does not say %q:\n%s", want, log.String())
		}
	}
}

// TestTeacherTemplateDiffers: an online teacher whose chat template differs
// from the student's is named in the log, and so is a student without one.
func TestTeacherTemplateDiffers(t *testing.T) {
	w := newWorld(t)
	withChatTemplate(t, w.teacher)
	r := w.recipe(filepath.Join(w.dir, "run"))
	r.Teacher, r.Data.Template, r.MaxSteps = w.teacher, "auto", 1
	r.Objectives.KD = &KDTerm{Weight: 1, Temperature: 1}
	_, log := run(t, r, false)
	for _, want := range []string{
		"note: the teacher's chat template (jinja, from chat_template.jinja in " + w.teacher + ") differs from the student's (" + w.student + " has none)",
		"template none (the tokenizer has no chat template",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not say %q:\n%s", want, log)
		}
	}
}
