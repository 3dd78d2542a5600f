#!/usr/bin/env bash
# How many calibration images does int8 need? Converts the trained model of one run with each
# count (in a scratch copy, so the study's files stay as they are) and scores each int8 file on
# the VALIDATION split: the count is a setting chosen from data, so the test split never sees it.
# Calibration images are drawn from the training split, which the validation split is carved from
# the end of, so they never overlap.
#   benchmarks/calibration.sh [dataset] [model]      (after the model is trained)
set -euo pipefail
cd "$(dirname "$0")/.."
dataset="${1:-mnist}"; model="${2:-cnn}"
scratch="$(mktemp -d)"; trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/${dataset}_${model}"
cp "artifacts/${dataset}_${model}/model.keras" "$scratch/${dataset}_${model}/"
./tfq.sh convert --dataset="$dataset" --model="$model" --mode=float32 --artifacts="$scratch" > /dev/null
for n in 10 50 100 200 500 1000 2000; do
  ./tfq.sh convert --dataset="$dataset" --model="$model" --mode=int8 --num_calibration="$n" \
    --artifacts="$scratch" > /dev/null
  ./tfq.sh evaluate --dataset="$dataset" --model="$model" --mode=int8 --split=validation --latency_runs=5 \
    --latency_rounds=1 --artifacts="$scratch" > /dev/null
  python3 - "$scratch/${dataset}_${model}" "$n" <<'PY'
import json, sys
run, n = sys.argv[1], sys.argv[2]
v = json.load(open(f"{run}/val_int8.json"))
t = v["vs_reference"]
print(f"num_calibration={n:>4}  validation accuracy {100 * v['accuracy']:.2f}%  vs float32 {t['delta_pts']:+.2f} "
      f"[{t['ci95_pts'][0]:+.2f}, {t['ci95_pts'][1]:+.2f}] (McNemar p={t['p_value']:.3f})  "
      f"convert {json.load(open(f'{run}/int8.json'))['convert_time_s']} s")
PY
done
