"""tfq: train small Keras models, quantize them every way TFLite can, and measure the cost."""

from tfq import backend as _backend  # noqa: F401  (must run before anything imports TensorFlow)
