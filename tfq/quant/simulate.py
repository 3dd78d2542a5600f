"""Simulated quantization at any bit width: the trained Keras model with fake-quant weights and
activations, placed where a TFLite integer graph quantizes.

What a real integer flatbuffer does, and what this module copies:
- BatchNorm is folded into the convolution before weights are quantized (it matters for
  per-tensor scales), and a ReLU after a convolution or Dense is fused: its output is the tensor.
- The model is a graph (residual Add, depthwise convolutions, 1x1 projections: ResNet-8, MobileNet, a
  user's Functional model); a layer it cannot model is a one-line error that names it.
- Every tensor between ops is quantized: the input image, each fused conv/Dense/Add output, the
  global-average-pool output, the logits, and the softmax output (fixed range [0, 255/256] for
  8 bits, as TFLite's int8 softmax; never below 8 bits, since no kernel has a narrower softmax and
  a coarser output grid would only add argmax ties). Max pooling, flattening, padding and dropout keep
  their input's grid, so they add no quantization step; average pooling rounds back onto it. Biases
  stay float (TFLite keeps them in int32).
- Weights per output channel or per tensor; symmetric (narrow range, [-127, 127] at 8 bits: the
  grid of TFLite's and ai-edge-quantizer's int8/int4 kernels) or asymmetric. Activation ranges from
  the same calibration images the converter sees: min/max over all of them (the TFLite
  converter's), a percentile, the clip that minimizes the quantization MSE of the calibration
  activations, or ai-edge-quantizer's default: each image's min/max, averaged with a moving
  average (smoothing 0.95) in calibration order, which clips the rarer large values.
The rounding itself is TensorFlow's `fake_quant_with_min_max_vars(_per_channel)` (2 to 16 bits),
not code of ours; tests pin it against real int8 files (`tests/quant/test_simulate.py`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfq.core import stats
from tfq.core.artifacts import NotPossible, TfqError
from tfq.core.backend import keras, tf

PERCENTILE = 99.99  # the "percentile" range keeps this share of calibration values inside
_MSE_FRACTIONS = np.linspace(0.2, 1.0, 41)  # clip candidates, as fractions of the min/max range
_MSE_SAMPLE = 50_000  # calibration values per tensor the MSE search scores
EMA_SMOOTHING = 0.95  # ai-edge-quantizer's calibrator: per-image min/max, averaged in calibration order
RANGE_METHODS = ("minmax", "percentile", "mse", "ema")


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One simulated precision. `None` bits: that side stays float."""

    weight_bits: int | None = None
    weight_symmetric: bool = True
    per_channel: bool = True
    activation_bits: int | None = None
    activation_symmetric: bool = False
    activation_range: str = "minmax"
    dense_per_channel: bool | None = None  # None: as `per_channel` (False: tfmot n-bit QAT's Dense grid)
    # depthwise kernels: "same" as the others, "int8" (8-bit per channel) or "float": ai-edge-quantizer's
    # 4-bit files hold them so, having no int4 DEPTHWISE_CONV_2D
    depthwise: str = "same"

    def __post_init__(self):
        for bits in (self.weight_bits, self.activation_bits):
            if bits is not None and not 2 <= bits <= 16:
                raise TfqError(f"simulated bits must be 2 to 16, not {bits}")
        if self.depthwise not in ("same", "int8", "float"):
            raise TfqError(f"depthwise weights {self.depthwise!r}: choose same, int8 or float")
        if self.activation_range not in RANGE_METHODS:
            raise TfqError(f"activation range {self.activation_range!r}: choose one of {', '.join(RANGE_METHODS)}")

    @property
    def name(self) -> str:
        parts = []
        if self.weight_bits:
            parts.append(
                f"w{self.weight_bits}{'s' if self.weight_symmetric else 'a'}"
                f"{'c' if self.per_channel else 't'}"
                + (
                    ""
                    if self.dense_per_channel in (None, self.per_channel)
                    else f"{'c' if self.dense_per_channel else 't'}dense"
                )
                + ("" if self.depthwise == "same" else f"_dw{self.depthwise}")
            )
        if self.activation_bits:
            parts.append(f"a{self.activation_bits}{'s' if self.activation_symmetric else 'a'}_{self.activation_range}")
        return "_".join(parts) or "float"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def fake_quant_kernel(kernel: np.ndarray, lo, hi, bits: int, narrow_range: bool) -> np.ndarray:
    """`kernel` rounded to the `bits`-bit grid of [lo, hi]: one range per output channel (the last
    axis) when `lo`/`hi` are vectors, one for the whole tensor when they are scalars."""
    flat = tf.reshape(tf.constant(kernel, tf.float32), (-1, kernel.shape[-1]))
    if np.ndim(lo):
        out = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            flat, np.asarray(lo, np.float32), np.asarray(hi, np.float32), num_bits=bits, narrow_range=narrow_range
        )
    else:
        out = tf.quantization.fake_quant_with_min_max_vars(
            flat, float(lo), float(hi), num_bits=bits, narrow_range=narrow_range
        )
    return out.numpy().reshape(kernel.shape)


