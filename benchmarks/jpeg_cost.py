"""Float32 ResNet-8 on the JPEG copy (run A) against the same recipe on the copy re-encoded once more
(run B, benchmarks/jpeg_cost.sh), paired on the same 10,000 test images: B minus A in points with its
95% interval, each run's validation and test accuracy, and the test images' pixel change between them.

    .venv/bin/python benchmarks/jpeg_cost.py RUN_A RUN_B CACHE_B   (TFQ_DATA_ROOT: the copy's root)
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

from tfq import data
from tfq.core import stats


def main(run_a: str, run_b: str, cache_b: str) -> None:
    xa, ya = data.to_numpy(data.load("cifar10", root=os.environ["TFQ_ORIGINAL_ROOT"]).test)
    xb, yb = data.to_numpy(data.load("cifar10", root=os.environ["TFQ_DATA_ROOT"], cache=cache_b).test)
    if not np.array_equal(ya, yb):
        sys.exit("error: the two copies' test images are not in the same order")
    change = np.abs(xa.astype(np.int16) - xb).mean()
    pa, pb = (np.load(Path(r) / "eval_float32.npy") for r in (run_a, run_b))
    if len(pa) != len(ya) or len(pb) != len(ya):
        sys.exit(f"error: both float32 files must be scored on all {len(ya)} test images (eval_float32.npy)")
    t = stats.paired(pa == ya, pb == ya)
    for name, run in (("A (copy)", run_a), ("B (copy re-encoded)", run_b)):
        train = json.loads((Path(run) / "train.json").read_text())
        print(f"{name}: {run}: validation {train.get('val_accuracy')}, test {train.get('test_accuracy')}")
    print(f"test images' mean |pixel change| A -> B: {change:.2f}/255")
    print(
        f"B minus A, float32 file, paired on {len(ya):,d} test images: {t['delta_pts']:+.2f} points "
        f"[{t['ci95_pts'][0]:+.2f}, {t['ci95_pts'][1]:+.2f}], McNemar p = {t['p_value']:.3g}"
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
