#!/usr/bin/env bash
# run.sh: the GPU check, in the folder scripts/gpu-check.sh builds. Needs the
# NVIDIA driver and python3 with torch and transformers for the PyTorch rows;
# no Go, no network.
#
#   bash run.sh              # on a GPU: every stage, then the summary
#   bash run.sh --dry-run    # anywhere: each stage up to its first GPU call
#
# Without a GPU (no nvidia-smi, or it lists none) run.sh does the dry run by
# itself. Each stage runs under `timeout` with its own budget, capped so the
# whole run ends GPUCHECK_DEADLINE_S (default 540) seconds after it starts;
# a stage that fails or times out is recorded and the next one runs. The
# summary (summary.txt) and every figure (results.json) are written last, on
# any exit, and copied with the logs (logs.tar.gz) into $OUT when it is set.
#
# Environment: BATCH (sequences of SEQ=1024 tokens; default 8, for kdnative and
# PyTorch alike), STEPS (timed steps, 3),
# PYTHON (python3), GPUCHECK_DEADLINE_S; STUDENT_CONFIG and TEACHER_CONFIG
# (default qwen2.5-0.5b.json and qwen2.5-1.5b.json) only to try the script
# itself at other shapes.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"
# The binaries come gzipped (scripts/gpu-check.sh): unpack them once.
for bin in kdnative cuda/cuda.test; do
  if [ -f "$bin.gz" ] && [ ! -x "$bin" ]; then
    gzip -dc "$bin.gz" > "$bin.tmp" && chmod +x "$bin.tmp" && mv "$bin.tmp" "$bin" ||
      { echo "run.sh: cannot unpack $bin.gz" >&2; exit 1; }
  fi
done
DRY=0
for a in "$@"; do
  case $a in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $a (want --dry-run)" >&2; exit 2 ;;
  esac
done

START=$(date +%s)
DEADLINE=${GPUCHECK_DEADLINE_S:-540}
RESERVE=15 # seconds kept for the summary and the copy into $OUT
RES=$HERE/results
rm -rf "$RES"
mkdir -p "$RES/logs"
PYTHON=${PYTHON:-python3}
export KDNATIVE_KERNEL_CACHE=$HERE/kernel-cache
# CUDA graphs of the training step are opt-in until a GPU confirms them: this run does.
export KDNATIVE_CUDA_GRAPHS=${KDNATIVE_CUDA_GRAPHS:-1}
export HERE RES PYTHON

# Is there a GPU? nvidia-smi answers before any CUDA library is loaded.
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
GPU_MEM=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1)
GPU_DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
NO_GPU_WHY=""
if [ -z "$GPU_NAME" ]; then
  if command -v nvidia-smi >/dev/null; then
    NO_GPU_WHY="nvidia-smi lists no GPU"
  else
    NO_GPU_WHY="no nvidia-smi (no NVIDIA driver)"
  fi
  DRY=1
fi
SEQ=${SEQ:-1024}
STEPS=${STEPS:-3}
STUDENT_CONFIG=${STUDENT_CONFIG:-qwen2.5-0.5b.json}
TEACHER_CONFIG=${TEACHER_CONFIG:-qwen2.5-1.5b.json}
# The bf16 KD step at 8 × 1024 plans 21 GB, the fp32 one 32 GB (docs/performance.md):
# batch 8 fits an 80 GB card; bench_or_half retries at half the batch if not.
BATCH=${BATCH:-8}
SITE=$(mktemp -d "${TMPDIR:-/tmp}/kdnative-gpucheck-site.XXXXXX")
export DRY SEQ STEPS BATCH SITE STUDENT_CONFIG TEACHER_CONFIG

json_str() { # a JSON string literal of $1
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/ }
  s=${s//$'\t'/ }
  printf '"%s"' "$s"
}

