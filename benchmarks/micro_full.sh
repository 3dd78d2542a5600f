#!/usr/bin/env bash
# TFLite Micro on the whole test split for a run's integer files (the study runs the first 2,000
# test images per file to stay within its time budget: about 15 ms per 28x28 CNN image on one core).
# Writes artifacts/<run>/micro_full.json beside the study's micro.json; the report shows both.
# LiteRT's answers come from the study's saved eval_<mode>.npy (same file digests).
#   benchmarks/micro_full.sh [dataset] [model] [modes]      (after the pipeline has run)
set -euo pipefail
cd "$(dirname "$0")/.."
dataset="${1:-mnist}"; model="${2:-cnn}"
modes="${3:-int8,qat_int8,aeq_a8w8,aeq_a8w8_sym,aeq_a8w8_pertensor,aeq_a8w8_mse,aeq_a8w8_octav}"
./tfq.sh micro --dataset="$dataset" --model="$model" --mode="$modes" --output=micro_full.json
