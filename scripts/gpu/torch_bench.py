#!/usr/bin/env python3
"""The PyTorch side of the GPU check: the same steps kdnative's bench times,
in transformers on the same card, one JSON object per line.

Rows (--only picks some; each is gated on what it needs, never on everything):
  student    a training step of the student alone: forward, cross-entropy,
             backward, clip_grad_norm_(1.0), AdamW
  kd-plain   a KD step: the student's forward, the frozen teacher's forward,
             forward KL(teacher ‖ student) at T=2 on the full [B·T, V] logits
             (× T², as kdnative), backward, clipping, AdamW
  kd-liger   the same KD step with Liger-Kernel's LigerFusedLinearJSD
             (jsd_beta=0: forward KL; both lm_head products and the
             divergence fused and chunked, logits never materialized)

Models are transformers' Qwen2 built from the config JSONs with random
weights: the student with fp32 master weights under bf16 autocast, the
teacher in bf16, attention through SDPA. Reported: tokens/s, step time, model
FLOPs per step (flops.py: kdnative's count) and MFU over the card's dense bf16
peak, peak GPU memory (torch.cuda.max_memory_allocated over the row: weights,
optimizer and activations) and the loss.

    python3 torch_bench.py --student qwen2.5-0.5b.json --teacher qwen2.5-1.5b.json --batch 8 --seq 1024
    python3 torch_bench.py --tiny            # small shapes on the CPU: checks the script runs
"""
import argparse
import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flops  # noqa: E402  (beside this file)

TEMPERATURE = 2.0  # kd/train.BenchTemperature
ROWS = ("student", "kd-plain", "kd-liger")


def emit(row, out):
    line = json.dumps(row)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def error_row(what, exc):
    msg = f"{type(exc).__name__}: {exc}"
    if "out of memory" in msg.lower():
        msg = "out of memory: " + msg
    return {"what": what, "error": msg[:600]}


def load_config(path):
    from transformers import AutoConfig

    with open(path) as f:
        d = json.load(f)
    d.pop("architectures", None)
    d.pop("torch_dtype", None)
    d.pop("dtype", None)
    return d, AutoConfig.for_model(d.pop("model_type"), **d)


def build(cfg, dev, dtype):
    """A random-weight causal LM of cfg on dev, built there (no host init)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(dev):
        m = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=dtype)
    m.to(dev)
    for p in m.parameters():
        if p.dtype != dtype:
            raise RuntimeError(f"model built with {p.dtype} parameters, asked for {dtype}")
    return m


class Env:
    def __init__(self, a):
        import torch

        self.torch = torch
        self.tiny = a.tiny
        self.dev = torch.device("cuda" if torch.cuda.is_available() and not a.tiny else "cpu")
        self.cuda = self.dev.type == "cuda"
        self.B, self.T, self.steps = (2, 32, 1) if a.tiny else (a.batch, a.seq, a.steps)
        here = os.path.dirname(os.path.abspath(__file__))
        self.student_path = os.path.join(here, "tiny-student.json") if a.tiny else a.student
        self.teacher_path = os.path.join(here, "tiny-teacher.json") if a.tiny else a.teacher
        self.name = torch.cuda.get_device_name() if self.cuda else "cpu"

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self):
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_mb(self):
        return self.torch.cuda.max_memory_allocated() / 1e6 if self.cuda else None

    def autocast(self):
        return self.torch.autocast(self.dev.type, dtype=self.torch.bfloat16)

    def time_steps(self, step):
        """Seconds per step over self.steps steps, after one warm-up step, and
        the last step's loss."""
        step()  # warm-up: allocator, kernel selection, Triton compiles
        self.sync()
        t0 = time.perf_counter()
        loss = None
        for _ in range(self.steps):
            loss = step()
        self.sync()
        return (time.perf_counter() - t0) / self.steps, float(loss)

    def row(self, what, impl, sec, loss, model_flops, extra):
        r = {"what": what, "impl": impl, "device": self.name, "batch": self.B, "seq": self.T,
             "steps": self.steps, "step_s": sec, "tokens_per_s": self.B * self.T / sec,
             "model_flops_per_step": model_flops, "loss": loss, "peak_device_mb": self.peak_mb()}
        peak, card = flops.peak_bf16(self.name)
        if peak:
            r.update(peak_bf16_tflops=peak, peak_card=card, mfu=model_flops / sec / (peak * 1e12))
        r.update(extra)
        return r


def optimizer(env, model):
    torch = env.torch
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
    return params, opt


