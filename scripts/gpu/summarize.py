#!/usr/bin/env python3
"""Collects what run.sh's stages left in RESULTS_DIR into results.json (every
figure) and summary.txt (the table people read), whatever stages failed,
timed out or never ran: a missing figure is null with the reason beside it.

    python3 summarize.py RESULTS_DIR

Standard library only (it runs where torch is missing). What it reads:
env.json and stages.jsonl (run.sh), kd.json and student.json (kdnative bench
--json), torch-*.jsonl (torch_bench.py), logs/kernels.log (bench --kernels),
logs/kdloss.log (BenchmarkKDFusedVsPlainGPU), logs/tests*.log (go test -v),
cache-before.txt and cache-after.txt (the kernel cache), ../BUILD.json.
Host syncs and launches per step are picked up from kdnative bench's JSON
(keys *syncs_per_step, *launches_per_step) or its text ("… N host syncs …
per step"), when it reports them.
"""
import json
import os
import re
import sys

SCHEMA = "kdnative-gpu-check/1"


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def num(s):
    return float(s.replace(",", ""))


# ---- the pieces


def counters(bench, log):
    """Host syncs and launches per step, when kdnative bench reports them."""
    out = {}
    for key, val in (bench or {}).items():
        k = key.lower()
        if isinstance(val, (int, float)) and k.endswith("per_step"):
            if "sync" in k:
                out["syncs_per_step"] = val
            elif "launch" in k:
                out["launches_per_step"] = val
    for line in log.splitlines():
        if "per step" not in line:
            continue
        m = re.search(r"([\d.,]+)\s+(?:host\s+)?syncs?\b", line)
        if m and "syncs_per_step" not in out:
            out["syncs_per_step"] = num(m.group(1))
        m = re.search(r"([\d.,]+)\s+(?:kernel\s+)?launches\b", line)
        if m and "launches_per_step" not in out:
            out["launches_per_step"] = num(m.group(1))
    return out


KERNEL_HEAD = re.compile(r"copy ceiling ([\d.]+) GB/s, bf16 GEMM ceiling ([\d.]+) TFLOP/s")
KERNEL_ROW = re.compile(r"^\s*(.+?)\s{2,}(.+?)\s{2,}([\d.]+) ms\s{2,}([\d.]+) (GB/s|TFLOP/s)\s{2,}(\d+)%\s*$")


def kernels(text):
    m = KERNEL_HEAD.search(text)
    if not m:
        return None
    rows = []
    for line in text.splitlines():
        r = KERNEL_ROW.match(line)
        if r:
            rows.append({"op": r.group(1), "shape": r.group(2), "ms": float(r.group(3)),
                         "rate": float(r.group(4)), "unit": r.group(5), "of_ceiling": float(r.group(6)) / 100})
    return {"copy_gbs": float(m.group(1)), "bf16_gemm_tflops": float(m.group(2)), "rows": rows}


GO_BENCH = re.compile(r"^Benchmark\S*?/(fused|plain)/N=(\d+),C=(\d+),V=(\d+)\S*\s+(\d+)\s+(.*)$")


def kd_loss(text):
    out = {}
    for line in text.splitlines():
        m = GO_BENCH.match(line.strip())
        if not m:
            continue
        r = {"N": int(m.group(2)), "C": int(m.group(3)), "V": int(m.group(4)), "iterations": int(m.group(5))}
        for val, unit in re.findall(r"([\d.e+-]+)\s+(\S+)", m.group(6)):
            key = {"ns/op": "seconds", "peak-MB": "peak_mb", "tokens/s": "tokens_per_s"}.get(unit)
            if key:
                r[key] = float(val) / 1e9 if unit == "ns/op" else float(val)
        out[m.group(1)] = r
    f, p = out.get("fused"), out.get("plain")
    if f and p and f.get("seconds") and p.get("peak_mb"):
        out["fused_speedup"] = p["seconds"] / f["seconds"]
        out["fused_memory_fraction"] = f.get("peak_mb", 0) / p["peak_mb"]
    return out or None


DECODE_BENCH = re.compile(r"^BenchmarkDecodeGPU/graphs=(\d)/rows=(\d+),prompt=(\d+)\S*\s+(\d+)\s+(.*)$")