{
  printf '{"mode": %s, "started": %s, "batch": %s, "seq": %s, "steps": %s, ' \
    "$(json_str "$([ $DRY = 1 ] && echo dry || echo gpu)")" "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")" "$BATCH" "$SEQ" "$STEPS"
  printf '"gpu": %s, "gpu_memory_mib": %s, "driver": %s, "no_gpu": %s, "host": %s, "deadline_s": %s}\n' \
    "$(json_str "$GPU_NAME")" "$(json_str "$GPU_MEM")" "$(json_str "$GPU_DRIVER")" "$(json_str "$NO_GPU_WHY")" \
    "$(json_str "$(uname -srm)")" "$DEADLINE"
} > "$RES/env.json"
find kernel-cache -name '*.cubin' -printf '%f\n' 2>/dev/null | sort > "$RES/cache-before.txt"

FAILED=0
# stage NAME BUDGET FUNCTION: runs FUNCTION under timeout, its output in
# logs/NAME.log, and appends its outcome to stages.jsonl.
stage() {
  local name=$1 budget=$2 fn=$3
  local now left b t0 rc status secs
  now=$(date +%s)
  left=$((DEADLINE - (now - START) - RESERVE))
  if [ "$left" -lt 10 ]; then
    printf '{"stage": %s, "status": "skipped", "budget_s": %s, "note": "the run'"'"'s deadline left no time"}\n' \
      "$(json_str "$name")" "$budget" >> "$RES/stages.jsonl"
    echo "== $name: skipped (no time left)"
    return
  fi
  b=$((budget < left ? budget : left))
  echo "== $name (up to ${b} s)"
  t0=$(date +%s)
  STAGE_BUDGET=$b timeout -k 10 "$b" bash -c "$fn" > "$RES/logs/$name.log" 2>&1
  rc=$?
  secs=$(($(date +%s) - t0))
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status=failed ;;
  esac
  [ $status = ok ] || FAILED=$((FAILED + 1))
  printf '{"stage": %s, "status": "%s", "rc": %s, "seconds": %s, "budget_s": %s, "log": "logs/%s.log"}\n' \
    "$(json_str "$name")" "$status" "$rc" "$secs" "$b" "$name" >> "$RES/stages.jsonl"
  echo "   $status in ${secs} s (exit $rc); last lines of logs/$name.log:"
  tail -n 2 "$RES/logs/$name.log" | cut -c1-160 | sed 's/^/   | /'
}

finish() {
  trap - EXIT INT TERM
  find "$HERE/kernel-cache" -name '*.cubin' -printf '%f\n' 2>/dev/null | sort > "$RES/cache-after.txt"
  "$PYTHON" "$HERE/summarize.py" "$RES" > "$RES/summarize.log" 2>&1 || echo "summarize.py failed: see $RES/summarize.log" | tee -a "$RES/summary.txt"
  # Everything the stages left (logs, bench JSON, PyTorch rows), in one file.
  tar -czf "$SITE/logs.tar.gz" -C "$RES" . && mv "$SITE/logs.tar.gz" "$RES/logs.tar.gz"
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT" && cp "$RES/results.json" "$RES/summary.txt" "$RES/logs.tar.gz" "$OUT/" 2>/dev/null
  fi
  echo
  cat "$RES/summary.txt" 2>/dev/null
  rm -rf "$SITE"
  echo "${LAST_LINE:-run.sh stopped before its last stage}"
}
LAST_LINE=""
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- stages. Each runs in its own bash under timeout, so each is a function
# exported to it; DRY=1 stops each before its first GPU call.

st_env() {
  set -x
  ./kdnative version
  nvidia-smi || true
  ./kdnative doctor # on a GPU this opens CUDA: loads (or compiles) every kernel
  cat BUILD.json
}