def fake_quant_weights(kernel: np.ndarray, bits: int, symmetric: bool, per_channel: bool) -> np.ndarray:
    """`kernel` rounded to the `bits`-bit grid of its own range (output channels on the last axis)."""
    flat = kernel.reshape(-1, kernel.shape[-1])
    axis = 0 if per_channel else None
    if symmetric:
        hi = np.maximum(np.abs(flat).max(axis=axis), 1e-12)
        lo = -hi
    else:
        lo = np.minimum(flat.min(axis=axis), 0.0)
        hi = np.maximum(flat.max(axis=axis), lo + 1e-12)
    return fake_quant_kernel(kernel, lo, hi, bits, narrow_range=symmetric)


def fake_quant(x, lo: float, hi: float, bits: int, symmetric: bool):
    return tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=bits, narrow_range=symmetric)


@dataclasses.dataclass
class _Step:
    layer: keras.layers.Layer
    # "tensor": its output is a quantized tensor with its own range; None: the output lies on its
    # input's grid; "same": the op re-rounds onto that grid; "softmax": TFLite's fixed output range
    point: str | None
    inputs: list[int]  # the steps it reads (-1: the model's input)


_GRID_KEEPING = (
    keras.layers.MaxPooling2D,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Dropout,
    keras.layers.ZeroPadding2D,
    keras.layers.InputLayer,
)
# TFLite's int8 average pool must keep its input's scale: the mean is rounded back onto that grid.
_SAME_GRID = (keras.layers.AveragePooling2D,)
_WEIGHTED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
_NOT_MODELLED = (keras.layers.Conv2DTranspose, keras.layers.SeparableConv2D)


def kernel_of(layer: keras.layers.Layer):
    """The weight tensor a TFLite integer kernel quantizes (a depthwise convolution's is its own)."""
    return layer.depthwise_kernel if isinstance(layer, keras.layers.DepthwiseConv2D) else layer.kernel


def channels_last(layer: keras.layers.Layer, kernel: np.ndarray) -> np.ndarray:
    """`kernel` with TFLite's quantized channels on the last axis: a depthwise kernel's
    (h, w, in, multiplier) becomes (h, w, 1, in * multiplier), TFLite's own layout."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        h, w, c, m = kernel.shape
        return kernel.reshape(h, w, 1, c * m)
    return kernel


def _linear_copy(layer: keras.layers.Layer, kernel: np.ndarray, bias: np.ndarray) -> keras.layers.Layer:
    cfg = layer.get_config()
    cfg.update(use_bias=True, activation="linear", name=cfg["name"] + "_folded")
    copy = layer.__class__.from_config(cfg)
    copy.build(layer.input_shape)
    copy.set_weights([kernel, bias])
    return copy


def _graph(model: keras.Model) -> tuple[list, dict, object]:
    """The model's layers in call order, each with the layers it reads, and its output layer."""
    layers = [lyr for lyr in model.layers if not isinstance(lyr, keras.layers.InputLayer)]
    reads = {}
    for lyr in layers:
        if isinstance(lyr, keras.Model):
            raise NotPossible(f"simulation takes a flat model; {lyr.name} is a nested model")
        if len(lyr._inbound_nodes) != 1:  # noqa: SLF001
            raise NotPossible(f"simulation takes layers called once; {lyr.name} is shared")
        reads[id(lyr)] = [src for src, *_ in lyr._inbound_nodes[0].iterate_inbound()]  # noqa: SLF001
    if len(model.outputs) != 1:
        raise NotPossible(f"simulation takes a model with one output, not {len(model.outputs)}")
    return layers, reads, model.outputs[0]._keras_history.layer  # noqa: SLF001