def run_student(env):
    torch = env.torch
    env.reset_peak()
    d, cfg = load_config(env.student_path)
    model = build(cfg, env.dev, torch.float32)
    params, opt = optimizer(env, model)
    ids = torch.randint(0, cfg.vocab_size, (env.B, env.T), device=env.dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with env.autocast():
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.detach()

    sec, loss = env.time_steps(step)
    return env.row("student step", "transformers Qwen2, bf16 autocast, SDPA, cross-entropy on full logits",
                   sec, loss, flops.training_flops(d | {"model_type": cfg.model_type}, env.B, env.T),
                   {"attn_implementation": getattr(model.config, "_attn_implementation", None),
                    "precision": "bf16 autocast, fp32 master weights"})


def kd_models(env):
    torch = env.torch
    ds, scfg = load_config(env.student_path)
    dt, tcfg = load_config(env.teacher_path)
    student = build(scfg, env.dev, torch.float32)
    teacher = build(tcfg, env.dev, torch.bfloat16)
    teacher.eval()
    teacher.requires_grad_(False)
    vocab = min(scfg.vocab_size, tcfg.vocab_size)
    ids = torch.randint(0, vocab, (env.B, env.T), device=env.dev)
    model_flops = (flops.training_flops(ds | {"model_type": scfg.model_type}, env.B, env.T)
                   + flops.forward_flops(dt | {"model_type": tcfg.model_type}, env.B, env.T))
    return student, teacher, ids, model_flops


def run_kd_plain(env):
    torch = env.torch
    F = torch.nn.functional
    env.reset_peak()
    student, teacher, ids, model_flops = kd_models(env)
    params, opt = optimizer(env, student)
    tau = TEMPERATURE

    def step():
        opt.zero_grad(set_to_none=True)
        with env.autocast():
            s_logits = student(input_ids=ids).logits
            with torch.no_grad():
                t_logits = teacher(input_ids=ids).logits
        V = min(s_logits.shape[-1], t_logits.shape[-1])
        s = F.log_softmax(s_logits[..., :V].float().reshape(-1, V) / tau, dim=-1)
        t = F.log_softmax(t_logits[..., :V].float().reshape(-1, V) / tau, dim=-1)
        loss = F.kl_div(s, t, log_target=True, reduction="batchmean") * tau * tau
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.detach()

    sec, loss = env.time_steps(step)
    return env.row("kd step", "transformers Qwen2, bf16 autocast, SDPA, plain forward KL on full logits",
                   sec, loss, model_flops,
                   {"temperature": tau, "attn_implementation": getattr(student.config, "_attn_implementation", None),
                    "precision": "bf16 autocast, fp32 master weights; teacher bf16"})


def liger_jsd():
    """Liger-Kernel's fused linear JSD module, and its version."""
    from importlib.metadata import version

    try:
        from liger_kernel.transformers.fused_linear_jsd import LigerFusedLinearJSD
    except ImportError:
        # Older releases or a failing transformers-side import: the module
        # wraps this Function, which takes the same arguments positionally.
        from liger_kernel.ops.fused_linear_jsd import LigerFusedLinearJSDFunction

        class LigerFusedLinearJSD:
            def __init__(self, jsd_beta, temperature):
                self.beta, self.tau = jsd_beta, temperature

            def __call__(self, s, sw, t, tw, labels):
                return LigerFusedLinearJSDFunction.apply(s, sw, t, tw, labels, self.beta, -100, self.tau)

    return LigerFusedLinearJSD, version("liger_kernel")


def run_kd_liger(env):
    torch = env.torch
    LigerFusedLinearJSD, liger_version = liger_jsd()  # before the models: fail fast
    env.reset_peak()
    student, teacher, ids, model_flops = kd_models(env)
    params, opt = optimizer(env, student)
    tau = TEMPERATURE
    jsd = LigerFusedLinearJSD(jsd_beta=0.0, temperature=tau)  # β = 0: forward KL(teacher ‖ student)
    if student.config.vocab_size != teacher.config.vocab_size:
        raise ValueError("the Liger row needs one vocabulary size for student and teacher")
    C, Ct = student.config.hidden_size, teacher.config.hidden_size

    def step():
        opt.zero_grad(set_to_none=True)
        with env.autocast():
            h = student.model(input_ids=ids).last_hidden_state
            with torch.no_grad():
                th = teacher.model(input_ids=ids).last_hidden_state
            loss = jsd(h.reshape(-1, C), student.lm_head.weight, th.reshape(-1, Ct), teacher.lm_head.weight, None)
            loss = loss * tau * tau
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.detach()

    sec, loss = env.time_steps(step)
    return env.row("kd step", f"transformers Qwen2, bf16 autocast, SDPA, Liger {liger_version} LigerFusedLinearJSD(beta=0)",
                   sec, loss, model_flops,
                   {"temperature": tau, "liger_kernel": liger_version,
                    "attn_implementation": getattr(student.config, "_attn_implementation", None),
                    "precision": "bf16 autocast, fp32 master weights; teacher bf16"})


RUNNERS = {"student": ("student step", run_student),
           "kd-plain": ("kd step (plain)", run_kd_plain),
           "kd-liger": ("kd step (liger)", run_kd_liger)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default="qwen2.5-0.5b.json")
    ap.add_argument("--teacher", default="qwen2.5-1.5b.json")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--only", action="append", choices=ROWS, help="run only these rows (repeatable)")
    ap.add_argument("--out", help="also append the JSON lines to this file")
    ap.add_argument("--tiny", action="store_true", help="small shapes on the CPU: checks the script runs")
    a = ap.parse_args()
    rows = a.only or list(ROWS)
    try:
        import torch
    except Exception as e:  # every row needs torch: each says so
        for r in rows:
            emit({"row": r} | error_row(RUNNERS[r][0], e), a.out)
        return 1
    env = Env(a)
    info = {"what": "environment", "device": env.name, "torch": torch.__version__, "python": sys.version.split()[0]}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except Exception as e:
        info["transformers"] = f"not importable: {e}"
    emit(info, a.out)
    status = 0
    for r in rows:
        what, fn = RUNNERS[r]
        try:
            row = fn(env)
        except Exception as e:
            row, status = error_row(what, e), 1
        emit({"row": r} | row, a.out)
        gc.collect()
        if env.cuda:
            torch.cuda.empty_cache()
    return status


if __name__ == "__main__":
    sys.exit(main())
