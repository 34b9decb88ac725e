#!/usr/bin/env python3
"""Model FLOPs and card peaks for the GPU check, counted as kdnative counts them.

kd/train/bench.go and model.Config.TrainingFLOPs are the Go side; the Go test
kd/train.TestBenchFLOPsMatchPython runs this file and requires the same
numbers, so kdnative's and PyTorch's MFU are computed alike. Standard library
only: summarize.py runs where torch is missing.

    python3 flops.py CONFIG.json B T [CONFIG.json B T …]   # training and forward FLOPs, as JSON
    python3 flops.py --peak "NVIDIA H200"                  # the card's dense bf16 peak, as JSON
"""
import json
import sys

# Dense (no sparsity) bf16 tensor-core peaks with fp32 accumulation from
# NVIDIA's datasheets, TFLOP/s, keyed by a substring of the driver's name for
# the card; more specific names first. The same table as kd/train/bench.go.
PEAK_BF16 = [
    ("GH200", 989),
    ("H200 NVL", 835),
    ("H200", 989),
    ("H100 NVL", 835),
    ("H100 PCIe", 756),
    ("H100", 989),
    ("H800", 989),
    ("A100", 312),
    ("A800", 312),
    ("L40S", 362),
    ("L40", 181),
    ("L4", 121),
]

GATED = {"llama", "qwen2", "mistral"}  # SwiGLU MLPs: gate, up and down


def peak_bf16(device):
    """(TFLOP/s, table entry) for a card name, or (0, "") when unknown."""
    for name, tflops in PEAK_BF16:
        if name in device:
            return tflops, name
    return 0, ""


def training_flops(cfg, B, T):
    """One training step (forward and backward) on B sequences of T tokens:
    6 FLOPs per matrix parameter per token (the lm_head included) plus
    attention's QKᵀ and PV products, 12·L·B·T²·(heads·head_dim), as llm.c
    and PaLM count; embeddings, norms and elementwise work are left out."""
    mt = cfg.get("model_type", "")
    if mt not in GATED:
        raise ValueError(f"flops: model_type {mt!r} is not one of {sorted(GATED)}")
    C = cfg["hidden_size"]
    F = cfg["intermediate_size"]
    V = cfg["vocab_size"]
    L = cfg["num_hidden_layers"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or C // nh
    q, kv = nh * hd, nkv * hd
    per_layer = C * q + 2 * C * kv + q * C + 3 * C * F  # q, k, v, o; gate, up, down
    matrix = L * per_layer + V * C
    tokens = B * T
    attn = 12 * L * B * T * T * q
    return float(6 * matrix * tokens + attn)


def forward_flops(cfg, B, T):
    """A forward pass: a third of a training step."""
    return training_flops(cfg, B, T) / 3


def main(argv):
    if argv[:1] == ["--peak"]:
        out = {name: dict(zip(("tflops", "card"), peak_bf16(name))) for name in argv[1:]}
        print(json.dumps(out))
        return 0
    if not argv or len(argv) % 3:
        print(__doc__, file=sys.stderr)
        return 2
    out = []
    for i in range(0, len(argv), 3):
        with open(argv[i]) as f:
            cfg = json.load(f)
        B, T = int(argv[i + 1]), int(argv[i + 2])
        out.append({"config": argv[i], "batch": B, "seq": T,
                    "training": training_flops(cfg, B, T), "forward": forward_flops(cfg, B, T)})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