def fold(model: keras.Model) -> list[_Step]:
    """The model as steps in call order, BatchNorm folded into the convolution or Dense it follows
    and activations split off, each marked with whether its output is a quantized tensor in a
    TFLite integer graph (`_Step.point`)."""
    layers, reads, output = _graph(model)
    consumers: dict[int, int] = {}
    for lyr in layers:
        for src in reads[id(lyr)]:
            consumers[id(src)] = consumers.get(id(src), 0) + 1
    step_of: dict[int, int] = {}  # layer id -> index of the step that yields its output
    steps: list[_Step] = []

    def inputs(lyr) -> list[int]:
        return [-1 if isinstance(src, keras.layers.InputLayer) else step_of[id(src)] for src in reads[id(lyr)]]

    for lyr in layers:
        src = reads[id(lyr)]
        if isinstance(lyr, _NOT_MODELLED):
            raise NotPossible(f"simulation does not model {type(lyr).__name__} layers ({lyr.name})")
        if isinstance(lyr, keras.layers.BatchNormalization):
            producer = src[0] if len(src) == 1 else None
            if not (
                isinstance(producer, _WEIGHTED)
                and consumers[id(producer)] == 1
                and keras.activations.serialize(producer.activation) in ("linear", None)
            ):
                raise NotPossible(f"{lyr.name}: a BatchNormalization that follows no conv/Dense cannot be folded")
            step = steps[step_of[id(producer)]]
            gamma, beta, mean, var = (w.numpy() for w in (lyr.gamma, lyr.beta, lyr.moving_mean, lyr.moving_variance))
            factor = gamma / np.sqrt(var + lyr.epsilon)
            kernel, bias = kernel_of(step.layer).numpy(), step.layer.bias.numpy()
            kernel = kernel * (factor.reshape(kernel.shape[-2:]) if _depthwise(step) else factor)
            step.layer.set_weights([kernel.astype(np.float32), ((bias - mean) * factor + beta).astype(np.float32)])
            step_of[id(lyr)] = step_of[id(producer)]
            continue
        if isinstance(lyr, _WEIGHTED):
            kernel = kernel_of(lyr).numpy()
            channels = channels_last(lyr, kernel).shape[-1]
            bias = lyr.bias.numpy() if lyr.use_bias else np.zeros(channels, np.float32)
            steps.append(_Step(_linear_copy(lyr, kernel, bias.astype(np.float32)), "tensor", inputs(lyr)))
            step_of[id(lyr)] = len(steps) - 1
            activation = keras.activations.serialize(lyr.activation)
            if activation not in ("linear", None):
                steps.append(_Step(keras.layers.Activation(activation), "tensor", [len(steps) - 1]))
                step_of[id(lyr)] = len(steps) - 1
            continue
        if lyr.weights:
            raise NotPossible(f"simulation does not model {type(lyr).__name__} layers ({lyr.name})")
        if isinstance(lyr, _GRID_KEEPING):
            point = None
        elif isinstance(lyr, _SAME_GRID):
            point = "same"
        else:
            point = "tensor"
        steps.append(_Step(lyr, point, inputs(lyr)))
        step_of[id(lyr)] = len(steps) - 1
    if step_of[id(output)] != len(steps) - 1:
        raise NotPossible(f"simulation needs the output layer ({output.name}) to be the last one called")
    # A fused activation makes its producer's output an inner (unquantized) value: TFLite fuses
    # ReLU and ReLU6 into the conv, Dense or Add that alone feeds it.
    readers = [0] * len(steps)
    for step in steps:
        for k in step.inputs:
            if k >= 0:
                readers[k] += 1
    for step in steps:
        if _activation_name(step.layer) in ("relu", "relu6") and len(step.inputs) == 1 and step.inputs[0] >= 0:
            producer = steps[step.inputs[0]]
            if producer.point == "tensor" and readers[step.inputs[0]] == 1:
                producer.point = None
        if _activation_name(step.layer) == "softmax":
            step.point = "softmax"
    return steps