def decode(text):
    """BenchmarkDecodeGPU: the engine's decode steps with CUDA graphs and without."""
    out = {}
    for line in text.splitlines():
        m = DECODE_BENCH.match(line.strip())
        if not m:
            continue
        r = {"rows": int(m.group(2)), "prompt": int(m.group(3)), "steps": int(m.group(4))}
        for val, unit in re.findall(r"([\d.e+-]+)\s+(\S+)", m.group(5)):
            key = {"ns/op": "step_s", "tokens/s": "tokens_per_s", "launches/step": "launches_per_step",
                   "syncs/step": "syncs_per_step"}.get(unit)
            if key:
                r[key] = float(val) / 1e9 if unit == "ns/op" else float(val)
        out["graphs" if m.group(1) == "1" else "no_graphs"] = r
    g, n = out.get("graphs"), out.get("no_graphs")
    if g and n and g.get("tokens_per_s") and n.get("tokens_per_s"):
        out["graphs_speedup"] = g["tokens_per_s"] / n["tokens_per_s"]
    return out or None


def tests(text):
    if not text:
        return None
    top = re.findall(r"^--- (PASS|FAIL|SKIP): (\S+)", text, re.M)
    failed = re.findall(r"^\s*--- FAIL: (\S+)", text, re.M)
    r = {"passed": sum(1 for s, _ in top if s == "PASS"),
         "failed": sum(1 for s, _ in top if s == "FAIL"),
         "skipped": sum(1 for s, _ in top if s == "SKIP"),
         "failed_names": failed,
         "skipped_names": [n for s, n in top if s == "SKIP"]}
    m = re.search(r"panic: test timed out after (\S+)(?:\s+running tests:\s+((?:\s*\S+ \(\S+\)\n?)+))?", text)
    if m:
        r["timed_out_after"] = m.group(1)
        r["running_at_timeout"] = re.findall(r"(Test\S+)", m.group(2) or "")
    if re.search(r"^(FAIL|panic:)", text, re.M) and not r["failed"] and "timed_out_after" not in r:
        r["crashed"] = True
    return r


def cache(res_dir, build, doctor_log):
    before = [l for l in read_text(os.path.join(res_dir, "cache-before.txt")).split() if l.endswith(".cubin")]
    after = [l for l in read_text(os.path.join(res_dir, "cache-after.txt")).split() if l.endswith(".cubin")]
    m = re.search(r"NVRTC (\d+\.\d+)", doctor_log)
    r = {"prebuilt": len(before), "prebuilt_for": (build or {}).get("kernel_cache"),
         "compiled_here": sorted(set(after) - set(before)), "nvrtc_here": m.group(1) if m else None}
    return r


def torch_rows(res_dir):
    rows, info = {}, None
    for name in sorted(os.listdir(res_dir)):
        if name.startswith("torch-") and name.endswith(".jsonl"):
            for r in read_jsonl(os.path.join(res_dir, name)):
                if r.get("what") == "environment":
                    info = r
                elif "row" in r:
                    rows[r["row"]] = r
    return rows, info


BENCH_HEAD = re.compile(r"; batch (\d+) × (\d+) tokens$", re.M)
BENCH_STEP = re.compile(r"^step \d+/\d+ ([\d.]+) s$", re.M)


def partial_bench(text):
    """What a kdnative bench stopped early (a time limit) measured: the
    steps it finished after its last start, from its progress lines."""
    heads = list(BENCH_HEAD.finditer(text))
    if not heads:
        return None
    last = heads[-1]
    times = [float(x) for x in BENCH_STEP.findall(text, last.end())]
    if not times:
        return None
    B, T = int(last.group(1)), int(last.group(2))
    sec = sum(times) / len(times)
    return {"partial": True, "batch": B, "seq": T, "steps": len(times), "step_s": sec, "tokens_per_s": B * T / sec,
            "note": "the stage stopped before the end: from the steps it finished"}


# ---- the comparison


def ratio(a, b):
    return a / b if a and b else None


def fmt(v, spec, none="–"):
    return none if v is None else format(v, spec)


def pct(v):
    return "–" if v is None else f"{100 * v:.1f}%"


