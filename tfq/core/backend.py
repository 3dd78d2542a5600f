"""The one place that picks Keras 2 before TensorFlow loads.

tfmot 0.8.1 only accepts tf_keras (Keras 2) models, and TensorFlow 2.21 hands out Keras 3 as
`tf.keras` unless TF_USE_LEGACY_KERAS=1 is set before its first import. `tfq/__init__.py`
imports this module first, so every entry point (`python -m tfq.X`, the tests) gets the same
TensorFlow/Keras pair. Everyone else takes `tf`, `keras` and `tfmot` from here.
"""

import os

from tfq.core import console

os.environ["TF_USE_LEGACY_KERAS"] = "1"
console.configure()

with console.quiet():  # TensorFlow's C++ start-up lines, written before its log level applies
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

if not keras.__version__.startswith("2."):  # pragma: no cover - guards a broken install
    raise ImportError(f"tfq needs Keras 2 (tf_keras), got Keras {keras.__version__}")

# Dropout draws from a tf.random.Generator per layer, a variable that checkpoints save and restore
# (so a resumed run replays the same masks) and that a seed set before the layer is built fixes.
keras.backend.experimental.enable_tf_random_generator()


def fresh_session(seed: int) -> None:
    """Start a stage as if the process were new: Keras' name counters (layer and tensor names end
    up in saved models and flatbuffers, so "quantize_layer_3" instead of "quantize_layer" changes a
    file's digest), every random seed, and deterministic ops."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def tfmot():
    """tensorflow_model_optimization, imported on first use (it is slow to import)."""
    import tensorflow_model_optimization

    return tensorflow_model_optimization


def versions() -> dict:
    """Library versions that decide results; recorded in every manifest."""
    import platform

    import numpy as np

    out = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "numpy": np.__version__,
    }
    from importlib import metadata

    for dist in (
        "tensorflow-datasets",
        "tensorflow-model-optimization",
        "ai-edge-litert",
        "ai-edge-quantizer",
        "tflite-micro",
        "albumentations",
        "albucore",
        "imagecorruptions-imaug",
        "opencv-python-headless",
        "scikit-image",
        "scipy",
    ):
        try:
            out[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
