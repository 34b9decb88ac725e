#!/bin/sh
# The cross-tokenizer measurement of docs/cross-tokenizer.md: the demo teacher (byte-level
# tokenizer) distilled into a student with a byte-level BPE tokenizer of SIZE tokens
# (examples/cross-tokenizer/bpe-SIZE), by SFT alone and by SFT + cross-tokenizer KD (align,
# uld): same steps, data, optimizer and seed. Prints each run's final validation loss (the
# student's cross-entropy per token on the demo's validation lines). From the repository root:
#   sh scripts/xtok/run.sh                 # SIZE=300: sft, align and uld (~10 minutes each on 2 cores)
#   SIZE=1024 sh scripts/xtok/run.sh uld   # one run, another student tokenizer
set -eu
SIZE=${SIZE:-300}
B=build/xtok
mkdir -p "$B/runs"
CGO_ENABLED=0 go build -o "$B/kdnative" ./cmd/kdnative
K="$B/kdnative"
# The teacher folder: the demo teacher's weights with its tokenizer.
mkdir -p "$B/teacher"
cp kd/demo/assets/teacher/config.json kd/demo/assets/teacher/model.safetensors "$B/teacher/"
cp kd/demo/assets/tokenizer/tokenizer.json kd/demo/assets/tokenizer/tokenizer_config.json "$B/teacher/"
# The student: the demo student's shape with the BPE tokenizer, random weights (seed 1).
T=examples/cross-tokenizer/bpe-$SIZE
"$K" init-model --config "$T/student-config.json" --tokenizer "$T" --seed 1 --overwrite "$B/student-init-$SIZE" >/dev/null
R=examples/recipes/cross-tokenizer.yaml
D="--set teacher=$B/teacher --set data.train=kd/demo/assets/data/train.jsonl.gz --set data.val=kd/demo/assets/data/val.jsonl.gz"
if [ $# -eq 0 ]; then set -- sft align uld; fi
for run in "$@"; do
	out="$B/runs/$SIZE-$run"
	case $run in
	sft) "$K" train "$R" $D --overwrite --set student="$B/student-init-$SIZE" --set output="$out" \
		--set teacher='""' --set objectives.kd=null >"$out.log" 2>&1 ;;
	align | uld) "$K" train "$R" $D --overwrite --set student="$B/student-init-$SIZE" --set output="$out" \
		--set objectives.kd.cross_tokenizer=$run >"$out.log" 2>&1 ;;
	*) echo "unknown run $run (sft, align, uld)" >&2; exit 2 ;;
	esac
	printf 'bpe-%s %-6s %s\n' "$SIZE" "$run" "$(grep '^step 900:' "$out.log")"
done
