#!/usr/bin/env python3
"""Write the cross-tokenizer example's student tokenizers: byte-level BPEs (GPT-2 style: GPT-2's
byte-to-unicode alphabet and pre-tokenizer, no prefix space) of 300, 512 and 1,024 tokens,
trained by Hugging Face `tokenizers` on the demo's Moby-Dick training lines, plus <|endoftext|>,
<|im_start|> and <|im_end|> — tokenizers other than the demo teacher's one-token-a-byte — each
with the student architecture that uses it (the demo student's, with that vocabulary).

    python3 scripts/xtok/make_student_tokenizer.py   # writes examples/cross-tokenizer/bpe-*/

Made with tokenizers 0.23.3 (scripts/fixtures/requirements.txt); the output is committed.
"""

import gzip
import json
import os

from tokenizers import ByteLevelBPETokenizer

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(REPO, "kd", "demo", "assets", "data", "train.jsonl.gz")
STUDENT = os.path.join(REPO, "kd", "demo", "assets", "student-config.json")
OUT = os.path.join(REPO, "examples", "cross-tokenizer")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def main():
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    for size in (300, 512, 1024):
        out = os.path.join(OUT, f"bpe-{size}")
        tok = ByteLevelBPETokenizer(add_prefix_space=False)
        tok.train_from_iterator(texts, vocab_size=size, min_frequency=2, special_tokens=SPECIALS, show_progress=False)
        os.makedirs(out, exist_ok=True)
        tok.save(os.path.join(out, "tokenizer.json"), pretty=True)
        with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|endoftext|>",
                       "pad_token": "<|endoftext|>", "model_max_length": 128}, f, indent=1)
            f.write("\n")
        with open(STUDENT) as f:
            cfg = json.load(f)
        cfg["vocab_size"], cfg["eos_token_id"] = size, tok.token_to_id("<|endoftext|>")
        with open(os.path.join(out, "student-config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        sample = texts[:1000]
        per_byte = sum(len(tok.encode(t).ids) for t in sample) / sum(len(t.encode()) for t in sample)
        print(f"bpe-{size}: {tok.get_vocab_size()} tokens, {per_byte:.3f} tokens per byte")


if __name__ == "__main__":
    main()
