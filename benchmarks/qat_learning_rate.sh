#!/usr/bin/env bash
# Which QAT learning rate? Fine-tunes one trained model with each rate (in a scratch copy, so the
# study's files stay as they are) and scores the QAT int8 file on the VALIDATION split, beside the
# equally fine-tuned float control's validation accuracy: the rate is a setting chosen from data,
# so the test split never sees it.
#   benchmarks/qat_learning_rate.sh [dataset] [model] [rates...]   (after the model is trained)
set -euo pipefail
cd "$(dirname "$0")/.."
dataset="${1:-cifar10}"; model="${2:-cnn}"; shift $(( $# < 2 ? $# : 2 ))
rates=("${@:-1e-5 1e-4}")
scratch="$(mktemp -d)"; trap 'rm -rf "$scratch"' EXIT
run="$scratch/${dataset}_${model}"
mkdir -p "$run"
cp "artifacts/${dataset}_${model}/model.keras" "$run/"
./tfq.sh convert --dataset="$dataset" --model="$model" --mode=float32 --artifacts="$scratch" > /dev/null
for lr in ${rates[*]}; do
  ./tfq.sh qat --dataset="$dataset" --model="$model" --learning_rate="$lr" --artifacts="$scratch" > /dev/null
  ./tfq.sh evaluate --dataset="$dataset" --model="$model" --mode=qat_int8 --split=validation --latency_runs=5 \
    --latency_rounds=1 --artifacts="$scratch" > /dev/null
  python3 - "$run" "$lr" <<'PY'
import json, sys
run, lr = sys.argv[1], sys.argv[2]
v, q = json.load(open(f"{run}/val_qat_int8.json")), json.load(open(f"{run}/qat_int8.json"))
t = v["vs_reference"]
print(f"learning_rate={lr}  QAT int8 validation accuracy {100 * v['accuracy']:.2f}% (vs float32 {t['delta_pts']:+.2f} "
      f"[{t['ci95_pts'][0]:+.2f}, {t['ci95_pts'][1]:+.2f}], McNemar p={t['p_value']:.3f})  "
      f"float control after fine-tuning: validation {100 * q['control']['history']['val_accuracy'][-1]:.2f}%")
PY
done
