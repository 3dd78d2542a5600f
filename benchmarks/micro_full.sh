#!/usr/bin/env bash
# TFLite Micro on the whole test split for every file of one run (the study runs the first 2,000
# test images per file, to stay within its time budget: about 15 ms per CNN image on one core).
# Works in a scratch copy, so the study's micro.json stays as it is; LiteRT's answers come from
# the study's saved eval_<mode>.npy (same file digests).
#   benchmarks/micro_full.sh [dataset] [model]      (after the pipeline has run)
set -euo pipefail
cd "$(dirname "$0")/.."
dataset="${1:-mnist}"; model="${2:-cnn}"
run="artifacts/${dataset}_${model}"
scratch="$(mktemp -d)"; trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/${dataset}_${model}"
cp "$run"/*.tflite "$run"/eval_*.json "$run"/eval_*.npy "$scratch/${dataset}_${model}/"
./tfq.sh micro --dataset="$dataset" --model="$model" --mode=all --artifacts="$scratch"