def _activation_name(layer) -> str | None:
    if isinstance(layer, keras.layers.ReLU):
        return "relu" if layer.max_value is None else "relu6"
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    if isinstance(layer, keras.layers.Activation):
        return keras.activations.serialize(layer.activation)
    return None


def _depthwise(step: _Step) -> bool:
    return isinstance(step.layer, keras.layers.DepthwiseConv2D)


class Simulator:
    """A trained model, folded, with activation statistics from `calibration` (scaled images);
    `predict(images, scheme)` runs it with `scheme`'s fake quantization."""

    def __init__(self, model: keras.Model, calibration: np.ndarray, *, seed: int = 0):
        self.steps = fold(model)
        self.kernels = {id(s): kernel_of(s.layer).numpy() for s in self.steps if isinstance(s.layer, _WEIGHTED)}
        self._weight_cache: dict = {}
        self._range_cache: dict = {}
        # stats[k]: the k-th quantized tensor (0: the input image); grid[j]: the one step j's output lies on
        self.stats: list[dict] = []
        self.grid: list[int | None] = []
        rng = np.random.default_rng(seed)
        x = tf.constant(calibration, tf.float32)
        self.stats.append(self._stats(x.numpy(), rng))
        for step, y in self._walk(x):
            if step.point == "tensor":
                self.stats.append(self._stats(y.numpy(), rng))
                self.grid.append(len(self.stats) - 1)
            elif step.point in ("same", None):
                self.grid.append(self._grid_of(step.inputs[0]))
            else:
                self.grid.append(None)
        self._widen_add_inputs()

    def _widen_add_inputs(self) -> None:
        """The TFLite converter's calibrator reads one input of each ADD after the ADD has run (seen in
        its files: the input computed last that only the ADD reads records the ADD's output range as
        well), so that input's min/max takes in the ADD's output range; tests pin it against real files."""
        readers = [0] * len(self.steps)
        for step in self.steps:
            for k in step.inputs:
                if k >= 0:
                    readers[k] += 1
        for j, step in enumerate(self.steps):
            if not isinstance(step.layer, keras.layers.Add):
                continue
            # the ADD's output tensor: its own, or that of the ReLU fused into it
            out = j if step.point is not None else next(i for i, s in enumerate(self.steps) if s.inputs == [j])
            alone = [k for k in step.inputs if k >= 0 and self.steps[k].point == "tensor" and readers[k] == 1]
            if alone and self.grid[out] is not None:
                st, add = self.stats[self.grid[max(alone)]], self.stats[self.grid[out]]
                st["min"], st["max"] = min(st["min"], add["min"]), max(st["max"], add["max"])

    def _grid_of(self, k: int) -> int | None:
        return 0 if k < 0 else self.grid[k]

    def _walk(self, x, quantize=None):
        """Runs the steps on `x`, yielding each step with its output; `quantize(j, y)` rounds step
        j's output. An output is dropped as soon as its last reader has run."""
        last_read = {}
        for j, step in enumerate(self.steps):
            for k in step.inputs:
                last_read[k] = j
        values = {-1: x}
        for j, step in enumerate(self.steps):
            args = [values[k] for k in step.inputs]
            y = step.layer(args[0] if len(args) == 1 else args, training=False)
            if quantize is not None:
                y = quantize(j, y)
            yield step, y
            values[j] = y
            for k in set(step.inputs):
                if last_read[k] == j:
                    del values[k]

    @staticmethod
    def _stats(values: np.ndarray, rng) -> dict:
        flat = values.reshape(-1)
        sample = flat if flat.size <= _MSE_SAMPLE else rng.choice(flat, _MSE_SAMPLE, replace=False)
        lo_p, hi_p = np.percentile(flat, [100 - PERCENTILE, PERCENTILE])
        per_image = values.reshape(len(values), -1)
        ema = [per_image[0].min(), per_image[0].max()]
        for lo, hi in zip(per_image.min(axis=1)[1:], per_image.max(axis=1)[1:]):
            ema = [EMA_SMOOTHING * ema[0] + (1 - EMA_SMOOTHING) * lo, EMA_SMOOTHING * ema[1] + (1 - EMA_SMOOTHING) * hi]
        return {
            "min": float(min(flat.min(), 0.0)),
            "max": float(max(flat.max(), 0.0)),
            "percentile": (float(min(lo_p, 0.0)), float(max(hi_p, 0.0))),
            "ema": (float(min(ema[0], 0.0)), float(max(ema[1], 0.0))),
            "sample": sample,
        }

    def _range(self, k: int, bits: int, symmetric: bool, method: str) -> tuple[float, float]:
        key = (k, bits, symmetric, method)
        if key not in self._range_cache:
            st = self.stats[k]
            lo, hi = st[method] if method in ("percentile", "ema") else (st["min"], st["max"])
            if symmetric:
                m = max(-lo, hi)
                lo, hi = -m, m
            if method == "mse":
                x = tf.constant(st["sample"])
                errors = [
                    float(tf.reduce_mean(tf.square(x - fake_quant(x, lo * f, hi * f, bits, symmetric))))
                    for f in _MSE_FRACTIONS
                ]
                f = float(_MSE_FRACTIONS[int(np.argmin(errors))])
                lo, hi = lo * f, hi * f
            self._range_cache[key] = (lo, max(hi, lo + 1e-6))
        return self._range_cache[key]

    def _set_weights(self, scheme: Scheme) -> None:
        for step in self.steps:
            if id(step) not in self.kernels:
                continue
            kernel = self.kernels[id(step)]
            bits, symmetric, per_channel = scheme.weight_bits, scheme.weight_symmetric, scheme.per_channel
            if _depthwise(step) and scheme.depthwise != "same":
                bits, symmetric, per_channel = (8, True, True) if scheme.depthwise == "int8" else (None, True, True)
            if bits:
                if isinstance(step.layer, keras.layers.Dense) and scheme.dense_per_channel is not None:
                    per_channel = scheme.dense_per_channel
                key = (id(step), bits, symmetric, per_channel)
                if key not in self._weight_cache:
                    grid = fake_quant_weights(channels_last(step.layer, kernel), bits, symmetric, per_channel)
                    self._weight_cache[key] = grid.reshape(kernel.shape)
                kernel = self._weight_cache[key]
            kernel_of(step.layer).assign(kernel)

    def _forward(self, x, scheme: Scheme):
        bits, sym, method = scheme.activation_bits, scheme.activation_symmetric, scheme.activation_range
        if not bits:
            *_, (_, y) = self._walk(x)
            return y

        def quantize(j, y):
            point = self.steps[j].point
            if point in ("tensor", "same"):
                return fake_quant(y, *self._range(self.grid[j], bits, sym, method), bits, sym)
            if point == "softmax":
                out_bits = max(bits, 8)
                top = (2**out_bits - 1) / 2**out_bits  # TFLite: scale 1/256 at 8 bits, zero point at 0
                return fake_quant(y, -1.0 if sym else 0.0, 1.0 if sym else top, out_bits, sym)
            return y

        x = fake_quant(x, *self._range(0, bits, sym, method), bits, sym)
        *_, (_, y) = self._walk(x, quantize)
        return y

    def predict(self, images: np.ndarray, scheme: Scheme, batch_size: int = 1000) -> np.ndarray:
        """Class scores for scaled float images under `scheme`."""
        self._set_weights(scheme)
        out = [
            self._forward(tf.constant(images[i : i + batch_size]), scheme).numpy()
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out)


# The verdicts of a check of the simulation against a real file (`tfq.sweep.compare_with_file`).
PASSED, NOT_SHOWN_BETTER, NOT_INFORMATIVE, FAILED = (
    "passed",
    "not shown better than float32",
    "not informative",
    "failed",
)


def check_verdict(check: dict) -> str:
    """A check's outcome from what it recorded, one rule for the sweep stage and the report: outside the
    tolerance it failed, informative or not; inside it, with fewer than the informative number of
    images where float32 and the file part, it cannot be told from float32; otherwise it passed where
    the simulation follows the file on more of those images than float32 does and McNemar's exact
    two-sided p < 0.05 (a one-sided test at 0.025), is not shown better where it is ahead by less,
    and failed where float32 follows the file at least as well."""
    if not check["within_tolerance"]:
        return FAILED
    if not check["informative"]:
        return NOT_INFORMATIVE
    ahead = check["sim_only_agrees"] > check["float_only_agrees"]
    if ahead and stats.mcnemar_p(check["float_only_agrees"], check["sim_only_agrees"]) < stats.ALPHA:
        return PASSED
    return NOT_SHOWN_BETTER if ahead else FAILED
