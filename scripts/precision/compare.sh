#!/bin/sh
# bf16 against fp32 on the CPU: the runs and the plots of docs/performance.md
# ("bf16 against fp32") and docs/precision-*.png.
#
#   make build && scripts/precision/compare.sh [DIR]
#
# 1. The built-in demo (900 steps of forward-KL distillation), evaluated
#    every 100 steps, in fp32 and in bf16.
# 2. A 16M Llama-shaped student distilled from SmolLM2-135M-Instruct (a real
#    teacher, from the GGUF `make gguf-cache` fetches), 60 steps, evaluated
#    every 10, in fp32 and in bf16.
# Then one PNG per comparison under docs/ and a table of the evaluations.
# About an hour of CPU on 2 cores; the runs go to DIR (default
# precision-runs). KDNATIVE is the binary (default ./kdnative).
set -eu
DIR=${1:-precision-runs}
KD=${KDNATIVE:-./kdnative}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$DIR"
for p in fp32 bf16; do
	"$KD" --device cpu train --output "$DIR/demo-$p" --overwrite --set precision=$p --set eval_every=100 --set save_every=0
done
ASSETS="$DIR/demo-assets"
"$KD" --device cpu demo-assets "$ASSETS" >/dev/null
GGUF=$(make -s gguf-cache)
"$KD" --device cpu init-model --config "$HERE/student-16m.json" --tokenizer "$GGUF" --overwrite "$DIR/student-16m"
head -64 "$ASSETS/val.jsonl" > "$DIR/val64.jsonl"
for p in fp32 bf16; do
	"$KD" --device cpu train "$HERE/smollm2-kd.yaml" --set student="$DIR/student-16m" --set teacher="$GGUF" \
		--set data.train="$ASSETS/train.jsonl" --set data.val="$DIR/val64.jsonl" \
		--output "$DIR/smollm2-$p" --overwrite --set precision=$p
done
go run ./scripts/precision/plot -o docs/precision-demo.png -title "built-in demo, CPU" \
	fp32="$DIR/demo-fp32/metrics.jsonl" bf16="$DIR/demo-bf16/metrics.jsonl"
go run ./scripts/precision/plot -o docs/precision-smollm2.png -title "16M student from SmolLM2-135M, CPU" \
	fp32="$DIR/smollm2-fp32/metrics.jsonl" bf16="$DIR/smollm2-bf16/metrics.jsonl"
