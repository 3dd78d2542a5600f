"""MLP and CNN builders: tf_keras Functional models from input shape and class count.

Built only from layers that quantize well and that XNNPACK runs whole: convolutions without bias
followed by BatchNorm (folded into the convolution by the converter), ReLU, max pooling, global
average pooling, Dense, Softmax. tf_keras' `Flatten` lowers to one RESHAPE with a constant
[-1, N] shape, whereas `Reshape` adds SHAPE/STRIDED_SLICE/PACK ops that split the delegated graph.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tfq.core import artifacts
from tfq.core.artifacts import TfqError
from tfq.core.backend import keras


def mlp(input_shape, num_classes, *, hidden=(512, 256), dropout=0.2, **_):
    """Flatten -> Dense/ReLU blocks -> softmax."""
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten()(inputs)
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(units, activation="relu", name=f"dense{i}")(x)
        x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="mlp")


def cnn(input_shape, num_classes, *, widths=(32, 64, 128), convs_per_stage=2, dropout=0.2, **_):
    """VGG-style stages of (conv-BN-ReLU) x n with 2x2 max pooling between them, then GAP."""
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for s, width in enumerate(widths):
        if s:
            x = keras.layers.MaxPooling2D(2, name=f"pool{s}")(x)
        for c in range(convs_per_stage):
            name = f"conv{s + 1}_{c + 1}"
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=name)(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
            x = keras.layers.ReLU(name=f"{name}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="cnn")


@dataclasses.dataclass(frozen=True)
class ModelKind:
    name: str
    build: Callable[..., keras.Model]
    description: str


MODELS: dict[str, ModelKind] = {
    m.name: m
    for m in (
        ModelKind("mlp", mlp, "2 hidden Dense+ReLU layers (512, 256), dropout"),
        ModelKind("cnn", cnn, "3 stages x 2 conv3x3-BN-ReLU (32, 64, 128), max pool, GAP"),
    )
}


def get(name: str) -> ModelKind:
    try:
        return MODELS[name]
    except KeyError:
        raise TfqError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None


def build(name: str, input_shape, num_classes: int, **kwargs) -> keras.Model:
    return get(name).build(tuple(input_shape), num_classes, **kwargs)


def load_trained(run: str | os.PathLike) -> keras.Model:
    """The trained float model of a run folder, with a clear error when it is missing or bad."""
    path = Path(run) / artifacts.MODEL_FILE
    if not path.is_file():
        dataset, _, model = Path(run).name.rpartition("_")
        raise TfqError(
            f"no trained model at {path}; make it with: python -m tfq.train --dataset={dataset} --model={model}"
            f" --artifacts={Path(run).parent}"
        )
    try:
        return keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 - keras raises many types for a foreign or corrupt file
        raise TfqError(
            f"{path} is not a tf_keras model file ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None


def predict_classes(model: keras.Model, scaled_images) -> np.ndarray:
    """The Keras model's class for each (already scaled) image."""
    return model.predict(scaled_images, batch_size=512, verbose=0).argmax(1)


def macs(model: keras.Model) -> int:
    """Multiply-accumulates of one inference (conv and dense layers; BN folds away)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, cout = layer.output_shape
            kh, kw = layer.kernel_size
            total += h * w * cout * kh * kw * layer.input_shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input_shape[-1] * layer.units
    return total