def build_results(res_dir):
    here = os.path.dirname(os.path.abspath(res_dir))
    env = read_json(os.path.join(res_dir, "env.json")) or {}
    stages = read_jsonl(os.path.join(res_dir, "stages.jsonl"))
    build = read_json(os.path.join(here, "BUILD.json"))
    logs = os.path.join(res_dir, "logs")
    log = lambda n: read_text(os.path.join(logs, n + ".log"))  # noqa: E731
    telling = re.compile(r"error|Error|ERROR|FAIL|panic|[Ss]kip|SKIP|not found|out of memory|Traceback|[Kk]illed|needs")
    for s in stages:
        lines = [l for l in log(s.get("stage", "")).splitlines() if l.strip()]
        lines = [l for l in lines if not re.match(r"(FAIL|PASS|ok)\b|exit status", l.strip())] or lines
        if lines:  # the last line that says what went wrong, else the last line
            s["last_line"] = next((l for l in reversed(lines) if telling.search(l)), lines[-1])[:300]
    kern = kernels(log("kernels"))
    ceiling = kern["bf16_gemm_tflops"] if kern else None
    ours = {}
    for key, stage in (("kd_step", "kd"), ("student_step", "student")):
        b = read_json(os.path.join(res_dir, stage + ".json")) or partial_bench(log(stage))
        if b is not None:
            b.update(counters(b, log(stage)))
            ceiling = ceiling or b.get("gemm_ceiling_tflops")
        ours[key] = b
    trows, tinfo = torch_rows(res_dir)
    theirs = {"student_step": trows.get("student"), "kd_plain": trows.get("kd-plain"), "kd_liger": trows.get("kd-liger")}
    for r in theirs.values():
        if r and ceiling and r.get("step_s") and r.get("model_flops_per_step"):
            r["gemm_ceiling_tflops"] = ceiling
            r["mfu_of_gemm_ceiling"] = r["model_flops_per_step"] / r["step_s"] / (ceiling * 1e12)

    def ok(r):
        return r if r and not r.get("error") and r.get("tokens_per_s") else None

    kd, tk, tl = ok(ours["kd_step"]), ok(theirs["kd_plain"]), ok(theirs["kd_liger"])
    st, ts = ok(ours["student_step"]), ok(theirs["student_step"])
    tp = lambda r: r and r.get("tokens_per_s")  # noqa: E731
    mem = lambda r: r and r.get("peak_device_mb")  # noqa: E731
    comparison = {
        "kd_step": {"tokens_per_s_vs_torch": ratio(tp(kd), tp(tk)),
                    "tokens_per_s_vs_torch_liger": ratio(tp(kd), tp(tl)),
                    "memory_vs_torch": ratio(mem(kd), mem(tk)),
                    "memory_vs_torch_liger": ratio(mem(kd), mem(tl))},
        "student_step": {"tokens_per_s_vs_torch": ratio(tp(st), tp(ts)),
                         "memory_vs_torch": ratio(mem(st), mem(ts))},
    }
    c = comparison["kd_step"]
    goals = None
    if env.get("mode") == "gpu":
        goals = {
            "milestone: KD tokens/s >= PyTorch bf16": None if c["tokens_per_s_vs_torch"] is None else c["tokens_per_s_vs_torch"] >= 1,
            "goal: KD tokens/s >= 1.5x PyTorch": None if c["tokens_per_s_vs_torch"] is None else c["tokens_per_s_vs_torch"] >= 1.5,
            "goal: KD tokens/s >= 1.2x PyTorch+Liger with <= 0.8x its memory":
                None if c["tokens_per_s_vs_torch_liger"] is None or c["memory_vs_torch_liger"] is None
                else c["tokens_per_s_vs_torch_liger"] >= 1.2 and c["memory_vs_torch_liger"] <= 0.8,
        }
    return {
        "schema": SCHEMA,
        "env": env | {"build": build, "torch": tinfo},
        "stages": stages,
        "kdnative": ours,
        "torch": theirs,
        "kernels": kern,
        "kd_loss": kd_loss(log("kdloss")),
        "decode": decode(log("decode")),
        "tests": {"tests": tests(log("tests")), "tests-long": tests(log("tests-long"))},
        "kernel_cache": cache(res_dir, build, log("env")),
        "comparison": comparison,
        "goals": goals,
    }


