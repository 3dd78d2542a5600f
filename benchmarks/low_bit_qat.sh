#!/usr/bin/env bash
# Which epochs and learning rate for low-bit QAT (w4a8, w4a4)? Fine-tunes a scratch copy of one
# trained model for up to N epochs at each rate and prints, epoch by epoch, the VALIDATION
# accuracy of each QAT Keras model (its fake-quant graph) beside the equally fine-tuned float
# control's: at a constant rate, epoch k of an N-epoch run is a k-epoch run, so one run per rate
# covers every epoch count. Settings are chosen here, never on the test split.
#   benchmarks/low_bit_qat.sh [dataset] [model] [epochs] [rates...]   (after the model is trained)
set -euo pipefail
cd "$(dirname "$0")/.."
dataset="${1:-cifar10}"; model="${2:-cnn}"; epochs="${3:-3}"; shift $(( $# < 3 ? $# : 3 ))
rates=("${@:-1e-5 1e-4}")
scratch="$(mktemp -d)"; trap 'rm -rf "$scratch"' EXIT
run="$scratch/${dataset}_${model}"
mkdir -p "$run"
cp "artifacts/${dataset}_${model}/model.keras" "$run/"
for lr in ${rates[*]}; do
  ./tfq.sh qat --dataset="$dataset" --model="$model" --low_bit=w4a8,w4a4 --low_bit_epochs="$epochs" \
    --low_bit_learning_rate="$lr" --artifacts="$scratch" > /dev/null
  python3 - "$run" "$lr" <<'PY'
import json, sys
run, lr = sys.argv[1], sys.argv[2]
r = json.load(open(f"{run}/qat_lowbit.json"))
control = r["control_history"]["val_accuracy"]
for e in range(len(control)):
    cells = "  ".join(f"{name} {100 * s['history']['val_accuracy'][e]:.2f}%" for name, s in r["schemes"].items())
    print(f"learning_rate={lr} epochs={e + 1}: validation  {cells}  float control {100 * control[e]:.2f}%")
PY
done
