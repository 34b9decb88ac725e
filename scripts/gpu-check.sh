#!/usr/bin/env bash
# gpu-check.sh builds everything the GPU check needs into one folder that runs
# on any Linux machine with an NVIDIA GPU and its driver (no Go there):
#
#   scripts/gpu-check.sh [DIR]        # here: build into DIR (default gpucheck/)
#   DIR/run.sh                        # there: run every GPU test, then the benchmarks
#
# The folder holds the cuda package's test binary (every op against the CPU
# reference, a tiny model's logits/loss/gradients, a short training run, the
# kernel compile check), the kdnative binary, the model fixtures and demo
# data the tests read, and a Qwen2.5-0.5B-shaped config for the training-step benchmark.
# run.sh prints a short table last: per kernel, time, GB/s or TFLOP/s and the
# fraction of the machine's measured ceiling; tokens/s of a training step; the
# fused KD loss's time and peak memory against the plain one; and, where
# python3 has torch and transformers, the same training step and the plain KD
# loss in PyTorch on the same GPU (torch_bench.py).
# CUDA libraries (cuBLAS, NVRTC) are found the usual way: LD_LIBRARY_PATH,
# CUDA_HOME, /usr/local/cuda, the system path or the nvidia-* Python wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpucheck}
rm -rf "$out"
mkdir -p "$out/cuda" "$out/model/testdata" "$out/kd/demo/assets/data"
export CGO_ENABLED=0
go test -c -o "$out/cuda/cuda.test" ./cuda
go build -o "$out/kdnative" ./cmd/kdnative
cp -r model/testdata/fixtures "$out/model/testdata/"
cp kd/demo/assets/data/val.jsonl.gz "$out/kd/demo/assets/data/"
cp scripts/gpu/qwen2.5-0.5b.json scripts/gpu/torch_bench.py "$out/"
cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the GPU check; see scripts/gpu-check.sh in the kdnative repository.
# BATCH (default 8) is the benchmark's batch of 1024-token sequences.
set -uo pipefail
cd "$(dirname "$0")"
here=$(pwd)
export KDNATIVE_KERNEL_CACHE="$here/kernel-cache"
status=0
echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
"$here/kdnative" doctor || status=1
echo "== GPU tests (every op against the CPU, model, training)"
# The static checks that read the Go sources ran in CI; the sources are not here.
(cd cuda && ./cuda.test -test.v -test.count=1 -test.timeout=30m \
  -test.skip='^(TestLaunchedKernelsExist|TestLaunchArgsMatchKernels|TestEmulatorCatchesBugs)$' 2>&1) > tests.log
rc=$?
grep -E '^(=== RUN|--- (FAIL|SKIP)|FAIL|ok|PASS)|seed|loss' tests.log | grep -v '^=== RUN' | tail -n 80
[ $rc -eq 0 ] || { echo "GPU TESTS FAILED (rc $rc): see $here/tests.log"; status=1; }
echo "== kernels"
"$here/kdnative" --device cuda bench --kernels > kernels.txt 2>&1 || { status=1; }
echo "== training step (Qwen2.5-0.5B shape, random weights, sequence 1024)"
"$here/kdnative" --device cuda bench --config qwen2.5-0.5b.json --batch "${BATCH:-8}" --seq 1024 --steps 3 > step.txt 2>&1 || { status=1; }
echo "== fused KD loss (vocabulary 151,936) on the GPU"
(cd cuda && ./cuda.test -test.run '^$' -test.bench KDFusedVsPlainGPU -test.benchtime 3x 2>&1) > kd.txt || status=1
echo "== cross-tokenizer loss (vocabularies 128,256 and 151,936) on the GPU"
(cd cuda && ./cuda.test -test.run '^$' -test.bench CrossTokenizerGPU -test.benchtime 3x 2>&1) > xtok.txt || status=1
echo "== PyTorch on the same GPU (when python3 has torch and transformers)"
if python3 -c 'import torch, transformers' 2>/dev/null; then
  python3 torch_bench.py --config qwen2.5-0.5b.json --batch "${BATCH:-8}" --seq 1024 > torch.txt 2>&1 || status=1
else
  echo "no torch here" > torch.txt
fi
echo "== summary"
grep -cE '^--- PASS' tests.log | sed 's/^/tests passed: /'
grep -cE '^--- FAIL' tests.log | sed 's/^/tests failed: /'
cat kernels.txt
tail -n 5 step.txt
grep -E '^Benchmark' kd.txt
grep -E '^Benchmark' xtok.txt
grep '^{' torch.txt
exit $status
RUN
chmod +x "$out/run.sh"
echo "built $out: copy it to a machine with an NVIDIA GPU and run $out/run.sh"
