#!/bin/sh
# Trains the demo's student from the demo's teacher three ways with the same number of
# optimizer steps, batch, learning-rate schedule and teacher — off-policy KD (forward KL on
# the data's text, the built-in demo's recipe), on-policy distillation with GKD's JSD, and
# on-policy distillation with the reverse-KL policy gradient — then measures each student
# (scripts/onpolicy/main.go) and prints the table of docs/on-policy.md. Then, GKD's own
# setting — on-policy distillation of a student that was distilled off-policy first — half
# the steps off-policy KD and the other half each on-policy loss, against KD for all of them.
#
#   sh scripts/onpolicy/measure.sh [STEPS] [WORKDIR]     (default 300 steps, /tmp/onpolicy-measure)
# (about 20 minutes on two CPU cores)
set -eu
STEPS=${1:-300}
WORK=${2:-/tmp/onpolicy-measure}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$WORK"
cd "$REPO"
CGO_ENABLED=0 go build -o "$WORK/kdnative" ./cmd/kdnative
CGO_ENABLED=0 go build -o "$WORK/measure" ./scripts/onpolicy
cd "$WORK"
./kdnative --device cpu demo-assets demo-assets >/dev/null
common="--set max_steps=$STEPS --set log_every=1 --set eval_every=0 --set save_every=0 --overwrite"
./kdnative --device cpu train "$REPO/kd/demo/assets/recipes/distill.yaml" $common \
	--set student=demo-assets/student-init --set teacher=demo-assets/teacher \
	--set data.train=demo-assets/train.jsonl --set data.val=demo-assets/val.jsonl --set output=runs/kd > kd.log
./kdnative --device cpu train "$REPO/examples/recipes/onpolicy-jsd.yaml" $common --set output=runs/onpolicy-jsd > onpolicy-jsd.log
./kdnative --device cpu train "$REPO/examples/recipes/onpolicy-rkl.yaml" $common --set output=runs/onpolicy-rkl > onpolicy-rkl.log
HALF=$((STEPS / 2))
half="--set max_steps=$HALF --set log_every=1 --set eval_every=0 --set save_every=0 --overwrite"
./kdnative --device cpu train "$REPO/kd/demo/assets/recipes/distill.yaml" $half \
	--set student=demo-assets/student-init --set teacher=demo-assets/teacher \
	--set data.train=demo-assets/train.jsonl --set data.val=demo-assets/val.jsonl --set output=runs/kd-half > kd-half.log
./kdnative --device cpu train "$REPO/examples/recipes/onpolicy-jsd.yaml" $half --set student=runs/kd-half --set output=runs/kd-then-jsd > kd-then-jsd.log
./kdnative --device cpu train "$REPO/examples/recipes/onpolicy-rkl.yaml" $half --set student=runs/kd-half --set output=runs/kd-then-rkl > kd-then-rkl.log
# Every held-out prompt, with two sets of sampling seeds: the second says how much the
# reverse KL moves with the samples alone.
runs="runs/kd runs/onpolicy-jsd runs/onpolicy-rkl runs/kd-half runs/kd-then-jsd runs/kd-then-rkl"
./measure -assets demo-assets -prompts 275 $runs
./measure -assets demo-assets -prompts 275 -seed 5000 $runs
