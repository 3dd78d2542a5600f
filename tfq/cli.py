"""What every `python -m tfq.X` shares: the common absl flags and one-line errors.

Each CLI is a thin `main` over a plain function; `run(main)` turns a `TfqError` (bad input a
user can fix) into one line on stderr and exit status 1, instead of a traceback.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from tfq.artifacts import TfqError


def define_common_flags() -> None:
    """--dataset, --model, --artifacts, --data_root, --cache_dir (once per process)."""
    if "dataset" in flags.FLAGS:
        return
    flags.DEFINE_string("dataset", "mnist", "mnist, fashion_mnist, emnist_digits or cifar10.")
    flags.DEFINE_string("model", "cnn", "mlp or cnn.")
    flags.DEFINE_string("artifacts", "artifacts", "Root of the run folders <dataset>_<model>/.")
    flags.DEFINE_string(
        "data_root", None, "Folder of raw dataset files, one subfolder per dataset "
        "(default: $TFQ_DATA_ROOT).")
    flags.DEFINE_string(
        "cache_dir", None, "Where tfds builds datasets (default: $TFQ_CACHE_DIR or ~/.cache/tfq).")


def run(main) -> None:
    """absl's app.run, with TfqError reported as one line and exit status 1."""

    def wrapped(argv):
        if not flags.FLAGS["verbosity"].present:
            # tfds and TensorFlow log every file they touch at INFO; --verbosity=0 brings that back.
            logging.set_verbosity(logging.WARNING)
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            main(argv)
        except TfqError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    app.run(wrapped)
