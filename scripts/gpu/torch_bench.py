#!/usr/bin/env python3
"""The PyTorch side of the GPU comparison (issue: verify kdnative on a real GPU).

Measures, on the same GPU as kdnative's own benchmarks, and prints one JSON
object per line:
  - a training step (forward, backward, clip, AdamW) of a Qwen2.5-0.5B-shaped
    model with random weights, in transformers, FP32 (no TF32, as kdnative's
    F32 path) and BF16 autocast: tokens/s and peak GPU memory;
  - the plain forward-KL KD loss with its backward at vocabulary 151,936
    (logits of student and teacher materialized), which kdnative's fused,
    chunked loss is compared with (cuda.BenchmarkKDFusedVsPlainGPU).

    python3 torch_bench.py --config qwen2.5-0.5b.json --batch 8 --seq 1024
    python3 torch_bench.py --tiny          # a CPU smoke run of the script itself
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def peak_reset(dev):
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return 0


def peak_mb(dev, base):
    if dev.type == "cuda":
        return (torch.cuda.max_memory_allocated() - base) / 1e6
    return None


def train_step(cfg_path, batch, seq, steps, dev, dtype_name, tiny):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(cfg_path) if not tiny else AutoConfig.for_model(
        "qwen2", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    cfg.dtype = torch.float32
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype_name == "bf16")

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    base = peak_reset(dev)
    step()  # warm-up
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    sec = (time.perf_counter() - t0) / steps
    return {"what": "torch train step", "dtype": dtype_name, "batch": batch, "seq": seq,
            "step_s": sec, "tokens_per_s": batch * seq / sec, "peak_MB": peak_mb(dev, base)}


def kd_plain(N, C, V, reps, dev):
    torch.manual_seed(1)
    h = torch.randn(N, C, device=dev, requires_grad=True)
    w = (0.05 * torch.randn(V, C, device=dev)).requires_grad_()
    th = torch.randn(N, C, device=dev)
    tw = 0.05 * torch.randn(V, C, device=dev)

    def once():
        s = F.log_softmax(h @ w.T, dim=-1)
        with torch.no_grad():
            t = F.log_softmax(th @ tw.T, dim=-1)
        loss = F.kl_div(s, t, log_target=True, reduction="sum") / N
        loss.backward()
        return loss

    base = peak_reset(dev)
    once()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        once()
    sync(dev)
    sec = (time.perf_counter() - t0) / reps
    return {"what": "torch plain forward-KL + backward", "N": N, "C": C, "V": V,
            "seconds": sec, "tokens_per_s": N / sec, "peak_MB": peak_mb(dev, base)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="qwen2.5-0.5b.json")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="small shapes on the CPU: checks the script runs")
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() and not a.tiny else "cpu")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__}), flush=True)
    batch, seq = (2, 32) if a.tiny else (a.batch, a.seq)
    for dt in ("fp32", "bf16"):
        try:
            print(json.dumps(train_step(a.config, batch, seq, a.steps, dev, dt, a.tiny)), flush=True)
        except torch.OutOfMemoryError as e:
            print(json.dumps({"what": "torch train step", "dtype": dt, "batch": batch, "error": "out of memory: " + str(e)[:200]}), flush=True)
    N, C, V = (64, 32, 1000) if a.tiny else (4096, 896, 151936)
    print(json.dumps(kd_plain(N, C, V, 3, dev)), flush=True)


if __name__ == "__main__":
    main()
