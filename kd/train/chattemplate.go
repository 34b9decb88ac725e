package train

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/kdnative/kdnative/kd/data"
	"github.com/kdnative/kdnative/model/tokenizer"
)

// A chat template is part of a model folder (chat_template.jinja, or
// tokenizer_config.json's chat_template), and the data of a run is rendered
// once, with the student's. A teacher whose folder has another template —
// or a student folder that lost its own — reads the same tokens, so the
// run says so rather than distilling silently on a format the teacher was
// not trained on.

// noteTemplates says so when a teacher's chat template differs from the
// student's: the data is rendered once, with the student's, and the teacher
// reads it that way too — in plain text if the student's folder has none.
func (t *trainer) noteTemplates(who, dir string, other *tokenizer.Tokenizer) {
	if other.ChatTemplate() == t.tok.ChatTemplate() {
		return
	}
	t.logf("note: %s's chat template (%s) differs from the student's (%s); the data is rendered with the student's, and %s reads it that way",
		who, describeTemplate(dir, other.ChatTemplate()), describeTemplate(t.tokDir(), t.tok.ChatTemplate()), who)
}

// describeTemplate says what a folder's chat template is and where it comes
// from, in a few words.
func describeTemplate(dir, chat string) string {
	if chat == "" {
		return dir + " has none"
	}
	kind := data.AutoTemplate(chat)
	if kind == "" {
		kind = "one kdnative does not render"
	}
	src := "tokenizer_config.json's chat_template"
	if _, err := os.Stat(filepath.Join(dir, "chat_template.jinja")); err == nil {
		src = "chat_template.jinja"
	}
	return fmt.Sprintf("%s, from %s in %s", kind, src, dir)
}

// tokDir is the folder the student's tokenizer comes from.
func (t *trainer) tokDir() string {
	if t.r.Tokenizer != "" {
		return t.r.Tokenizer
	}
	return t.r.Student
}