def why_missing(res, stage):
    """Why a stage left no figure: its status and the last line of its log."""
    if res["env"].get("mode") == "dry":
        return "not measured in the dry run"
    s = next((s for s in res["stages"] if s.get("stage") == stage), None)
    if s is None:
        return f"no result: stage {stage} did not run"
    last = (s.get("last_line") or "").strip()
    return f"no result: stage {stage} {s.get('status')}" + (f": {last[:160]}" if last else "")


def step_line(name, r, res, stage):
    if r is None:
        return f"  {name:<34} {why_missing(res, stage)}"
    if r.get("error"):
        return f"  {name:<34} not measured: {r['error'][:150]}"
    if r.get("batch") and r["batch"] != res["env"].get("batch") and res["env"].get("mode") != "dry":
        name = f"{name} (batch {r['batch']})"
    if r.get("partial"):
        name += " (partial)"
    syncs = fmt(r.get("syncs_per_step"), ".0f")
    launches = fmt(r.get("launches_per_step"), ".0f")
    return (f"  {name:<34} {r['tokens_per_s']:>9,.0f} {r['step_s']:>8.3f} s {pct(r.get('mfu')):>7} "
            f"{pct(r.get('mfu_of_gemm_ceiling')):>7} {fmt(r.get('peak_device_mb'), ',.0f'):>9} MB "
            f"{syncs:>6} {launches:>8}  {r.get('precision', '')}")


