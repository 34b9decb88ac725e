#!/usr/bin/env bash
# gpu-check.sh builds the GPU check: one folder that runs on any Linux x86-64
# machine with an NVIDIA GPU and its driver, with no Go and no network there.
#
#   scripts/gpu-check.sh [DIR]             # build into DIR (default gpucheck/, git-ignored)
#   scripts/gpu-check.sh --dry-run [DIR]   # build, then DIR/run.sh --dry-run (CI: no GPU needed)
#   bash DIR/run.sh                        # there: every stage, then summary.txt and results.json
#
# The folder (docs/gpu.md says what each stage measures):
#   kdnative, cuda/cuda.test   stripped CGO_ENABLED=0 binaries (the cuda package's tests),
#                              gzipped (.gz); run.sh unpacks them
#   kernel-cache/              every kernel compiled by NVRTC for sm_90 (H100, H200), so
#                              the GPU's time is not spent compiling (needs NVRTC here:
#                              pip install nvidia-cuda-nvrtc==13.0.88; without it the
#                              kernels compile there, on first use)
#   wheels/                    the Python wheels the GPU machines lack (scripts/gpu/wheels.txt)
#   run.sh, torch_bench.py, flops.py, summarize.py, the model configs, the test fixtures
#   BUILD.json                 commit, date, what the cache was built with
# The whole folder must stay under 60 MB; the check fails the build otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
dry=0
if [ "${1:-}" = --dry-run ]; then
  dry=1
  shift
fi
out=${1:-gpucheck}
rm -rf "$out"
mkdir -p "$out/cuda" "$out/model/testdata" "$out/kd/demo/assets/data" "$out/wheels"
export CGO_ENABLED=0 GOOS=linux GOARCH=amd64
go test -c -ldflags='-s -w' -o "$out/cuda/cuda.test" ./cuda
go build -ldflags='-s -w' -o "$out/kdnative" ./cmd/kdnative
cp -r model/testdata/fixtures "$out/model/testdata/"
cp kd/demo/assets/data/val.jsonl.gz "$out/kd/demo/assets/data/"
cp scripts/gpu/run.sh scripts/gpu/torch_bench.py scripts/gpu/flops.py scripts/gpu/summarize.py \
  scripts/gpu/qwen2.5-0.5b.json scripts/gpu/qwen2.5-1.5b.json scripts/gpu/tiny-student.json \
  scripts/gpu/tiny-teacher.json "$out/"
chmod +x "$out/run.sh"

# The wheels: for the GPU machines' Python (3.12, x86-64), without their
# dependencies, which are there already (wheels.txt says which).
grep -v -e '^#' -e '^\s*$' scripts/gpu/wheels.txt | while read -r req; do
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$out/wheels" "$req"
done

# The kernel cache, for sm_90, with this machine's NVRTC.
GOOS='' GOARCH='' go build -o "$out/.kernelcache" ./scripts/gpu/kernelcache
if cache=$("$out/.kernelcache" -o "$out/kernel-cache" -cc 9.0); then
  echo "$cache"
  cache_for=$(echo "$cache" | sed -n 's/.* for \(sm_[0-9]*\) by NVRTC \([0-9.]*\) .*/\1, NVRTC \2/p')
else
  echo "gpu-check: no kernel cache (the kernels will be compiled on the GPU machine): NVRTC is needed here" >&2
  cache_for=""
  rm -rf "$out/kernel-cache"
fi
rm -f "$out/.kernelcache"

# The binaries travel gzipped (about 40% of their size: the device tool
# carries the working tree and this folder in 64 MiB); run.sh unpacks them.
gzip -9 -n "$out/kdnative" "$out/cuda/cuda.test"

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit+changes"
fi
python3 - "$out/BUILD.json" "$commit" "$cache_for" "$(go version)" "$out/wheels" <<'PY'
import datetime, json, os, sys
path, commit, cache, gover, wheels = sys.argv[1:]
json.dump({"commit": commit, "built": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "go": gover, "kernel_cache": cache or None, "wheels": sorted(os.listdir(wheels))},
          open(path, "w"), indent=2)
PY

size=$(du -sb "$out" | cut -f1)
if [ "$size" -gt 60000000 ]; then
  echo "gpu-check: $out is $((size / 1000000)) MB, over the 60 MB the GPU check may take" >&2
  exit 1
fi
echo "built $out ($((size / 1000000)) MB): on a machine with an NVIDIA GPU, bash $out/run.sh (docs/gpu.md)"
# The device tool carries the working tree with the folder, 64 MiB in all.
tree=$(git ls-files -z --cached --others --exclude-standard 2>/dev/null | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
if [ -n "$tree" ] && [ $((tree + size)) -gt $((60 << 20)) ]; then
  echo "gpu-check: warning: the working tree ($((tree / 1000000)) MB) and $out together pass 60 MiB; the device tool carries 64 MiB at most" >&2
fi
if [ $dry = 1 ]; then
  bash "$out/run.sh" --dry-run
fi
