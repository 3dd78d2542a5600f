#!/usr/bin/env bash
# How many calibration images does int8 need? Converts the trained model of one run with each
# count (in a scratch copy, so the study's files stay as they are) and prints test accuracy.
#   benchmarks/calibration.sh [dataset] [model]      (after the model is trained)
set -euo pipefail
cd "$(dirname "$0")/.."
dataset="${1:-mnist}"; model="${2:-cnn}"
scratch="$(mktemp -d)"; trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/${dataset}_${model}"
cp "artifacts/${dataset}_${model}/model.keras" "$scratch/${dataset}_${model}/"
for n in 10 50 100 200 500 1000 2000; do
  ./tfq.sh convert --dataset="$dataset" --model="$model" --mode=int8 --num_calibration="$n" \
    --artifacts="$scratch" > /dev/null
  acc=$(./tfq.sh evaluate --dataset="$dataset" --model="$model" --mode=int8 --latency_runs=1 \
    --artifacts="$scratch" | awk '{print $3}')
  secs=$(python3 -c "import json;print(json.load(open('$scratch/${dataset}_${model}/int8.json'))['convert_time_s'])")
  echo "$dataset $model num_calibration=$n int8 accuracy=$acc convert_s=$secs"
done