def summary(res):
    env, out = res["env"], []
    build = env.get("build") or {}
    if env.get("mode") == "dry":
        out.append(f"kdnative GPU check — DRY RUN, no GPU ({env.get('no_gpu') or 'forced'}): "
                   "figures below come from tiny CPU shapes and only show the pipeline works")
    else:
        out.append(f"kdnative GPU check — {env.get('gpu')} ({env.get('gpu_memory_mib') or '?'} MiB, driver {env.get('driver') or '?'}), "
                   f"{env.get('started') or '?'}")
    out.append(f"build {build.get('commit', '?')} ({build.get('built', '?')}); batch {env.get('batch')} × {env.get('seq')} tokens, "
               f"{env.get('steps')} timed steps after one warm-up")
    out.append("")
    out.append(f"  {'stage':<16} {'status':<8} {'time':>6} {'budget':>7}")
    for s in res["stages"]:
        out.append(f"  {s.get('stage', '?'):<16} {s.get('status', '?'):<8} {fmt(s.get('seconds'), 'd'):>4} s {s.get('budget_s', 0):>5} s"
                   + (f"  {s['note']}" if s.get("note") else ""))
    head = (f"  {'':<34} {'tokens/s':>9} {'step':>10} {'MFU':>7} {'of GEMM':>7} {'peak mem':>12} "
            f"{'syncs':>6} {'launches':>8}  precision")
    ours, theirs = res["kdnative"], res["torch"]
    kd = ours.get("kd_step")
    out += ["", "KD step — student Qwen2.5-0.5B shape, online teacher Qwen2.5-1.5B shape (random weights), forward KL at T=2:"]
    if kd:
        out.append(f"  student: {kd.get('model', '?')}; teacher: {kd.get('teacher', '?')}")
    out += [head,
            step_line("kdnative (fused KD loss)", kd, res, "kd"),
            step_line("PyTorch bf16, plain KL", theirs.get("kd_plain"), res, "torch-kd-plain"),
            step_line("PyTorch bf16 + Liger fused JSD", theirs.get("kd_liger"), res, "torch-kd-liger")]
    c = res["comparison"]["kd_step"]
    out.append(f"  kdnative tokens/s ÷ PyTorch {fmt(c['tokens_per_s_vs_torch'], '.2f')}×, ÷ PyTorch+Liger "
               f"{fmt(c['tokens_per_s_vs_torch_liger'], '.2f')}×; peak memory ÷ PyTorch {fmt(c['memory_vs_torch'], '.2f')}×, "
               f"÷ PyTorch+Liger {fmt(c['memory_vs_torch_liger'], '.2f')}×")
    for g, v in (res.get("goals") or {}).items():
        out.append(f"  {g}: {'–' if v is None else ('yes' if v else 'no')}")
    out += ["", "Student training step — Qwen2.5-0.5B shape, cross-entropy on full logits:", head,
            step_line("kdnative", ours.get("student_step"), res, "student"),
            step_line("PyTorch bf16", theirs.get("student_step"), res, "torch-student")]
    c = res["comparison"]["student_step"]
    out.append(f"  kdnative tokens/s ÷ PyTorch {fmt(c['tokens_per_s_vs_torch'], '.2f')}×; peak memory ÷ PyTorch {fmt(c['memory_vs_torch'], '.2f')}×")
    out.append("  MFU: model FLOPs (student training + teacher forward, flops.py) over the card's dense bf16 peak; "
               "'of GEMM' over the measured bf16 GEMM ceiling")
    kl = res["kd_loss"]
    out += ["", "Fused KD loss against the plain one (kdnative on the GPU, forward KL + backward, F32):"]
    if kl:
        for v in ("fused", "plain"):
            r = kl.get(v)
            if r:
                out.append(f"  {v:<6} N={r['N']} C={r['C']} V={r['V']}: {fmt(r.get('seconds'), '.3f')} s, "
                           f"{fmt(r.get('tokens_per_s'), ',.0f')} tokens/s, peak {fmt(r.get('peak_mb'), ',.0f')} MB")
        if kl.get("fused_speedup"):
            out.append(f"  fused: {kl['fused_speedup']:.2f}× the plain one's speed with {100 * kl['fused_memory_fraction']:.1f}% of its memory")
    else:
        out.append("  " + why_missing(res, "kdloss"))
    d = res.get("decode")
    out += ["", "Decode steps of the engine (kdnative on the GPU, BF16, one token per sequence per step):"]
    if d:
        for v, what in (("graphs", "CUDA graphs"), ("no_graphs", "no graphs")):
            r = d.get(v)
            if r:
                out.append(f"  {what:<12} {r['rows']} sequences, {r['prompt']}-token prompts: {fmt(r.get('tokens_per_s'), ',.0f')} tokens/s, "
                           f"{fmt(1e3 * r['step_s'] if r.get('step_s') else None, '.2f')} ms/step, "
                           f"{fmt(r.get('launches_per_step'), ',.1f')} launches/step")
        if d.get("graphs_speedup"):
            out.append(f"  graphs: {d['graphs_speedup']:.2f}× the decode tokens/s without them")
    else:
        out.append("  " + why_missing(res, "decode"))
    k = res["kernels"]
    out += ["", "Kernels (bench --kernels):"]
    if k:
        out.append(f"  copy ceiling {k['copy_gbs']:.0f} GB/s, bf16 GEMM ceiling {k['bf16_gemm_tflops']:.1f} TFLOP/s")
        for r in k["rows"]:
            out.append(f"  {r['op']:<34} {r['shape']:<26} {r['ms']:>9.3f} ms {r['rate']:>8.1f} {r['unit']:<7} {100 * r['of_ceiling']:>4.0f}%")
    else:
        out.append("  " + why_missing(res, "kernels"))
    out += ["", "GPU tests (the cuda package against the CPU reference):"]
    for name, t in res["tests"].items():
        if not t or res["env"].get("mode") == "dry":
            out.append(f"  {name}: {why_missing(res, name)}")
            continue
        line = f"  {name}: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped"
        if t.get("timed_out_after"):
            line += f"; timed out after {t['timed_out_after']} in {', '.join(t.get('running_at_timeout') or ['?'])}"
        if t.get("crashed"):
            line += "; the test binary crashed (see its log)"
        out.append(line)
        if t["failed_names"]:
            out.append("    failed: " + ", ".join(t["failed_names"][:20]))
    kc = res["kernel_cache"]
    out += ["", f"Kernel cache: {kc['prebuilt']} prebuilt cubins ({kc.get('prebuilt_for') or '?'}), NVRTC here "
                f"{kc.get('nvrtc_here') or '?'}; compiled during the run: {len(kc['compiled_here'])}"
                + (f" ({', '.join(kc['compiled_here'])})" if kc["compiled_here"] else "")]
    return "\n".join(out) + "\n"


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv):
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    res_dir = argv[0]
    res = build_results(res_dir)
    write_atomic(os.path.join(res_dir, "results.json"), json.dumps(res, indent=2) + "\n")
    text = summary(res)
    write_atomic(os.path.join(res_dir, "summary.txt"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
