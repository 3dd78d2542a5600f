#!/usr/bin/env bash
# Which MNIST CNN width fits a 256 KB-flash, 64 KB-RAM part in int8? The study's default widths
# (32,64,128) give a 305,512-byte int8 file; this trains the CNN at narrower widths with the same
# flagfile otherwise, converts it to int8, evaluates it in LiteRT (its classes are saved beside it)
# and runs it under TFLite Micro on the whole test split, in a scratch artifacts folder.
#   benchmarks/micro_width.sh [widths]      (default 24,48,96)
set -euo pipefail
cd "$(dirname "$0")/.."
widths="${1:-24,48,96}"
out="${TFQ_WIDTH_ARTIFACTS:-$(mktemp -d)}"
./tfq.sh train --flagfile=flags/mnist_cnn.cfg --cnn_widths="$widths" --artifacts="$out"
./tfq.sh convert --dataset=mnist --model=cnn --mode=int8 --artifacts="$out"
./tfq.sh evaluate --dataset=mnist --model=cnn --mode=int8 --artifacts="$out"
./tfq.sh micro --dataset=mnist --model=cnn --mode=int8 --artifacts="$out"
# paired on the same test images against the study's int8 file (default widths)
.venv/bin/python - "$out" <<'PY'
import sys

import numpy as np

from tfq import data
from tfq.core import stats

_, labels = data.to_numpy(data.load("mnist").test)
default = np.load("artifacts/mnist_cnn/eval_int8.npy")
narrow = np.load(f"{sys.argv[1]}/mnist_cnn/eval_int8.npy")
t = stats.paired(default == labels, narrow == labels)
print(f"int8, these widths minus the study's: {t['delta_pts']:+.2f} points [{t['ci95_pts'][0]:+.2f}, "
      f"{t['ci95_pts'][1]:+.2f}], McNemar p = {t['p_value']:.3g} ({(default == labels).mean():.2%} -> "
      f"{(narrow == labels).mean():.2%})")
PY
echo "artifacts: $out"
