#!/usr/bin/env bash
# A user's own Keras model on a user's own image folder, through every stage of the study, timed:
# the folder (benchmarks/own_folder.py), the model a user trains on it with Keras' own loader
# (benchmarks/own_model.py: residual Add, DepthwiseConv2D, raw 0..255 input), then the pipeline with
# the study's settings. Results: $OUT/art/report/report.md; docs/your-own-model.md quotes one run.
set -euo pipefail
: "${TFQ_DATA_ROOT:?set TFQ_DATA_ROOT to the shared datasets folder}"
OUT=${1:-/tmp/tfq-own}
PY=${PYTHON:-.venv/bin/python}
rm -rf "$OUT" && mkdir -p "$OUT"
$PY benchmarks/own_folder.py "$TFQ_DATA_ROOT"/cifar10_jpeg/*.tar.gz "$OUT/animals"
$PY benchmarks/own_model.py "$OUT/animals" "$OUT/animals_net.keras"
/usr/bin/time -v $PY -m tfq.pipeline --preset=full --datasets="folder:$OUT/animals" \
    --model_file="$OUT/animals_net.keras" --input_range=0,255 --mixed_budgets=0.5,1.0 \
    --mixed_objectives=size,latency --micro_examples=1000 --shift_examples=250 --export_modes=int8 \
    --artifacts="$OUT/art"
