package data

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestEmptyAnswersSkipped: an empty assistant answer (what `elicit label`
// records when the teacher said nothing) is skipped and counted, not a bad
// line, under either OnBadLine; a file of nothing else says so.
func TestEmptyAnswersSkipped(t *testing.T) {
	good := `{"prompt": "p", "response": "r"}`
	empty := []string{
		`{"prompt": "p", "response": "  "}`,
		`{"id": "p3.s0", "prompt": "q", "response": "", "finish_reason": "stop"}`,
		`{"id": "p4.s0", "prompt": "q", "response": "", "finish_reason": "length"}`,
		`{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]}`,
		`{"prompt": [{"role": "user", "content": "p"}], "completion": [{"role": "assistant", "content": " "}]}`,
	}
	content := good + "\n" + strings.Join(empty, "\n") + "\n" + good + "\n"
	p := writeFile(t, "empty.jsonl", content)
	for _, onBad := range []string{BadLineStop, BadLineSkip} {
		train, _, rep, err := LoadSFT(p, newFake(plainChatML, false), Options{MaxLen: 100, OnBadLine: onBad})
		if err != nil {
			t.Fatalf("on bad line %s: %v", onBad, err)
		}
		if len(train) != 2 || rep.Empty != len(empty) || rep.Skipped != 0 || rep.Examples != 2 || rep.Lines != 2+len(empty) || len(rep.Problems) != 0 {
			t.Fatalf("on bad line %s: %d examples, report %+v", onBad, len(train), rep)
		}
		if s := rep.String(); !strings.Contains(s, fmt.Sprintf("%d with an empty answer skipped", len(empty))) {
			t.Errorf("summary does not count the empty answers: %s", s)
		}
	}
	only := writeFile(t, "only.jsonl", strings.Join(empty, "\n")+"\n")
	_, _, _, err := LoadSFT(only, newFake(plainChatML, false), Options{MaxLen: 100})
	if err == nil || !strings.Contains(err.Error(), "no usable example") || !strings.Contains(err.Error(), fmt.Sprintf("%d with an empty answer", len(empty))) {
		t.Fatalf("a file of empty answers: %v", err)
	}
	// Preference pairs are not answers to learn: an empty side stays a bad line.
	pp := writeFile(t, "pairs.jsonl", `{"prompt": "Q", "chosen": "", "rejected": "b"}`+"\n")
	if _, _, _, err := LoadPairs(pp, newFake(plainChatML, false), Options{MaxLen: 100}); err == nil || !strings.Contains(err.Error(), `"chosen" is empty`) {
		t.Fatalf("empty chosen: %v", err)
	}
}

// TestLengthCutStaysOpen: a response that stopped at the length limit
// (finish_reason "length") is rendered without its end-of-turn or EOS token,
// so no target teaches the model to stop there; each template is checked
// token by token against its closed rendering, and the cut ones are counted.
func TestLengthCutStaysOpen(t *testing.T) {
	imS, imE, eos := []int32{257}, []int32{258}, []int32{256}
	thinkO, thinkC := []int32{259}, []int32{260}
	nl := bytesOf("\n")
	user := cat(imS, bytesOf("user\nu"), imE, nl)
	for _, c := range []struct {
		name, line     string
		tok            *fakeTok
		tokens, labels []int32
		open           bool
	}{
		{
			name: "plain", tok: newFake("", false), open: true,
			line:   `{"prompt": "Q?", "response": " A", "finish_reason": "length"}`,
			tokens: bytesOf("Q? A"),
			labels: cat(ignore(2), bytesOf(" A")),
		},
		{
			name: "plain, stopped", tok: newFake("", false),
			line:   `{"prompt": "Q?", "response": " A", "finish_reason": "stop"}`,
			tokens: cat(bytesOf("Q? A"), eos),
			labels: cat(ignore(2), bytesOf(" A"), eos),
		},
		{
			name: "chatml prompt/response", tok: newFake(plainChatML, false), open: true,
			line:   `{"prompt": "u", "response": "Yo", "finish_reason": "length"}`,
			tokens: cat(user, imS, bytesOf("assistant\nYo")),
			labels: cat(ignore(len(user)), ignore(1+len("assistant\n")), bytesOf("Yo")),
		},
		{
			name: "chatml messages, earlier turns closed", tok: newFake(plainChatML, false), open: true,
			line:   `{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "b"}], "finish_reason": "length"}`,
			tokens: cat(user, imS, bytesOf("assistant\na"), imE, nl, user, imS, bytesOf("assistant\nb")),
			labels: cat(ignore(len(user)), ignore(1+len("assistant\n")), bytesOf("a"), imE, nl, ignore(len(user)), ignore(1+len("assistant\n")), bytesOf("b")),
		},
		{
			name: "chatml, last turn not an answer", tok: newFake(plainChatML, false),
			line:   `{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}], "finish_reason": "length"}`,
			tokens: cat(user, imS, bytesOf("assistant\na"), imE, nl, user),
			labels: cat(ignore(len(user)), ignore(1+len("assistant\n")), bytesOf("a"), imE, nl, ignore(len(user))),
		},
		{
			name: "qwen3 cut in the answer", tok: newFake(qwen3Template, true), open: true,
			line:   `{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "reasoning_content": "r", "content": "c"}], "finish_reason": "length"}`,
			tokens: cat(user, imS, bytesOf("assistant\n"), thinkO, bytesOf("\nr\n"), thinkC, []int32{mergedNL}, bytesOf("c")),
			labels: cat(ignore(len(user)), ignore(1+len("assistant\n")), thinkO, bytesOf("\nr\n"), thinkC, []int32{mergedNL}, bytesOf("c")),
		},
		{
			name: "qwen3 cut while reasoning", tok: newFake(qwen3Template, true), open: true,
			line:   `{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "reasoning_content": "r", "content": ""}], "finish_reason": "length"}`,
			tokens: cat(user, imS, bytesOf("assistant\n"), thinkO, bytesOf("\nr")),
			labels: cat(ignore(len(user)), ignore(1+len("assistant\n")), thinkO, bytesOf("\nr")),
		},
		{
			name: "text", tok: newFake("", false), open: true,
			line:   `{"text": "abc", "finish_reason": "length"}`,
			tokens: bytesOf("abc"),
			labels: bytesOf("abc"),
		},
	} {
		p := writeFile(t, "cut.jsonl", c.line+"\n")
		train, _, rep, err := LoadSFT(p, c.tok, Options{MaxLen: 100})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !slices.Equal(train[0].Tokens, c.tokens) || !slices.Equal(train[0].Labels, c.labels) {
			t.Errorf("%s:\n tokens %v\n  want  %v\n labels %v\n  want  %v", c.name, train[0].Tokens, c.tokens, train[0].Labels, c.labels)
		}
		want := 0
		if c.open {
			want = 1
		}
		if rep.Open != want {
			t.Errorf("%s: %d counted as cut, want %d", c.name, rep.Open, want)
		}
		if s := rep.String(); c.open != strings.Contains(s, "1 cut at the length limit") {
			t.Errorf("%s: summary %s", c.name, s)
		}
	}
	p := writeFile(t, "bad.jsonl", `{"prompt": "p", "response": "r", "finish_reason": 5}`+"\n")
	if _, _, _, err := LoadSFT(p, newFake("", false), Options{MaxLen: 100}); err == nil || !strings.Contains(err.Error(), `"finish_reason" is a number, want a string`) {
		t.Fatalf("finish_reason 5: %v", err)
	}
}

// TestTemplateNote: the report says when the rendering is not the
// tokenizer's own template — plain text because the tokenizer has none, or a
// template the recipe named that differs from the tokenizer's.
func TestTemplateNote(t *testing.T) {
	p := writeFile(t, "d.jsonl", `{"prompt": "p", "response": "r"}`+"\n")
	for _, c := range []struct {
		name, chat, asked, want string
	}{
		{"auto, no template", "", "auto", "the tokenizer has no chat template — no chat_template.jinja, no chat_template in tokenizer_config.json — so the text is rendered plain"},
		{"auto, chatml", plainChatML, "auto", ""},
		{"chatml asked, none there", "", TemplateChatML, "template chatml as asked, but the tokenizer has no chat template"},
		{"none asked, chatml there", plainChatML, TemplateNone, "template none as asked, but the tokenizer's own chat template is chatml"},
		{"chatml asked, qwen3 there", qwen3Template, TemplateChatML, "template chatml as asked, but the tokenizer's own chat template is qwen3"},
		{"chatml asked, llama 3 there", llama3Template, TemplateChatML, "the tokenizer's chat template is not ChatML"},
		{"auto, a ChatML template that does not compile", brokenChatML, "auto", "kdnative's hand-written chatml in place of the tokenizer's chat template, which cannot be rendered"},
		{"auto, the tokenizer's own", llama3Template, "auto", ""},
		{"chatml asked and there", plainChatML, TemplateChatML, ""},
	} {
		_, _, rep, err := LoadSFT(p, newFake(c.chat, true), Options{MaxLen: 100, Template: c.asked})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if (c.want == "") != (rep.TemplateNote == "") || !strings.Contains(rep.TemplateNote, c.want) {
			t.Errorf("%s: note %q, want %q", c.name, rep.TemplateNote, c.want)
		}
		if c.want != "" && !strings.Contains(rep.String(), c.want) {
			t.Errorf("%s: the summary lacks the note: %s", c.name, rep.String())
		}
	}
}
