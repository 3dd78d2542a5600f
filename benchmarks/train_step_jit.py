"""ResNet-8's training step at batch 256 on this CPU, with and without XLA (`jit_compile`): whether
compiling buys epochs within the 20-minute budget. Synthetic images, so only the step is timed.

    .venv/bin/python benchmarks/train_step_jit.py
"""

import time

import numpy as np
import tensorflow as tf

from tfq import models
from tfq.core.backend import keras

STEPS, BATCH = 12, 256


def main() -> None:
    x = np.random.default_rng(0).random((BATCH * STEPS, 32, 32, 3), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 10, BATCH * STEPS)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache()
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = models.build("resnet8", (32, 32, 3), 10)
        model.compile(
            optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=jit,
        )
        model.fit(ds.take(2), epochs=1, verbose=0)  # tracing and compiling, not timed
        started = time.time()
        model.fit(ds, epochs=2, verbose=0)
        step = (time.time() - started) / (2 * STEPS)
        print(f"jit_compile={jit}: {step * 1000:.0f} ms a step, {step * 45_000 / BATCH:.1f} s a 45,000-image epoch")


if __name__ == "__main__":
    main()
