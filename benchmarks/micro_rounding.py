"""Why an integer file's classes under TFLite Micro can differ from LiteRT's: the same file's raw
int8 outputs under TFLite Micro, under LiteRT with XNNPACK (the harness's default) and under
LiteRT's built-in kernels, on the first N test images. Offset buffers are moved inline first.

    .venv/bin/python benchmarks/micro_rounding.py cifar10_mlp aeq_a8w8_sym [N]   (TFQ_DATA_ROOT set)
"""

import sys

import numpy as np

from tfq import data
from tfq.runtimes import flatbuffer, harness, litert, tflm


def main(run: str, mode: str, n: str = "2000") -> None:
    dataset, _ = run.rsplit("_", 1)
    images, _ = data.to_numpy(data.load(dataset).test)
    with open(f"artifacts/{run}/{mode}.tflite", "rb") as f:
        blob = f.read()
    if flatbuffer.read(blob).offset_buffers:
        blob = flatbuffer.inline_buffers(blob)
    x = harness.Classifier(blob).prepare(images[: int(n)])
    micro = tflm.run_in_processes(blob, tflm.smallest_arena(blob, x[:1])[0], x, litert.cores())
    for name, xnnpack in (("LiteRT with XNNPACK", True), ("LiteRT built-in kernels", False)):
        other = litert.run_batches(litert.batched_interpreter(blob, 256, xnnpack=xnnpack), x)
        diff = np.abs(micro.astype(np.int64) - other.astype(np.int64))
        print(
            f"{run} {mode}, TFLite Micro against {name} on {len(x):,d} images: same class "
            f"{(micro.argmax(1) == other.argmax(1)).mean():.2%}, "
            f"identical raw outputs {(diff == 0).all(1).mean():.2%}, "
            f"largest output difference {diff.max()} steps"
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
