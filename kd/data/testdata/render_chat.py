#!/usr/bin/env python3
"""Renders chat_cases.json with real chat templates, as transformers'
apply_chat_template does, into chat_renders.json (used by template_test.go).

    python3 render_chat.py qwen2.5=Qwen2.5-0.5B-Instruct/tokenizer_config.json \
        qwen3=Qwen3-0.6B/tokenizer_config.json \
        smollm2=SmolLM2-135M-Instruct/tokenizer_config.json > chat_renders.json

Each argument is NAME=PATH to a model's tokenizer_config.json (or a .jinja
file). Needs only jinja2; the environment matches transformers'
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols).
For each case it writes the full conversation ("full") and, when the case
ends with an assistant turn, the generation prompt for that turn
("prompt": the messages before it with add_generation_prompt=True).
"""
import json
import os
import sys

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def load_template(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        return json.loads(text)["chat_template"]
    return text


def raise_exception(msg):
    raise jinja2.exceptions.TemplateError(msg)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "chat_cases.json"), encoding="utf-8") as f:
        cases = json.load(f)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
    env.globals["raise_exception"] = raise_exception
    out = {}
    for arg in sys.argv[1:]:
        name, path = arg.split("=", 1)
        tpl = env.from_string(load_template(path))
        renders = {}
        for case in cases:
            if case.get("qwen3_only") and not name.startswith("qwen3"):
                continue
            msgs = case["messages"]
            r = {"full": tpl.render(messages=msgs, add_generation_prompt=False)}
            if msgs[-1]["role"] == "assistant":
                r["prompt"] = tpl.render(messages=msgs[:-1], add_generation_prompt=True)
            renders[case["name"]] = r
        out[name] = renders
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