st_wheels() {
  set -ex
  "$PYTHON" --version
  ls wheels/*.whl
  # The wheels missing on the GPU machines, offline, into a fresh directory.
  "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --disable-pip-version-check \
    --target "$SITE" wheels/*.whl
  "$PYTHON" - "$SITE" wheels/*.whl <<'PY'
import importlib.metadata as md, os, sys
site, wheels = sys.argv[1], sys.argv[2:]
got = {d.metadata["Name"].lower().replace("_", "-"): d.version for d in md.distributions(path=[site])}
for w in wheels:
    name, ver = os.path.basename(w).split("-")[:2]
    name = name.lower().replace("_", "-")
    if got.get(name) != ver:
        sys.exit(f"{w}: installed {got.get(name)!r} in {site}, want {ver}")
    print(f"installed {name} {ver}")
PY
  "$PYTHON" -m py_compile torch_bench.py flops.py summarize.py
  # Importing torch, transformers and Liger is left to the PyTorch stages
  # (tens of seconds each time): each row says what it could not import.
}

# The cuda package's tests: the static checks that read Go sources, the
# emulator's own test and the compile check ran in CI; the two long training
# tests get their own stage at the end.
TESTS_SKIP='^(TestLaunchedKernelsExist|TestLaunchArgsMatchKernels|TestEmulatorCatchesBugs|TestKernelsCompile|TestDemoMatchesCPU|TestTrainingLossFalls)$'
TESTS_LONG='^(TestDemoMatchesCPU|TestTrainingLossFalls)$'
export TESTS_SKIP TESTS_LONG

st_tests() {
  cd cuda || return 1
  if [ "$DRY" = 1 ]; then
    ./cuda.test -test.list '.*' > ../results/tests-list.txt || return 1
    for t in TestRegistered TestMatMul TestAttention TestDivergence TestModelMatchesCPU TestDemoMatchesCPU BenchmarkKDFusedVsPlainGPU; do
      grep -qx "$t" ../results/tests-list.txt || { echo "the test binary has no $t"; return 1; }
    done
    echo "dry run: the test binary lists $(wc -l < ../results/tests-list.txt) tests and benchmarks; they need a GPU"
    return 0
  fi
  ./cuda.test -test.v -test.count=1 -test.timeout=$((STAGE_BUDGET - 5))s -test.skip "$TESTS_SKIP"
}

st_tests_long() {
  cd cuda || return 1
  if [ "$DRY" = 1 ]; then
    echo "dry run: $TESTS_LONG need a GPU"
    return 0
  fi
  ./cuda.test -test.v -test.count=1 -test.timeout=$((STAGE_BUDGET - 5))s -test.run "$TESTS_LONG"
}

# kdnative bench: on the GPU the real shapes; in the dry run tiny ones on the
# CPU, which goes through the same flags, JSON and summary.
bench() { # bench OUT.json [--teacher-config T.json]
  local out=$1
  shift
  ./kdnative bench --config "$STUDENT_CONFIG" "$@" --batch "$BATCH" --seq "$SEQ" --plan --json "${out%.json}-plan.json" | grep -E '^(peak|precision|note)' || true # the memory plan, beside the measured peak
  if [ "$DRY" = 1 ]; then
    ./kdnative --device cpu bench --config tiny-student.json "${@/$TEACHER_CONFIG/tiny-teacher.json}" \
      --batch 2 --seq 32 --steps 1 --json "$out"
  else
    ./kdnative --device cuda bench --config "$STUDENT_CONFIG" "$@" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --json "$out"
  fi
}
# bench_or_half NAME [ARGS…]: bench, and once more at half the batch when
# the GPU ran out of memory (PyTorch's side may need more than our plan);
# the result's batch says which it was.
bench_or_half() {
  local name=$1
  shift
  bench "$RES/$name.json" "$@" && return 0
  local rc=$?
  if [ "$DRY" = 1 ] || [ "$BATCH" -lt 2 ] || ! grep -q "out of memory" "$RES/logs/$name.log"; then
    return $rc
  fi
  echo "== out of memory at batch $BATCH: once more at batch $((BATCH / 2))"
  BATCH=$((BATCH / 2)) bench "$RES/$name.json" "$@"
}
st_kd() { bench_or_half kd --teacher-config "$TEACHER_CONFIG"; }
st_student() { bench_or_half student; }

torch_row() { # torch_row ROW
  local args=(--only "$1" --out "$RES/torch-$1.jsonl")
  if [ "$DRY" = 1 ]; then
    PYTHONPATH=$SITE "$PYTHON" -c 'import torch, transformers' 2>/dev/null || {
      echo "dry run: torch and transformers are not importable here; on the GPU machine this row runs torch_bench.py --only $1"
      return 0
    }
    args+=(--tiny)
  else
    args+=(--student "$STUDENT_CONFIG" --teacher "$TEACHER_CONFIG" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS")
  fi
  PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} "$PYTHON" torch_bench.py "${args[@]}"
  local rc=$?
  # On a CPU the Liger row says why it cannot run (its Triton kernels need a
  # GPU): that is its gate working, not a failure of the dry run.
  if [ "$DRY" = 1 ] && [ "$1" = kd-liger ]; then return 0; fi
  return $rc
}
st_torch_student() { torch_row student; }
st_torch_kd_plain() { torch_row kd-plain; }
st_torch_kd_liger() { torch_row kd-liger; }

st_kernels() {
  if [ "$DRY" = 1 ]; then
    echo "dry run: bench --kernels needs a GPU"
    return 0
  fi
  ./kdnative --device cuda bench --kernels
}

# go_bench NAME BENCHTIME: the cuda package's BenchmarkNAME on the GPU (the
# dry run checks that the test binary has it). The caller's environment
# (KDNATIVE_BENCH_*) goes with it.
go_bench() {
  cd cuda || return 1
  if [ "$DRY" = 1 ]; then
    ./cuda.test -test.list "Benchmark$1" | grep -qx "Benchmark$1" || return 1
    echo "dry run: Benchmark$1 needs a GPU"
    return 0
  fi
  ./cuda.test -test.v -test.run '^$' -test.bench "^Benchmark$1\$" -test.benchtime "$2"
}

# The fused, chunked KD loss against the plain one (every [N × V] logit in
# memory) at N = BT = 8192 tokens, C = 896, V = 151,936.
st_kdloss() { KDNATIVE_BENCH_TOKENS=$((BATCH * SEQ)) go_bench KDFusedVsPlainGPU 3x; }

# The fused cross-tokenizer loss (kd/loss CrossTokenizer) at Llama 3's and
# Qwen2.5's vocabularies (128,256 and 151,936).
st_xtokloss() { go_bench CrossTokenizerGPU 3x; }

# The engine's decode steps (generate, serve, on-policy sampling) at the
# student's shape, with CUDA graphs and without.
st_decode() {
  local cfg=$STUDENT_CONFIG
  case $cfg in /*) ;; *) cfg=../$cfg ;; esac
  KDNATIVE_BENCH_CONFIG="$cfg" go_bench DecodeGPU 200x
}

export -f st_env st_wheels st_tests st_tests_long bench bench_or_half st_kd st_student torch_row \
  st_torch_student st_torch_kd_plain st_torch_kd_liger st_kernels go_bench st_kdloss st_xtokloss st_decode

if [ "$DRY" = 1 ]; then
  echo "== dry run: ${NO_GPU_WHY:-asked for with --dry-run}; each stage runs up to its first GPU call"
else
  echo "== GPU check on $GPU_NAME ($GPU_MEM MiB, driver $GPU_DRIVER): batch $BATCH × $SEQ, $STEPS timed steps"
fi
# Most important first: a stage the deadline squeezes out is one of the last.
stage env 45 st_env
stage wheels 30 st_wheels
stage tests 90 st_tests
stage kd 150 st_kd
stage torch-kd-plain 90 st_torch_kd_plain
stage torch-kd-liger 90 st_torch_kd_liger
stage student 90 st_student
stage torch-student 75 st_torch_student
stage kernels 60 st_kernels
stage kdloss 75 st_kdloss
stage xtokloss 40 st_xtokloss
stage decode 40 st_decode
stage tests-long 120 st_tests_long

if [ "$DRY" = 1 ]; then
  if [ "$FAILED" -gt 0 ]; then
    LAST_LINE="DRY RUN FAILED: $FAILED stage(s) failed; see $RES/logs"
    exit 1
  fi
  LAST_LINE="no GPU: dry run passed (${NO_GPU_WHY:-forced with --dry-run}); every stage ran up to its first GPU call"
  exit 0
fi
if [ "$FAILED" -gt 0 ]; then
  LAST_LINE="GPU check done: $FAILED stage(s) failed or timed out; see the table above and logs.tar.gz"
  exit 1
fi
LAST_LINE="GPU check done: every stage passed"
