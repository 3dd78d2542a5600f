"""The model builders: tf_keras Functional models from input shape and class count.

Built only from layers that quantize well and that XNNPACK runs whole: convolutions followed by
BatchNorm (folded into the convolution by the converter), ReLU or ReLU6, Add, pooling, Dense,
Softmax. `mlp` and `cnn` are tfq's own; `resnet8` is MLPerf Tiny's image-classification reference
and `mobilenet` the depthwise-separable family mobile apps ship. tf_keras' `Flatten` lowers to one
RESHAPE with a constant [-1, N] shape, whereas `Reshape` adds SHAPE/STRIDED_SLICE/PACK ops that split
the delegated graph.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tfq.core import artifacts
from tfq.core.artifacts import NotPossible, TfqError
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


def resnet8(input_shape, num_classes, *, resnet_widths=(16, 32, 64), **_):
    """MLPerf Tiny's ResNet-8 v1 (mlcommons/tiny, benchmark/training/image_classification/keras_model.py,
    `resnet_v1_eembc` with 16 filters as at commit bceb91c; later versions default to 26, about 200k):
    a conv3x3-BN-ReLU stem, three stacks of two conv3x3 (the first strided from the second stack on)
    with BN, added to the identity or to a strided 1x1 projection, then ReLU; average pooling over
    the whole map, Dense. 78,666 parameters at 16, 32, 64 filters, as the reference's (biases kept).
    Its L2 kernel regularizer is left to the trainer's AdamW weight decay."""
    conv = dict(padding="same", kernel_initializer="he_normal")
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(resnet_widths[0], 3, name="stem", **conv)(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for s, width in enumerate(resnet_widths, 1):
        stride = 1 if s == 1 else 2
        y = keras.layers.Conv2D(width, 3, strides=stride, name=f"stack{s}_conv1", **conv)(x)
        y = keras.layers.BatchNormalization(name=f"stack{s}_conv1_bn")(y)
        y = keras.layers.ReLU(name=f"stack{s}_conv1_relu")(y)
        y = keras.layers.Conv2D(width, 3, name=f"stack{s}_conv2", **conv)(y)
        y = keras.layers.BatchNormalization(name=f"stack{s}_conv2_bn")(y)
        if stride != 1 or x.shape[-1] != width:
            x = keras.layers.Conv2D(width, 1, strides=stride, name=f"stack{s}_shortcut", **conv)(x)
        x = keras.layers.Add(name=f"stack{s}_add")([x, y])
        x = keras.layers.ReLU(name=f"stack{s}_relu")(x)
    x = keras.layers.AveragePooling2D(pool_size=min(x.shape[1:3]), name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_initializer="he_normal", name="probs")(x)
    return keras.Model(inputs, outputs, name="resnet8")


# (pointwise filters at width 1, depthwise stride) per block: MobileNetV1's first eight, for 32x32 and
# 28x28 inputs (a stride-1 stem; three stride-2 blocks end at 4x4).
MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1))


def mobilenet(input_shape, num_classes, *, alpha=0.5, dropout=0.2, **_):
    """MobileNetV1-style (Howard et al. 2017): a conv3x3-BN-ReLU6 stem, then depthwise 3x3-BN-ReLU6 and
    pointwise 1x1-BN-ReLU6 blocks (MOBILENET_BLOCKS), every width times `alpha`; GAP, dropout, Dense."""

    def width(filters: int) -> int:
        return max(1, int(filters * alpha))

    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(width(32), 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    for b, (filters, stride) in enumerate(MOBILENET_BLOCKS, 1):
        x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"dw{b}")(x)
        x = keras.layers.BatchNormalization(name=f"dw{b}_bn")(x)
        x = keras.layers.ReLU(6.0, name=f"dw{b}_relu")(x)
        x = keras.layers.Conv2D(width(filters), 1, use_bias=False, name=f"pw{b}")(x)
        x = keras.layers.BatchNormalization(name=f"pw{b}_bn")(x)
        x = keras.layers.ReLU(6.0, name=f"pw{b}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="mobilenet")


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
        ModelKind("resnet8", resnet8, "MLPerf Tiny's ResNet-8: 3 residual stacks (16, 32, 64), 78,666 parameters"),
        ModelKind("mobilenet", mobilenet, "MobileNetV1-style: 8 depthwise-separable blocks, ReLU6, width x0.5"),
    )
}


