"""Paired comparison of two modes of one run on the same test images, from the predictions the
evaluate stage saved (eval_<mode>.npy): B minus A in points, its 95% interval and McNemar's p.

    .venv/bin/python benchmarks/paired.py [--artifacts=DIR] cifar10_cnn int8 aeq_a8w8 [A B ...]   (TFQ_DATA_ROOT set)
"""

import json
import sys

import numpy as np

from tfq import data
from tfq.core import artifacts, stats


def main(run: str, *modes: str, root: str = "artifacts") -> None:
    dataset, model = run.rsplit("_", 1)
    folder = artifacts.run_dir(root, dataset, model)
    _, labels = data.to_numpy(data.load(dataset).test)
    for a, b in zip(modes[::2], modes[1::2]):
        ea, eb = (json.loads((folder / f"eval_{m}.json").read_text()) for m in (a, b))
        if ea["examples"] != len(labels) or eb["examples"] != len(labels) or ea["data_source"] != eb["data_source"]:
            sys.exit(f"error: {a} and {b} were not both scored on the {len(labels)} test images")
        pa, pb = (np.load(folder / f"eval_{m}.npy") for m in (a, b))
        t = stats.paired(pa == labels, pb == labels)
        print(
            f"{run}: {b} minus {a}: {t['delta_pts']:+.2f} points [{t['ci95_pts'][0]:+.2f}, {t['ci95_pts'][1]:+.2f}], "
            f"McNemar p = {t['p_value']:.3g} ({(pa == labels).mean():.2%} -> {(pb == labels).mean():.2%})"
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    root = args.pop(0).split("=", 1)[1] if args and args[0].startswith("--artifacts=") else "artifacts"
    main(*args, root=root)