def get(name: str) -> ModelKind:
    try:
        return MODELS[name]
    except KeyError:
        raise TfqError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None


def build(name: str, input_shape, num_classes: int, **kwargs) -> keras.Model:
    return get(name).build(tuple(input_shape), num_classes, **kwargs)


def source_file(run: str | os.PathLike) -> Path:
    """The file every other file of a run is made from: its Keras model, or the float .tflite the run
    started from (--float_tflite)."""
    from tfq.models import imported

    return Path(run) / (imported.FLOAT_TFLITE if imported.from_tflite(run) else artifacts.MODEL_FILE)


def remake_float(run: str | os.PathLike) -> str:
    """The command that makes a run's float32.tflite again: the converter's float32 mode, or for a run
    that started from a float .tflite, its import."""
    from tfq import data
    from tfq.models import imported

    run = Path(run)
    made = artifacts.read_json(run / artifacts.TRAIN_JSON, default={})
    dataset, model = data.split_run(run.name)
    dataset = made.get("dataset_read") or made.get("dataset") or dataset
    if imported.from_tflite(run):
        source = made["imported"]["source"]
        return f"python -m tfq.train --dataset={dataset} --float_tflite={source} --artifacts={run.parent}"
    return f"python -m tfq.convert --dataset={dataset} --model={model} --mode=float32 --artifacts={run.parent}"


def need_keras(run: str | os.PathLike) -> None:
    """Not possible (in one line) on a run that started from a float .tflite: it has no Keras model."""
    from tfq.models import imported

    if imported.from_tflite(run):
        source = artifacts.read_json(Path(run) / artifacts.TRAIN_JSON)["imported"]["source"]
        raise NotPossible(
            f"{Path(run).name} starts from a float .tflite ({Path(source).name}), and this needs a Keras model "
            "(the TFLite converter's modes, QAT and the sweep do; give --model_file for them)"
        )


def load_trained(run: str | os.PathLike) -> keras.Model:
    """The trained float model of a run folder, with a clear error when it is missing or bad."""
    need_keras(run)
    path = Path(run) / artifacts.MODEL_FILE
    if not path.is_file():
        from tfq import data

        dataset, model = data.split_run(Path(run).name)
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
    """Multiply-accumulates of one inference (conv, depthwise and dense layers; BN folds away)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            _, h, w, cout = layer.output_shape
            kh, kw = layer.kernel_size
            # a depthwise output value reads one input channel; a convolution's reads all of them
            per_tap = 1 if isinstance(layer, keras.layers.DepthwiseConv2D) else layer.input_shape[-1]
            total += h * w * cout * kh * kw * per_tap
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input_shape[-1] * layer.units
    return total


def check(cfg) -> None:
    """A stage's model setting names tfq's own model, a user's file (--model_file), or a run that holds
    one already imported; else the unknown-model error."""
    from tfq.models import imported

    if cfg.model_file:
        imported.check_path(cfg.model_file)
        return
    if cfg.model in MODELS:
        return
    if not imported.is_imported(artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model)):
        get(cfg.model)


def run_of(cfg) -> Path:
    """The run folder a stage's config names; a user's model (--model_file) is imported into it first
    (skipped when the run already holds that very file)."""
    from tfq.models import imported

    check(cfg)
    if cfg.model_file:
        imported.ensure(cfg)
    return artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model)


def input_range(run: Path, asked=None) -> tuple[float, float]:
    """The pixel range the run's model takes (`imported.input_range`)."""
    from tfq.models import imported

    return imported.input_range(run, asked)
